"""Graph-filter collaborative filtering, closed form, no training loop.

GF-CF (Shen et al., "How Powerful is Graph Convolution for Recommendation?", CIKM 2021) and
BSPM (Choi et al., "Blurring-Sharpening Process Models for Collaborative Filtering", SIGIR 2023)
treat a user's row of the interaction matrix as a signal on the item-item graph and filter it.

The boxes (all computed from the training matrix R, users x items):
    R~ = D_U^-1/2 R D_I^-1/2            the symmetrically normalised interactions
    P~ = R~^T R~                         the normalised item-item graph (eigenvalues in [0, 1])
    V  = top-`rank` eigenvectors of P~   (right singular vectors of R~): the ideal low-pass filter
The arrows, for a user's binary row r:
    1. blurring (heat equation dx/dt = x P~ - x, from x(0) = r, over `blur_time`, Euler steps);
       one step of length 1 gives r P~, GF-CF's linear filter;
    2. add the ideal low-pass term  beta * r D_I^-1/2 V V^T D_I^1/2;
    3. sharpening (the reverse process dx/dt = -x P~, over `sharpen_time`, RK4 or Euler steps), which
       removes the over-smoothed part of the signal (BSPM); `sharpen_time=0` is GF-CF;
    4. the score is the last state, or with `combine="mean"` the mean of the blurred and the
       sharpened states at every step after the start (BSPM's time-point combination).

P~ is never formed: x P~ = ((x D_I^-1/2) R^T D_U^-1) R D_I^-1/2 costs two sparse products of
nnz(R) x batch each, so it runs on a CPU as well as a GPU. The low-pass basis comes from
randomised subspace iteration on P~ (Rayleigh-Ritz), also through those products.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from recstack.data.dataset import Interactions
from recstack.models.base import Recommender, csr_rows_torch


def _torch_csr(m: sp.csr_matrix, device: torch.device) -> torch.Tensor:
    return csr_rows_torch(m, np.arange(m.shape[0]), device)


class BSPM(Recommender):
    """Blurring-sharpening graph filter (BSPM-EM: the low-pass term merged before sharpening).

    Args:
        rank: size of the ideal low-pass basis (0 = no low-pass term).
        beta: weight of the low-pass term.
        blur_time: blurring horizon (with `blur_steps=1`, 1.0 = the linear filter).
        blur_steps: Euler steps of the blurring.
        sharpen_time: sharpening horizon (0 = no sharpening).
        sharpen_steps: solver steps of the sharpening.
        sharpen_solver: "rk4" or "euler" (the paper searches both; one long Euler step
            x - T x P~ is a much stronger high-pass than the RK4 solution of the same ODE).
        combine: "last" (the final state) or "mean" (mean of every state after the start).
        power_iters: subspace iterations for the low-pass basis (more = closer to exact).
        seed: seed of the random start of the subspace iteration.

    The defaults are the point chosen on validation data only: the 72-point grid of
    `benchmarks/grids/bspm.yaml` scored on 20% of each Gowalla user's training interactions
    (`recstack tune`, docs/benchmarks.md, issue 17), kept for every data set.
    """

    name = "bspm"

    def __init__(self, rank: int = 640, beta: float = 0.2, blur_time: float = 1.0, blur_steps: int = 1,
                 sharpen_time: float = 2.5, sharpen_steps: int = 1, combine: Literal["last", "mean"] = "last",
                 power_iters: int = 10, seed: int = 0, sharpen_solver: Literal["rk4", "euler"] = "rk4",
                 device: str = "auto") -> None:
        super().__init__(device)
        self.rank, self.beta = rank, beta
        self.blur_time, self.blur_steps = blur_time, blur_steps
        self.sharpen_time, self.sharpen_steps = sharpen_time, sharpen_steps
        self.combine, self.power_iters, self.seed = combine, power_iters, seed
        self.sharpen_solver = sharpen_solver

    # ---- the graph -------------------------------------------------------------------------------
    def _graph(self) -> None:
        """Normalised R~ and R~^T as torch sparse CSR on the device (rebuilt from `seen_`)."""
        if getattr(self, "rt_", None) is not None:
            return
        x = self.seen_.tocsr().astype(np.float32)
        x.data[:] = 1.0
        du = np.asarray(x.sum(axis=1)).ravel()
        di = np.asarray(x.sum(axis=0)).ravel()
        inv_u = np.where(du > 0, 1.0 / np.sqrt(np.maximum(du, 1e-12)), 0.0).astype(np.float32)
        inv_i = np.where(di > 0, 1.0 / np.sqrt(np.maximum(di, 1e-12)), 0.0).astype(np.float32)
        norm = (sp.diags(inv_u) @ x @ sp.diags(inv_i)).tocsr()
        self.r_ = _torch_csr(norm, self.device_)
        self.rt_ = _torch_csr(norm.T.tocsr(), self.device_)
        self.inv_i_ = torch.as_tensor(inv_i, device=self.device_)
        self.sqrt_i_ = torch.as_tensor(np.sqrt(np.maximum(di, 0.0)).astype(np.float32), device=self.device_)

    def _propagate(self, x: torch.Tensor) -> torch.Tensor:
        """x P~ for a dense [b, n_items] block, as two sparse products (P~ is never formed)."""
        with warnings.catch_warnings():  # torch marks sparse CSR as beta
            warnings.simplefilter("ignore", UserWarning)
            z = self.r_ @ x.T.contiguous()  # [n_users, b]
            return (self.rt_ @ z).T  # [b, n_items]

    def _low_pass_basis(self) -> torch.Tensor:
        """Top-`rank` eigenvectors of P~ by randomised subspace iteration + Rayleigh-Ritz."""
        n = self.n_items_
        q = min(n, self.rank + max(10, self.rank // 4))  # oversampling sharpens the top of the spectrum
        g = torch.Generator(device="cpu").manual_seed(self.seed)
        basis = torch.randn(q, n, generator=g).to(self.device_)
        for _ in range(self.power_iters):
            basis = torch.linalg.qr(self._propagate(basis).T).Q.T
        small = basis @ self._propagate(basis).T  # [q, q] = Q^T P~ Q
        vals, vecs = torch.linalg.eigh((small + small.T) / 2)
        top = torch.argsort(vals, descending=True)[: self.rank]
        return (vecs[:, top].T @ basis).T.contiguous()  # [n_items, rank]

    # ---- fit / score -----------------------------------------------------------------------------
    def _fit(self, data: Interactions) -> None:
        if min(self.blur_steps, self.sharpen_steps) < 1 or self.rank < 0:
            raise ValueError("bspm: blur_steps and sharpen_steps must be >= 1 and rank >= 0")
        self.rt_ = None
        self._graph()
        self.basis_ = self._low_pass_basis() if self.rank > 0 else torch.zeros(self.n_items_, 0, device=self.device_)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        self._graph()
        rows = users.cpu().numpy()
        r = csr_rows_torch(self.seen_, rows, self.device_).to_dense()
        r = (r > 0).float()  # the signal is the binary interaction row
        states: list[torch.Tensor] = []
        x = r
        h = self.blur_time / self.blur_steps
        for _ in range(self.blur_steps):  # blurring: dx/dt = x P~ - x
            x = x + h * (self._propagate(x) - x)
            states.append(x)
        if self.rank > 0 and self.beta:
            low = ((r * self.inv_i_) @ self.basis_) @ self.basis_.T * self.sqrt_i_
            x = x + self.beta * low
        if self.sharpen_time > 0:
            h = self.sharpen_time / self.sharpen_steps
            for _ in range(self.sharpen_steps):  # sharpening: dx/dt = -x P~
                k1 = -self._propagate(x)
                if self.sharpen_solver == "euler":
                    x = x + h * k1
                    states.append(x)
                    continue
                k2 = -self._propagate(x + 0.5 * h * k1)
                k3 = -self._propagate(x + 0.5 * h * k2)
                k4 = -self._propagate(x + h * k3)
                x = x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
                states.append(x)
        else:  # no sharpening: the final state is the blurred one plus the low-pass term
            states[-1] = x
        if self.combine == "mean" and len(states) > 1:
            return torch.stack(states).mean(0)
        return x

    # ---- persistence -----------------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        return {"basis": self.basis_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.basis_ = state["basis"]
        self.rt_ = None


class GFCF(BSPM):
    """GF-CF (Shen et al. 2021): the linear filter r P~ plus `beta` x the ideal low-pass filter;
    BSPM with one unit blurring step and no sharpening."""

    name = "gfcf"

    def __init__(self, rank: int = 256, beta: float = 0.3, power_iters: int = 10, seed: int = 0,
                 device: str = "auto") -> None:
        super().__init__(rank=rank, beta=beta, blur_time=1.0, blur_steps=1, sharpen_time=0.0,
                         sharpen_steps=1, combine="last", power_iters=power_iters, seed=seed, device=device)
