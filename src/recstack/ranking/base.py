"""What every ranking model is: a module over the feature pipeline's tensors returning logits,
its hyper-parameters as a dataclass, its objective, and the optimisers its parts want.

A model file defines ``XConfig(RankerConfig)`` and ``X(CTRModule)`` with ``name`` and
``config_cls``; defining the class registers it (``ranker_names()``, ``ranker_class(name)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.features.pipeline import Layout
from recstack.ranking.layers import Batch, FusedEmbedding
from recstack.ranking.optim import MultiOptimizer, RowWiseAdagrad, dense_optimizer
from recstack.training.trainer import TrainConfig

_REGISTRY: dict[str, type[CTRModule]] = {}


@dataclass
class RankerConfig:
    """Hyper-parameters every ranking model has."""

    label: str = "label"  # the label column (0/1)
    dim: int = 16  # embedding size of every field
    sparse: bool = False  # sparse table gradients + row-wise Adagrad (large tables)
    embedding_lr: float = 0.05  # learning rate of that row-wise Adagrad
    init_std: float = 0.01
    dropout: float = 0.0
    # training only: replace these categorical fields' codes by the OOV code with this
    # probability, so the OOV rows learn what new users (or items) look like
    id_dropout: float = 0.0
    id_dropout_fields: tuple[str, ...] = ("user_id",)


class CTRModule(nn.Module):
    """Base class: ``forward(batch) -> logits [B]`` (or ``[B, tasks]`` for multi-task models)."""

    name: ClassVar[str] = "base"
    config_cls: ClassVar[type[RankerConfig]] = RankerConfig
    n_tasks: int = 1

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.name != "base":
            _REGISTRY[cls.name] = cls

    def __init__(self, layout: Layout, cfg: RankerConfig) -> None:
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


def ranker_class(name: str) -> type[CTRModule]:
    """The model class registered under `name` (case-insensitive; '-' and '_' ignored)."""
    import recstack.ranking.models  # noqa: F401  (registers every model)

    key = name.lower().replace("-", "").replace("_", "")
    for k, cls in _REGISTRY.items():
        if k.replace("_", "") == key:
            return cls
    raise ValueError(f"unknown ranking model '{name}'; available: {', '.join(ranker_names())}")


def ranker_names() -> list[str]:
    """Names of every ranking model."""
    import recstack.ranking.models  # noqa: F401

    return sorted(_REGISTRY)


def is_ranker(name: str) -> bool:
    """True when `name` is a ranking (CTR) model."""
    try:
        ranker_class(name)
    except ValueError:
        return False
    return True
