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
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from recstack.distributed.env import is_distributed
from recstack.features.pipeline import Layout
from recstack.models.ctr.base import CTRConfig, CTRModule
from recstack.models.ctr.dlrm_kernels import GatherInteraction
from recstack.models.ctr.estimator import CTRModel
from recstack.models.ctr.fast_path import FastPathPlan, FusedDLRMStep, plan
from recstack.models.ctr.layers import Batch, FieldEmbedder
from recstack.models.layers import MLP


class _Gram(torch.autograd.Function):
    """``T -> T T^T`` per batch row with a one-product backward: ``dT = (dZ + dZ^T) T``.
    Autograd's own backward of ``bmm(t, t.transpose)`` runs two products and adds the two
    gradients of ``t`` (a full extra pass over ``[B, n, D]``)."""

    @staticmethod
    def forward(ctx, t: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(t)
        return torch.bmm(t, t.transpose(1, 2))

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # noqa: D102
        (t,) = ctx.saved_tensors
        return torch.bmm((g + g.transpose(1, 2)).to(t.dtype), t)


def dot_interaction(t: Tensor, li: Tensor, lj: Tensor) -> Tensor:
    """``[B, n, D]`` vectors -> their pairwise dot products ``[B, len(li)]`` at pairs ``(li, lj)``."""
    n = t.shape[1]
    z = _Gram.apply(t).flatten(1)
    # one index_select on the flattened Gram matrix: its backward is an index_add along dim 1,
    # where z[:, li, lj]'s is an accumulating index_put that sorts B * n(n-1)/2 indices
    return z.index_select(1, li * n + lj)


@dataclass
class DLRMConfig(CTRConfig):
    dropout: float = 0.2  # chosen on MovieLens 100K validation AUC (bench_ctr_ml100k.py)
    bottom: tuple[int, ...] = (64, 32)  # hidden sizes; the last layer outputs `dim`
    top: tuple[int, ...] = (256, 128)
    # the fused table + Triton kernels + CUDA graph (`fast_path.py`): "auto" = on CUDA whenever it
    # applies (sparse=true, numeric + categorical fields), "always" = on the CPU too, "never".
    # Not a modelling choice: both paths make the same updates.
    fast_path: Literal["auto", "always", "never"] = "auto"


class DLRMNet(CTRModule):

    def __init__(self, layout: Layout, cfg: DLRMConfig) -> None:
        super().__init__(layout, cfg)
        self.embed = FieldEmbedder(layout, cfg.dim, cfg.sparse, cfg.init_std, numeric_fields=False)
        n_num = len(layout.num_names)
        # bottom MLP: ReLU on every layer, its output is one more "field" vector
        self.bottom = MLP(n_num, [*cfg.bottom, cfg.dim], None, 0.0) if n_num else None
        n = self.embed.n_fields + (1 if self.bottom is not None else 0)
        li, lj = torch.tril_indices(n, n, offset=-1)
        # zero vectors pad the field count to a multiple of 8: tensor-core batched products
        # need aligned shapes (27 fields ran a slow fallback kernel on an H100); pads are never read
        self.n_pad = -n % 8
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
        parts = [x.unsqueeze(1), e.to(x.dtype)]
        if self.n_pad:
            parts.append(x.new_zeros(x.shape[0], self.n_pad, x.shape[1]))
        t = torch.cat(parts, 1)
        z = dot_interaction(t, self.li, self.lj)
        return self.top(torch.cat([x, z.to(x.dtype)], 1)).squeeze(1)

    def forward_rows(self, num: Tensor, table, sorted_rows) -> Tensor:
        """The same logits as ``dense(num, table(codes))`` for a model whose fields are all
        categorical, read straight from a `RowWiseAdagradTable`: the lookup and the interaction
        are one fused op (`dlrm_kernels.GatherInteraction`), whose backward hands the rows'
        gradient to the table (apply it with ``table.step()``). ``sorted_rows = table.sort(codes)``,
        possibly prepared a step ahead."""
        if self.bottom is None or self.embed.n_fields != sorted_rows.rows.shape[1]:
            raise ValueError("forward_rows needs dense features and categorical fields only")
        x = self.bottom(num)
        t = GatherInteraction.apply(x, table.weight, sorted_rows.rows, table.gradient_sink(sorted_rows))
        return self.top(t).squeeze(1)


class DLRM(CTRModel):
    """The dlrm estimator: DLRMConfig hyper-parameters, DLRMNet network, CTRModel verbs."""

    name = "dlrm"
    config_cls = DLRMConfig
    net_cls = DLRMNet
    _defaults: ClassVar[dict[str, Any]] = {"lr": 3e-4}

    def _train_step(self) -> tuple[FusedDLRMStep | None, FastPathPlan]:
        cfg = self.config
        p = plan(self.module_, cfg, self.train_config, self.device_, mode=cfg.fast_path,
                 distributed=is_distributed())
        if not p.used:
            return None, p
        return FusedDLRMStep(self.module_, self.train_config, cfg.embedding_lr, graph=p.graph,
                             augment=self._drop_ids), p
