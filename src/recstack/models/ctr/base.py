"""What every ranking (CTR) network is: a module over the feature pipeline's tensors returning
logits, its objective, and the optimisers its parts want; and the typed config every CTR
model's hyper-parameters start from.

A model file defines ``XConfig(CTRConfig)`` (its hyper-parameters: the one source of their
defaults), ``XNet(CTRModule)`` (the boxes and arrows of the paper's figure) and the estimator
``X(CTRModel)`` that ties them to the shared fit / predict / save machinery
(`recstack.models.ctr.estimator`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.features.pipeline import Layout
from recstack.models.ctr.layers import Batch, FusedEmbedding
from recstack.models.ctr.optim import MultiOptimizer, RowWiseAdagrad, dense_optimizer
from recstack.training.trainer import TrainConfig


@dataclass
class CTRConfig:
    """Hyper-parameters every ranking model has."""

    label: str = "label"  # the label column (0/1)
    dim: int = 16  # embedding size of every field
    sparse: bool = False  # sparse table gradients + row-wise Adagrad (large tables)
    embedding_lr: float = 0.05  # learning rate of that row-wise Adagrad
    init_std: float = 0.01
    dropout: float = 0.0
    # training only: replace these categorical fields' codes by the OOV code with this
    # probability, so the OOV rows learn what new users (or items) look like (fields the schema
    # does not have are ignored). Chosen on MovieLens 100K's validation AUC (86% of its test
    # rows are users unseen in training), for every model: docs/ranking.md
    id_dropout: float = 0.5
    id_dropout_fields: tuple[str, ...] = ("user_id", "zip_code")


class CTRModule(nn.Module):
    """Base class of the networks: ``forward(batch) -> logits [B]`` (or ``[B, tasks]`` for
    multi-task models)."""

    n_tasks: int = 1

    def __init__(self, layout: Layout, cfg: CTRConfig) -> None:
        super().__init__()
        self.layout, self.cfg = layout, cfg

    def loss(self, logits: Tensor, batch: Batch) -> Tensor:
        """The objective: mean binary cross-entropy on the click label."""
        return F.binary_cross_entropy_with_logits(logits.float(), batch["label"].float())

    def make_optimizer(self, train: TrainConfig) -> torch.optim.Optimizer:
        """Sparse fused tables -> row-wise Adagrad; everything else -> the TrainConfig's optimiser.
        Models with a part of their own (the wide part of Wide & Deep) extend this."""
        sparse = [m.weight for m in self.modules() if isinstance(m, FusedEmbedding) and m.sparse]
        ids = {id(p) for p in sparse}
        dense = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        opts = []
        if sparse:
            opts.append(RowWiseAdagrad(sparse, lr=self.cfg.embedding_lr))
        if dense:
            opts.append(dense_optimizer(dense, train))
        return MultiOptimizer(opts)
