"""Factorization Machines (Rendle, ICDM 2010).

    y = w0 + sum_i w_i x_i + sum_{i<j} <v_i, v_j> x_i x_j
      = linear + 1/2 * sum_d [ (sum_i v_id x_i)^2 - sum_i v_id^2 x_i^2 ]

Each field contributes one embedded vector ``e_f = v x`` (a one-hot code: its row; a bag: the
mean of its rows; a number: ``x * v``), so the pairwise term is computed in O(F * dim).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from recstack.features.pipeline import Layout
from recstack.models.ctr.base import CTRConfig, CTRModule
from recstack.models.ctr.estimator import CTRModel
from recstack.models.ctr.layers import Batch, FieldEmbedder, LinearTerms


def fm_interaction(e: Tensor) -> Tensor:
    """Sum of pairwise dot products of the field vectors ``[B, F, D]`` -> ``[B]``."""
    square_of_sum = e.sum(1).square()
    sum_of_square = e.square().sum(1)
    return 0.5 * (square_of_sum - sum_of_square).sum(1)


@dataclass
class FMConfig(CTRConfig):
    pass


class FMNet(CTRModule):

    def __init__(self, layout: Layout, cfg: FMConfig) -> None:
        super().__init__(layout, cfg)
        self.linear = LinearTerms(layout, cfg.sparse, use_cross=False)
        self.embed = FieldEmbedder(layout, cfg.dim, cfg.sparse, cfg.init_std)

    def forward(self, batch: Batch) -> Tensor:
        return self.linear(batch) + fm_interaction(self.embed(batch))


class FM(CTRModel):
    """The fm estimator: FMConfig hyper-parameters, FMNet network, CTRModel verbs."""

    name = "fm"
    config_cls = FMConfig
    net_cls = FMNet
    _defaults: ClassVar[dict[str, Any]] = {"lr": 3e-3}
