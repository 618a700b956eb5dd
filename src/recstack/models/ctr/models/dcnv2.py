"""DCN-V2 (Wang et al., WWW 2021, Figure 1 and Eq. 1).

    x_{l+1} = x0 * (W_l x_l + b_l) + x_l        (W_l full d x d, or low rank U_l V_l^T)
    stacked:  x0 -> cross network -> deep network -> logit
    parallel: x0 -> [cross network, deep network] -> concat -> logit
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


class CrossNetV2(nn.Module):
    """``x_{l+1} = x0 * (W_l x_l + b_l) + x_l``; ``rank > 0`` factorises W_l = U_l V_l^T (the
    paper's low-rank DCN-Mix without the mixture: cost O(d r) per layer)."""

    def __init__(self, dim: int, layers: int, rank: int = 0) -> None:
        super().__init__()
        if rank:
            self.maps = nn.ModuleList(nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim))
                                      for _ in range(layers))
        else:
            self.maps = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        for w in self.maps:
            x = x0 * w(x) + x
        return x


@dataclass
class DCNv2Config(CTRConfig):
    dropout: float = 0.2  # chosen on MovieLens 100K validation AUC (bench_ctr_ml100k.py)
    cross_layers: int = 3
    rank: int = 0  # 0 = full-rank cross matrices
    hidden: tuple[int, ...] = (256, 128, 64)
    structure: str = "stacked"  # stacked | parallel


class DCNv2Net(CTRModule):

    def __init__(self, layout: Layout, cfg: DCNv2Config) -> None:
        super().__init__(layout, cfg)
        if cfg.structure not in ("stacked", "parallel"):
            raise ValueError(f"dcnv2: structure must be stacked or parallel, got {cfg.structure!r}")
        self.embed = FieldEmbedder(layout, cfg.dim, cfg.sparse, cfg.init_std, numeric_fields=False)
        d = self.embed.n_fields * cfg.dim + len(layout.num_names) + layout.emb_dim
        self.cross = CrossNetV2(d, cfg.cross_layers, cfg.rank)
        self.deep = MLP(d, cfg.hidden, None, cfg.dropout)
        out = self.deep.out_dim if cfg.structure == "stacked" else d + self.deep.out_dim
        self.logit = nn.Linear(out, 1)

    def forward(self, batch: Batch) -> Tensor:
        e = self.embed(batch).flatten(1)
        x0 = torch.cat([e, numeric_input(batch).to(e.dtype)], 1)
        if self.cfg.structure == "stacked":
            h = self.deep(self.cross(x0))
        else:
            h = torch.cat([self.cross(x0), self.deep(x0)], 1)
        return self.logit(h).squeeze(1)


class DCNv2(CTRModel):
    """The dcnv2 estimator: DCNv2Config hyper-parameters, DCNv2Net network, CTRModel verbs."""

    name = "dcnv2"
    config_cls = DCNv2Config
    net_cls = DCNv2Net
    _defaults: ClassVar[dict[str, Any]] = {"lr": 3e-4}
