"""Logistic regression: ``p(click) = sigmoid(w0 + sum_f w_f[x_f] + <w, x_num>)`` over every
feature, crosses included (the classic wide model and the baseline of every CTR paper)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from recstack.features.pipeline import Layout
from recstack.models.ctr.base import CTRConfig, CTRModule
from recstack.models.ctr.estimator import CTRModel
from recstack.models.ctr.layers import Batch, LinearTerms


@dataclass
class LRConfig(CTRConfig):
    use_cross: bool = True


class LRNet(CTRModule):

    def __init__(self, layout: Layout, cfg: LRConfig) -> None:
        super().__init__(layout, cfg)
        self.linear = LinearTerms(layout, cfg.sparse, cfg.use_cross)

    def forward(self, batch: Batch) -> Tensor:
        return self.linear(batch)


class LR(CTRModel):
    """The lr estimator: LRConfig hyper-parameters, LRNet network, CTRModel verbs."""

    name = "lr"
    config_cls = LRConfig
    net_cls = LRNet
    _defaults: ClassVar[dict[str, Any]] = {"lr": 3e-3, "epochs": 30}
