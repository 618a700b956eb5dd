"""Logistic regression: ``p(click) = sigmoid(w0 + sum_f w_f[x_f] + <w, x_num>)`` over every
feature, crosses included (the classic wide model and the baseline of every CTR paper)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from recstack.features.pipeline import Layout
from recstack.ranking.base import CTRModule, RankerConfig
from recstack.ranking.layers import Batch, LinearTerms


@dataclass
class LRConfig(RankerConfig):
    use_cross: bool = True


class LR(CTRModule):
    name = "lr"
    config_cls = LRConfig

    def __init__(self, layout: Layout, cfg: LRConfig) -> None:
        super().__init__(layout, cfg)
        self.linear = LinearTerms(layout, cfg.sparse, cfg.use_cross)

    def forward(self, batch: Batch) -> Tensor:
        return self.linear(batch)
