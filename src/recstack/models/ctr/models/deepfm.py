"""DeepFM (Guo et al., IJCAI 2017, Figure 1).

    embeddings e_1..e_F (shared)
      -> FM component:   y_FM  = linear + sum_{i<j} <e_i, e_j>
      -> Deep component: y_DNN = MLP([e_1, ..., e_F])
    y = sigmoid(y_FM + y_DNN)

Both components read the same embedding layer and are trained jointly; no feature engineering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from recstack.features.pipeline import Layout
from recstack.models.ctr.base import CTRConfig, CTRModule
from recstack.models.ctr.estimator import CTRModel
from recstack.models.ctr.layers import Batch, FieldEmbedder, LinearTerms
from recstack.models.ctr.models.fm import fm_interaction
from recstack.models.layers import MLP


@dataclass
class DeepFMConfig(CTRConfig):
    dropout: float = 0.2  # chosen on MovieLens 100K validation AUC (bench_ctr_ml100k.py)
    hidden: tuple[int, ...] = (256, 128, 64)


class DeepFMNet(CTRModule):

    def __init__(self, layout: Layout, cfg: DeepFMConfig) -> None:
        super().__init__(layout, cfg)
        self.linear = LinearTerms(layout, cfg.sparse, use_cross=False)
        self.embed = FieldEmbedder(layout, cfg.dim, cfg.sparse, cfg.init_std)
        self.deep = MLP(self.embed.n_fields * cfg.dim, cfg.hidden, 1, cfg.dropout)

    def forward(self, batch: Batch) -> Tensor:
        e = self.embed(batch)
        y_fm = self.linear(batch) + fm_interaction(e)
        y_dnn = self.deep(e.flatten(1)).squeeze(1)
        return y_fm + y_dnn


class DeepFM(CTRModel):
    """The deepfm estimator: DeepFMConfig hyper-parameters, DeepFMNet network, CTRModel verbs."""

    name = "deepfm"
    config_cls = DeepFMConfig
    net_cls = DeepFMNet
    _defaults: ClassVar[dict[str, Any]] = {"lr": 3e-4}
