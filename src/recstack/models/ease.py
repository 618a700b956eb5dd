"""EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

A linear item-item model with a zero diagonal, solved in closed form:
    P = (X^T X + l2 * I)^-1,   B = I - P diag(1 / diag(P))   (so B_jj = 0)
and a user's scores are x_u B.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.linalg import lapack

from recstack.data.dataset import Interactions
from recstack.models.base import Recommender, csr_rows_torch


def _spd_inverse(a: np.ndarray, device: torch.device) -> torch.Tensor:
    """Inverse of a symmetric positive-definite matrix through its Cholesky factor.

    On CPU LAPACK's potrf + potri (in place, about 2x faster than torch.cholesky_inverse
    there); on GPU torch's batched kernels.
    """
    if device.type == "cpu":
        c, info = lapack.spotrf(a, lower=1, overwrite_a=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"ease: Cholesky failed (info={info}); increase l2")
        inv, info = lapack.spotri(c, lower=1, overwrite_c=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"ease: inverse failed (info={info}); increase l2")
        inv = np.tril(inv) + np.tril(inv, -1).T  # potri fills only the lower triangle
        return torch.from_numpy(inv)
    g = torch.as_tensor(a, device=device)
    return torch.cholesky_inverse(torch.linalg.cholesky(g))


class EASE(Recommender):
    """Closed-form EASE^R.

    Args:
        l2: L2 regularisation strength (lambda in the paper).
        max_items: refuse catalogues larger than this; the solve needs an items x items dense
            matrix (n_items^2 x 4 bytes) and O(n_items^3) time.
    """

    name = "ease"

    def __init__(self, l2: float = 500.0, max_items: int = 30_000, device: str = "auto") -> None:
        super().__init__(device)
        self.l2 = l2
        self.max_items = max_items

    def _fit(self, data: Interactions) -> None:
        n = data.n_items
        if n > self.max_items:
            gib = n * n * 4 / 2**30
            raise ValueError(
                f"ease: {n:,} items needs a dense {n:,} x {n:,} matrix ({gib:.1f} GiB) and an "
                f"O(n^3) solve; raise max_items (--set max_items=...) if you have the memory, "
                f"or use itemknn"
            )
        x = self.seen_
        gram = (x.T @ x).toarray().astype(np.float32)
        gram[np.diag_indices(n)] += self.l2
        p = _spd_inverse(gram, self.device_)
        del gram
        b = p / (-p.diagonal()).unsqueeze(0)
        b.diagonal().zero_()
        self.B_ = b

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        # histories are sparse: a sparse @ dense product costs nnz x n_items, not b x n_items^2
        rows = users.cpu().numpy()
        if self.B_.device.type == "cpu":  # scipy's CSR @ dense beats torch's CPU sparse kernels
            return torch.from_numpy(np.asarray(self.seen_[rows] @ self.B_.numpy()))
        return csr_rows_torch(self.seen_, rows, self.device_) @ self.B_

    def _state(self) -> dict[str, torch.Tensor]:
        return {"B": self.B_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.B_ = state["B"]
