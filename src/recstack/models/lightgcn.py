"""LightGCN (He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020).

The boxes: one ego embedding per user and per item (as in MF). The arrows: K rounds of
propagation over the symmetrically normalised user-item graph,
    E^(k+1) = D^-1/2 A D^-1/2 E^(k),
with no weights and no non-linearity, and the final embedding is the mean of E^(0..K). Scores
are inner products (or cosines) of the final user and item embeddings. Any MF loss applies; the
paper trains with BPR.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch

from recstack.models.base import csr_rows_torch
from recstack.models.mf import MF


def normalized_adjacency(x: sp.csr_matrix) -> sp.csr_matrix:
    """D^-1/2 A D^-1/2 of the bipartite graph A = [[0, X], [X^T, 0]] (users first, then items)."""
    n_u, n_i = x.shape
    x = x.tocsr().astype(np.float32)
    du = np.asarray(x.sum(axis=1)).ravel()
    di = np.asarray(x.sum(axis=0)).ravel()
    inv_u = np.where(du > 0, 1.0 / np.sqrt(np.maximum(du, 1e-12)), 0.0).astype(np.float32)
    inv_i = np.where(di > 0, 1.0 / np.sqrt(np.maximum(di, 1e-12)), 0.0).astype(np.float32)
    norm = sp.diags(inv_u) @ x @ sp.diags(inv_i)
    return sp.bmat([[None, norm], [norm.T, None]], format="csr", dtype=np.float32)


class _SymmetricSpMM(torch.autograd.Function):
    """y = A @ x for a symmetric sparse A; the gradient is A @ dy (A^T = A), which avoids the
    sparse transpose autograd would build at every step."""

    @staticmethod
    def forward(ctx, adj: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: D102
        return None, ctx.adj @ grad.contiguous()


class LightGCN(MF):
    """LightGCN on top of MF's losses and samplers.

    Every other argument is MF's (dim, loss, n_negatives, sampler, temperature, ...).

    Args:
        n_layers: propagation rounds K (paper: 3).
    """

    name = "lightgcn"
    # the paper's training (Sec. 4.1.2 and the authors' code): BPR with one negative, Adam at lr
    # 1e-3, batch 2,048, L2 1e-4 on the batch's ego embeddings, N(0, 0.1) initialisation; up to
    # 1,000 epochs, validation every 10 on a holdout of train, stopping after 5 checks without
    # a better Recall@20
    _defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "batch_size": 2048, "epochs": 1000, "eval_every": 10,
                                           "patience": 5, "plateau_factor": 1.0, "monitor": "recall@20"}

    def __init__(self, n_layers: int = 3, dim: int = 64, loss: Literal["bpr", "bce", "softmax", "ccl"] = "bpr", n_negatives: int = 1,
                 sampler: Literal["uniform", "popularity"] = "uniform", temperature: float = 0.1, margin: float = 0.9,
                 neg_weight: float | None = None, use_bias: bool = False, normalize: bool = False,
                 init_std: float = 0.1, reg: float = 1e-4, device: str = "auto", **train: Any) -> None:
        super().__init__(dim=dim, loss=loss, n_negatives=n_negatives, sampler=sampler,
                         temperature=temperature, margin=margin, neg_weight=neg_weight,
                         use_bias=use_bias, normalize=normalize, init_std=init_std, reg=reg, device=device,
                         **train)
        self.n_layers = n_layers

    def _invalidate_tables(self) -> None:
        self.cache_ = (None,)

    def _adjacency(self) -> torch.Tensor:
        # built from the training interactions (saved with the model as `seen`), once
        if getattr(self, "adj_", None) is None:
            a = normalized_adjacency(self.seen_)
            self.adj_ = csr_rows_torch(a, np.arange(a.shape[0]), self.device_)
        return self.adj_

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.module_
        # scoring (no grad) reuses the propagated tables until an optimiser step changes the weights
        key = (m.user.weight._version, m.item.weight._version, m.user.weight.data_ptr())
        if not torch.is_grad_enabled() and getattr(self, "cache_", (None,))[0] == key:
            return self.cache_[1]
        e = torch.cat([m.user.weight, m.item.weight]).float()
        adj = self._adjacency()
        total = e
        with torch.autocast(device_type=e.device.type, enabled=False):  # sparse kernels: float32
            for _ in range(self.n_layers):
                e = _SymmetricSpMM.apply(adj, e)
                total = total + e
        final = total / (self.n_layers + 1)
        tables = final[: self.n_users_], final[self.n_users_ :]
        if not torch.is_grad_enabled():
            self.cache_ = (key, tables)
        return tables

    def fit(self, data, valid=None, valid_exclude=None) -> LightGCN:
        """MF's fit; the graph is rebuilt from the new training data."""
        self.adj_, self.cache_ = None, (None,)
        return super().fit(data, valid=valid, valid_exclude=valid_exclude)

    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # lets _tables cache the propagation across chunks of users
            return super().score_all(users)
