"""xDeepFM (Lian et al., KDD 2018, Figures 4 and 5).

    X^0 = field embeddings [m, D]
    CIN:  X^k_h = sum_i sum_j W^{k,h}_{ij} (X^{k-1}_i * X^0_j)      (vector-wise, explicit degree k+1)
          p^k = sum over D of X^k  ->  p+ = [p^1, ..., p^T]
    y = sigmoid(linear(x) + w_dnn^T DNN(X^0) + w_cin^T p+ + b)

Each CIN layer is an outer product along the field axes followed by a 1x1 convolution (the
paper's "CNN view"), so all feature maps of a layer come from one kernel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from recstack.features.pipeline import Layout
from recstack.models.ctr.base import CTRConfig, CTRModule
from recstack.models.ctr.estimator import CTRModel
from recstack.models.ctr.layers import Batch, FieldEmbedder, LinearTerms
from recstack.models.layers import MLP


class CIN(nn.Module):
    """Compressed Interaction Network: layer sizes H_1..H_T over m input fields."""

    def __init__(self, m: int, layers: Sequence[int]) -> None:
        super().__init__()
        sizes = [m, *layers]
        self.convs = nn.ModuleList(nn.Conv1d(sizes[k] * m, sizes[k + 1], kernel_size=1)
                                   for k in range(len(layers)))
        self.out_dim = sum(layers)

    def forward(self, x0: Tensor) -> Tensor:
        """``[B, m, D]`` -> sum-pooled feature maps of every layer ``[B, sum(H)]``."""
        b, m, d = x0.shape
        x, pooled = x0, []
        for conv in self.convs:
            z = torch.einsum("bhd,bmd->bhmd", x, x0).reshape(b, -1, d)  # all field pairs, per dim
            x = conv(z)  # [B, H_k, D]
            pooled.append(x.sum(2))
        return torch.cat(pooled, 1)


@dataclass
class XDeepFMConfig(CTRConfig):
    dropout: float = 0.2  # chosen on MovieLens 100K validation AUC (bench_ctr_ml100k.py)
    cin_layers: tuple[int, ...] = (32, 32)
    hidden: tuple[int, ...] = (256, 128, 64)


class XDeepFMNet(CTRModule):

    def __init__(self, layout: Layout, cfg: XDeepFMConfig) -> None:
        super().__init__(layout, cfg)
        self.linear = LinearTerms(layout, cfg.sparse, use_cross=False)
        self.embed = FieldEmbedder(layout, cfg.dim, cfg.sparse, cfg.init_std)
        self.cin = CIN(self.embed.n_fields, cfg.cin_layers)
        self.cin_out = nn.Linear(self.cin.out_dim, 1)
        self.deep = MLP(self.embed.n_fields * cfg.dim, cfg.hidden, 1, cfg.dropout)

    def forward(self, batch: Batch) -> Tensor:
        e = self.embed(batch)
        return (self.linear(batch) + self.cin_out(self.cin(e)).squeeze(1)
                + self.deep(e.flatten(1)).squeeze(1))


class XDeepFM(CTRModel):
    """The xdeepfm estimator: XDeepFMConfig hyper-parameters, XDeepFMNet network, CTRModel verbs."""

    name = "xdeepfm"
    config_cls = XDeepFMConfig
    net_cls = XDeepFMNet
    _defaults: ClassVar[dict[str, Any]] = {"lr": 3e-4}
