"""YouTube DNN ranking (Covington, Adams & Sargin, RecSys 2016, Section 4, Figure 7).

    embedded categorical features (a bag: averaged)     ─┐
    normalised continuous x~ in [0, 1), x~^2, sqrt(x~)   ─┴> ReLU tower (1024-512-256 in the paper)
    -> weighted logistic regression: positives weighted by their watch time, negatives by 1

With this weighting the learned odds ``exp(logit)`` approximate the expected watch time of an
impression, the quantity YouTube ranks by (`expected_weight`). `weight_column` names the frame
column holding the positive weight (watch time; on MovieLens, e.g., the rating). Continuous
features arrive standardised from the pipeline and are mapped to [0, 1) by the normal CDF, the
parametric stand-in for the paper's empirical-CDF scaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from recstack.features.pipeline import Layout
from recstack.models.ctr.base import CTRConfig, CTRModule
from recstack.models.ctr.estimator import CTRModel
from recstack.models.ctr.layers import Batch, FieldEmbedder
from recstack.models.layers import MLP


@dataclass
class YouTubeRankConfig(CTRConfig):
    dropout: float = 0.2  # chosen on MovieLens 100K validation AUC (bench_ctr_ml100k.py)
    hidden: tuple[int, ...] = (256, 128, 64)
    weight_column: str = "weight"


class YouTubeRankNet(CTRModule):

    def __init__(self, layout: Layout, cfg: YouTubeRankConfig) -> None:
        super().__init__(layout, cfg)
        self.embed = FieldEmbedder(layout, cfg.dim, cfg.sparse, cfg.init_std, numeric_fields=False)
        d = self.embed.n_fields * cfg.dim + 3 * len(layout.num_names) + layout.emb_dim
        self.tower = MLP(d, cfg.hidden, 1, cfg.dropout)

    def forward(self, batch: Batch) -> Tensor:
        e = self.embed(batch).flatten(1)
        x = 0.5 * (1 + torch.erf(batch["num"] / 2 ** 0.5))  # standardised -> [0, 1)
        cont = torch.cat([x, x.square(), x.sqrt(), batch["emb"]], 1)
        return self.tower(torch.cat([e, cont.to(e.dtype)], 1)).squeeze(1)

    def loss(self, logits: Tensor, batch: Batch) -> Tensor:
        y = batch["label"].float()
        w = torch.where(y > 0, batch["weight"].float(), torch.ones_like(y))
        return (w * F.binary_cross_entropy_with_logits(logits.float(), y, reduction="none")).mean()

    @staticmethod
    def expected_weight(logits: Tensor) -> Tensor:
        """The odds ``exp(logit)``: the expected watch time (weight) of the impression."""
        return logits.float().exp()


class YouTubeRank(CTRModel):
    """The youtube_rank estimator: YouTubeRankConfig hyper-parameters, YouTubeRankNet network, CTRModel verbs."""

    name = "youtube_rank"
    config_cls = YouTubeRankConfig
    net_cls = YouTubeRankNet
    _defaults: ClassVar[dict[str, Any]] = {"lr": 3e-4}
