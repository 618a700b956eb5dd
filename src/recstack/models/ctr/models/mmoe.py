"""MMoE, Multi-gate Mixture-of-Experts (Ma et al., KDD 2018, Figure 1c).

    x = [field embeddings, dense features]
    experts  f_i(x), i = 1..E                          (ReLU MLPs)
    gates    g^k(x) = softmax(W_gk x)                  (one per task)
    towers   y_k = h^k( sum_i g^k(x)_i f_i(x) )        (one logit per task)

The loss is the weighted sum of the tasks' cross-entropies; `tasks` names the label columns
(e.g. "label" = rating >= 4 and "like" = rating 5); the first task is the one `predict_proba`
and the evaluation report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.features.pipeline import Layout
from recstack.models.ctr.base import CTRConfig, CTRModule
from recstack.models.ctr.estimator import CTRModel
from recstack.models.ctr.layers import Batch, FieldEmbedder, numeric_input
from recstack.models.layers import MLP


@dataclass
class MMoEConfig(CTRConfig):
    dropout: float = 0.2  # chosen on MovieLens 100K validation AUC (bench_ctr_ml100k.py)
    tasks: tuple[str, ...] = ("label", "like")
    task_weights: tuple[float, ...] = ()  # empty = all 1
    experts: int = 4
    expert_hidden: tuple[int, ...] = (128, 64)
    tower_hidden: tuple[int, ...] = (32,)


class MMoENet(CTRModule):

    def __init__(self, layout: Layout, cfg: MMoEConfig) -> None:
        super().__init__(layout, cfg)
        self.n_tasks = len(cfg.tasks)
        if cfg.task_weights and len(cfg.task_weights) != self.n_tasks:
            raise ValueError(f"mmoe: {len(cfg.task_weights)} task_weights for {self.n_tasks} tasks")
        self.embed = FieldEmbedder(layout, cfg.dim, cfg.sparse, cfg.init_std, numeric_fields=False)
        d = self.embed.n_fields * cfg.dim + len(layout.num_names) + layout.emb_dim
        self.experts = nn.ModuleList(MLP(d, cfg.expert_hidden, None, cfg.dropout) for _ in range(cfg.experts))
        self.gates = nn.Linear(d, cfg.experts * self.n_tasks)
        h = self.experts[0].out_dim
        self.towers = nn.ModuleList(MLP(h, cfg.tower_hidden, 1, cfg.dropout) for _ in range(self.n_tasks))
        self.register_buffer("task_weights", torch.tensor(cfg.task_weights or [1.0] * self.n_tasks),
                             persistent=False)

    def forward(self, batch: Batch) -> Tensor:
        e = self.embed(batch).flatten(1)
        x = torch.cat([e, numeric_input(batch).to(e.dtype)], 1)
        f = torch.stack([expert(x) for expert in self.experts], 1)  # [B, E, h]
        g = torch.softmax(self.gates(x).reshape(x.shape[0], self.n_tasks, -1).float(), -1)  # [B, T, E]
        mixed = g.to(f.dtype) @ f  # [B, T, h]: each task's own mixture of the experts
        return torch.cat([tower(mixed[:, k]) for k, tower in enumerate(self.towers)], 1)

    def loss(self, logits: Tensor, batch: Batch) -> Tensor:
        per_task = F.binary_cross_entropy_with_logits(logits.float(), batch["label"].float(),
                                                      reduction="none").mean(0)
        return (per_task * self.task_weights).sum()


class MMoE(CTRModel):
    """The mmoe estimator: MMoEConfig hyper-parameters, MMoENet network, CTRModel verbs."""

    name = "mmoe"
    config_cls = MMoEConfig
    net_cls = MMoENet
    _defaults: ClassVar[dict[str, Any]] = {"lr": 3e-4}
