"""Optimisers for ranking models: row-wise Adagrad for large embedding tables, FTRL-Proximal for
the wide part of Wide & Deep, and a wrapper that steps several optimisers as one.

Row-wise Adagrad keeps one accumulator per table row (the running sum of the row's mean squared
gradient), as DLRM's and FBGEMM's embedding optimisers do: the state is 1/dim of plain Adagrad's
and only the rows a batch touched are read and written. Its sparse path merges duplicate rows
with a sort and a segment sum of fixed size, so a training step never waits for the host.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from recstack.models.ctr.dlrm_kernels import rowwise_adagrad_update
from recstack.training.trainer import TrainConfig


def coalesce_rows(grad: Tensor) -> tuple[Tensor, Tensor]:
    """Sum the rows of an uncoalesced sparse row gradient without a host sync.

    Returns ``(rows [N], values [N, D])`` with N = number of gathered rows: the first U entries
    are the distinct rows and their summed gradients; the rest point at row 0 with zero values,
    so adding them anywhere is a no-op (fixed shapes: nothing asks the device how big U is).
    """
    idx = grad._indices()[0]
    vals = grad._values()
    if idx.numel() == 0:
        return idx, vals
    order_idx, perm = idx.sort()
    new = torch.ones_like(order_idx, dtype=torch.bool)
    new[1:] = order_idx[1:] != order_idx[:-1]
    seg = new.cumsum(0) - 1
    seg_of = torch.empty_like(seg)
    seg_of[perm] = seg  # segment of each gradient row in its original order: no [N, D] gather
    summed = torch.zeros_like(vals).index_add_(0, seg_of, vals)
    rows = torch.zeros_like(order_idx).scatter_(0, seg, order_idx)
    return rows, summed


class RowWiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per row: ``s_r += mean(g_r^2); w_r -= lr * g_r / (sqrt(s_r) + eps)``.

    Accepts dense or sparse (``sparse=True`` embedding) gradients of 2-D parameters. The update is
    `dlrm_kernels.rowwise_adagrad_update`, the same as the fused table's (`RowWiseAdagradTable`).
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 0.05, eps: float = 1e-8,
                 initial_accumulator: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, eps=eps, initial_accumulator=initial_accumulator))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: D102
        for group in self.param_groups:
            lr, eps = group["lr"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "sum" not in st:
                    st["sum"] = torch.full((p.shape[0],), float(group["initial_accumulator"]),
                                           dtype=torch.float32, device=p.device)
                acc = st["sum"]
                if p.grad.is_sparse:  # coalesced without a host sync: padding rows carry zeros
                    rows, g = coalesce_rows(p.grad)
                    rowwise_adagrad_update(p.data, acc, rows, g, lr, eps, distinct=False)
                else:
                    rows = torch.arange(p.shape[0], device=p.device)
                    rowwise_adagrad_update(p.data.view(p.shape[0], -1), acc, rows,
                                           p.grad.reshape(p.shape[0], -1), lr, eps, distinct=False)


class FTRL(torch.optim.Optimizer):
    """FTRL-Proximal (McMahan et al., KDD 2013, Algorithm 1), per coordinate, with L1 and L2.

    ``alpha = lr``; weights are a function of the accumulated (z, n), so coordinates with L1
    larger than |z| are exactly zero (sparse wide models). Only coordinates with a gradient in a
    step are updated (dense zeros or absent sparse rows leave a weight untouched).
    """

    def __init__(self, params: Iterable[Tensor], lr: float = 0.05, beta: float = 1.0,
                 l1: float = 0.0, l2: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, beta=beta, l1=l1, l2=l2))

    @staticmethod
    def _update(w: Tensor, g: Tensor, z: Tensor, n: Tensor, group: dict) -> tuple[Tensor, Tensor, Tensor]:
        alpha, beta, l1, l2 = group["lr"], group["beta"], group["l1"], group["l2"]
        n_new = n + g * g
        sigma = (n_new.sqrt() - n.sqrt()) / alpha
        z_new = z + g - sigma * w
        w_new = -(z_new - z_new.sign() * l1) / ((beta + n_new.sqrt()) / alpha + l2)
        w_new = torch.where(z_new.abs() <= l1, torch.zeros_like(w_new), w_new)
        return w_new, z_new, n_new

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: D102
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if "z" not in st:
                    # start from the current weights: z such that the closed form gives w back (l1 = 0)
                    st["n"] = torch.zeros_like(p, dtype=torch.float32)
                    st["z"] = -p.detach().float() * (group["beta"] / group["lr"] + group["l2"])
                z, n = st["z"], st["n"]
                if p.grad.is_sparse:
                    g = p.grad.coalesce()
                    rows, gv = g.indices()[0], g.values().float()
                    w_new, z_new, n_new = self._update(p[rows].float(), gv, z[rows], n[rows], group)
                    p[rows], z[rows], n[rows] = w_new.to(p.dtype), z_new, n_new
                else:
                    g = p.grad.float()
                    touched = g != 0
                    w_new, z_new, n_new = self._update(p.float(), g, z, n, group)
                    p.copy_(torch.where(touched, w_new, p.float()).to(p.dtype))
                    z.copy_(torch.where(touched, z_new, z))
                    n.copy_(torch.where(touched, n_new, n))


def dense_optimizer(params: Sequence[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """The TrainConfig's optimiser (adam, adamw, sgd, adagrad) over `params`."""
    name, kw = cfg.optimizer.lower(), dict(lr=cfg.lr, weight_decay=cfg.weight_decay)
    table = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD,
             "adagrad": torch.optim.Adagrad}
    if name not in table:
        raise ValueError(f"ranking models: optimizer '{cfg.optimizer}' is not supported for dense "
                         f"parameters; use {', '.join(table)} (sparse tables: sparse=True)")
    return table[name](list(params), **kw)


class MultiOptimizer(torch.optim.Optimizer):
    """Several optimisers stepped as one (e.g. FTRL for the wide part, Adam for the deep part).

    ``param_groups`` are the children's own group dicts, so a learning-rate scheduler scales
    every child; ``state_dict`` nests the children's (checkpoints and resume work unchanged).
    """

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("MultiOptimizer needs at least one optimizer")
        params = [p for o in optimizers for g in o.param_groups for p in g["params"]]
        super().__init__(params, {})
        self.optimizers = list(optimizers)
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # noqa: D102
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: D102
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        saved = state_dict["optimizers"]
        if len(saved) != len(self.optimizers):
            raise ValueError(f"state has {len(saved)} optimizers, this one has {len(self.optimizers)}")
        for o, s in zip(self.optimizers, saved, strict=True):
            o.load_state_dict(s)
