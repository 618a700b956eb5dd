"""Wide & Deep (Cheng et al., DLRS 2016, Figure 1 centre).

    wide:  w^T [x, phi(x)]         raw sparse features + cross-product transformations
    deep:  a^(l+1) = ReLU(W a^(l) + b),  a^(0) = [embeddings of the sparse features, dense features]
    P(y=1|x) = sigmoid(wide + deep_logit + b)

Trained jointly (one loss, gradients into both parts at once), each part with its own optimiser
as in the paper: FTRL-Proximal with L1 for the wide part (the paper's choice; "adagrad" is the
alternative here) and, for the deep part, the TrainConfig's optimiser (Adam by default; the
paper used AdaGrad).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from recstack.features.pipeline import Layout
from recstack.models.ctr.base import CTRConfig, CTRModule
from recstack.models.ctr.estimator import CTRModel
from recstack.models.ctr.layers import Batch, FieldEmbedder, LinearTerms, numeric_input
from recstack.models.ctr.optim import FTRL, MultiOptimizer, RowWiseAdagrad, dense_optimizer
from recstack.models.layers import MLP
from recstack.training.trainer import TrainConfig


@dataclass
class WideDeepConfig(CTRConfig):
    dropout: float = 0.2  # chosen on MovieLens 100K validation AUC (bench_ctr_ml100k.py)
    hidden: tuple[int, ...] = (256, 128, 64)
    wide_optimizer: str = "ftrl"  # ftrl | adagrad
    wide_lr: float = 0.05
    wide_l1: float = 0.0
    wide_l2: float = 0.0


class WideDeepNet(CTRModule):

    def __init__(self, layout: Layout, cfg: WideDeepConfig) -> None:
        super().__init__(layout, cfg)
        self.wide = LinearTerms(layout, cfg.sparse, use_cross=True)
        self.embed = FieldEmbedder(layout, cfg.dim, cfg.sparse, cfg.init_std, numeric_fields=False)
        in_dim = self.embed.n_fields * cfg.dim + len(layout.num_names) + layout.emb_dim
        self.deep = MLP(in_dim, cfg.hidden, 1, cfg.dropout)

    def forward(self, batch: Batch) -> Tensor:
        e = self.embed(batch).flatten(1)
        deep = self.deep(torch.cat([e, numeric_input(batch).to(e.dtype)], 1)).squeeze(1)
        return self.wide(batch) + deep

    def make_optimizer(self, train: TrainConfig) -> torch.optim.Optimizer:
        cfg = self.cfg
        wide_table = self.wide.table.weight
        wide_rest = [p for p in self.wide.parameters() if p is not wide_table]
        if cfg.wide_optimizer == "ftrl":
            wide = [FTRL(self.wide.parameters(), lr=cfg.wide_lr, l1=cfg.wide_l1, l2=cfg.wide_l2)]
        elif cfg.wide_optimizer == "adagrad":
            table_opt = RowWiseAdagrad if cfg.sparse else torch.optim.Adagrad
            wide = [table_opt([wide_table], lr=cfg.wide_lr), torch.optim.Adagrad(wide_rest, lr=cfg.wide_lr)]
        else:
            raise ValueError(f"wide_deep: wide_optimizer must be ftrl or adagrad, got {cfg.wide_optimizer!r}")
        deep_table = self.embed.table.weight
        deep_rest = [p for n, p in self.named_parameters()
                     if not n.startswith("wide.") and p is not deep_table]
        if cfg.sparse:
            deep = [RowWiseAdagrad([deep_table], lr=cfg.embedding_lr), dense_optimizer(deep_rest, train)]
        else:
            deep = [dense_optimizer([deep_table, *deep_rest], train)]
        return MultiOptimizer(wide + deep)


class WideDeep(CTRModel):
    """The wide_deep estimator: WideDeepConfig hyper-parameters, WideDeepNet network, CTRModel verbs."""

    name = "wide_deep"
    config_cls = WideDeepConfig
    net_cls = WideDeepNet
    _defaults: ClassVar[dict[str, Any]] = {"lr": 3e-4}
