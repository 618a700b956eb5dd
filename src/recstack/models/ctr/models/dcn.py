"""Deep & Cross Network, DCN v1 (Wang et al., ADKDD 2017, Figure 1).

    x0 = [embeddings, dense features]
    cross layer:  x_{l+1} = x0 (x_l^T w_l) + b_l + x_l        (w_l, b_l: vectors)
    deep layer:   h_{l+1} = ReLU(W h_l + b)
    p = sigmoid(w_logit^T [x_L1, h_L2] + b)                    (combination layer)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from recstack.features.pipeline import Layout
from recstack.models.ctr.base import CTRConfig, CTRModule
from recstack.models.ctr.estimator import CTRModel
from recstack.models.ctr.layers import Batch, FieldEmbedder, numeric_input
from recstack.models.layers import MLP


class CrossNetV1(nn.Module):
    """``x_{l+1} = x0 * (x_l . w_l) + b_l + x_l``: degree l+1 feature crosses, O(d) per layer."""

    def __init__(self, dim: int, layers: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(layers, dim) * dim ** -0.5)
        self.b = nn.Parameter(torch.zeros(layers, dim))

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for w, b in zip(self.w, self.b, strict=True):
            x = x0 * (x @ w.to(x.dtype)).unsqueeze(1) + b + x
        return x


@dataclass
class DCNConfig(CTRConfig):
    dropout: float = 0.2  # chosen on MovieLens 100K validation AUC (bench_ctr_ml100k.py)
    cross_layers: int = 3
    hidden: tuple[int, ...] = (256, 128, 64)


class DCNNet(CTRModule):

    def __init__(self, layout: Layout, cfg: DCNConfig) -> None:
        super().__init__(layout, cfg)
        self.embed = FieldEmbedder(layout, cfg.dim, cfg.sparse, cfg.init_std, numeric_fields=False)
        d = self.embed.n_fields * cfg.dim + len(layout.num_names) + layout.emb_dim
        self.cross = CrossNetV1(d, cfg.cross_layers)
        self.deep = MLP(d, cfg.hidden, None, cfg.dropout)
        self.combine = nn.Linear(d + self.deep.out_dim, 1)

    def forward(self, batch: Batch) -> Tensor:
        e = self.embed(batch).flatten(1)
        x0 = torch.cat([e, numeric_input(batch).to(e.dtype)], 1)
        return self.combine(torch.cat([self.cross(x0), self.deep(x0)], 1)).squeeze(1)


class DCN(CTRModel):
    """The dcn estimator: DCNConfig hyper-parameters, DCNNet network, CTRModel verbs."""

    name = "dcn"
    config_cls = DCNConfig
    net_cls = DCNNet
    _defaults: ClassVar[dict[str, Any]] = {"lr": 3e-4}
