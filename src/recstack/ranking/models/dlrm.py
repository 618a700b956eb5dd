"""DLRM (Naumov et al., 2019, Figure 1).

    dense features  -> bottom MLP -> x  (one dim-vector)
    sparse features -> embedding lookups -> e_1..e_F            (one fused table)
    interaction: pairwise dot products of [x, e_1, ..., e_F] (strictly lower triangle)
    top MLP([x, dots]) -> sigmoid

The interaction is one batched matrix product; the triangle is gathered with precomputed
indices (no Python loop over pairs).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from recstack.features.pipeline import Layout
from recstack.ranking.base import CTRModule, RankerConfig
from recstack.ranking.layers import MLP, Batch, FieldEmbedder


def dot_interaction(t: Tensor, li: Tensor, lj: Tensor) -> Tensor:
    """``[B, n, D]`` vectors -> their pairwise dot products ``[B, n(n-1)/2]``."""
    z = torch.bmm(t, t.transpose(1, 2))
    return z[:, li, lj]


@dataclass
class DLRMConfig(RankerConfig):
    bottom: tuple[int, ...] = (64, 32)  # hidden sizes; the last layer outputs `dim`
    top: tuple[int, ...] = (256, 128)


class DLRM(CTRModule):
    name = "dlrm"
    config_cls = DLRMConfig

    def __init__(self, layout: Layout, cfg: DLRMConfig) -> None:
        super().__init__(layout, cfg)
        self.embed = FieldEmbedder(layout, cfg.dim, cfg.sparse, cfg.init_std, numeric_fields=False)
        n_num = len(layout.num_names)
        # bottom MLP: ReLU on every layer, its output is one more "field" vector
        self.bottom = MLP(n_num, [*cfg.bottom, cfg.dim], None, 0.0) if n_num else None
        n = self.embed.n_fields + (1 if self.bottom is not None else 0)
        li, lj = torch.tril_indices(n, n, offset=-1)
        self.register_buffer("li", li, persistent=False)
        self.register_buffer("lj", lj, persistent=False)
        top_in = len(li) + (cfg.dim if self.bottom is not None else 0)
        self.top = MLP(top_in, cfg.top, 1, cfg.dropout)

    def forward(self, batch: Batch) -> Tensor:
        return self.dense(batch["num"], self.embed(batch))

    def dense(self, num: Tensor, e: Tensor) -> Tensor:
        """Everything after the lookups (bottom MLP, interaction, top MLP): ``[B, N]`` dense
        features and ``[B, F, D]`` field vectors -> logits ``[B]``. One graph, so it can be
        compiled on its own while the sparse lookup stays eager."""
        if self.bottom is None:
            return self.top(dot_interaction(e, self.li, self.lj)).squeeze(1)
        x = self.bottom(num)
        t = torch.cat([x.unsqueeze(1), e.to(x.dtype)], 1)
        z = dot_interaction(t, self.li, self.lj)
        return self.top(torch.cat([x, z.to(x.dtype)], 1)).squeeze(1)
