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

#: dense n_items x n_items float32 matrices alive at once at the peak of the CPU solve: the Gram
#: matrix, LAPACK's Fortran-order copy of it (potrf/potri then work in place), the two
#: triangles `np.tril` copies out of the inverse and their sum.
CPU_PEAK_COPIES = 5
#: ... of the GPU solve, in host memory (the Gram matrix and its float32 copy) and on the
#: device (the Gram matrix, its Cholesky factor and the inverse).
GPU_HOST_COPIES, GPU_DEVICE_COPIES = 2, 3


def available_memory_bytes() -> int | None:
    """Memory this process can still allocate: psutil's figure when installed, else Linux's
    ``MemAvailable``; None when neither can be read."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def solve_memory_bytes(n_items: int, gram_nnz: int, device_type: str = "cpu") -> dict[str, int]:
    """Peak memory of `EASE._fit` for `n_items` items: ``{"host": bytes, "device": bytes}``.

    `gram_nnz` bounds the non-zeros of the sparse X^T X (8 bytes each: value and index), alive
    together with its dense copy while it is densified."""
    unit = 4 * n_items * n_items  # one dense float32 matrix
    densify = 8 * gram_nnz + unit
    if device_type == "cpu":
        return {"host": max(densify, CPU_PEAK_COPIES * unit), "device": 0}
    return {"host": max(densify, GPU_HOST_COPIES * unit), "device": GPU_DEVICE_COPIES * unit}


def _size(b: float) -> str:
    return f"{b / 2**30:.1f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


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
        self._check_memory(n, x)
        gram = (x.T @ x).toarray().astype(np.float32)
        gram[np.diag_indices(n)] += self.l2
        p = _spd_inverse(gram, self.device_)
        del gram
        b = p / (-p.diagonal()).unsqueeze(0)
        b.diagonal().zero_()
        self.B_ = b

    def _check_memory(self, n: int, x) -> None:
        """Refuse, with the figures, a solve that does not fit in memory (running out inside
        OpenBLAS / LAPACK kills the process with SIGSEGV instead of raising)."""
        degrees = np.diff(x.indptr).astype(np.int64)
        nnz = int(min(n * n, int((degrees**2).sum())))  # X^T X has at most sum_u deg(u)^2 entries
        need = solve_memory_bytes(n, nnz, self.device_.type)
        free = available_memory_bytes()
        if free is not None and need["host"] > free:
            raise ValueError(
                f"ease: the solve for {n:,} items needs about {_size(need['host'])} of memory "
                f"({CPU_PEAK_COPIES if self.device_.type == 'cpu' else GPU_HOST_COPIES} dense {n:,} x {n:,} "
                f"float32 matrices at its peak, {_size(4 * n * n)} each) but {_size(free)} is available; "
                "use fewer items (k-core filtering), a machine with more memory, or itemknn")
        if self.device_.type == "cuda":
            free_dev, _ = torch.cuda.mem_get_info(self.device_)
            if need["device"] > free_dev:
                raise ValueError(
                    f"ease: the solve for {n:,} items needs about {_size(need['device'])} on {self.device_} "
                    f"({GPU_DEVICE_COPIES} dense {n:,} x {n:,} float32 matrices) but {_size(free_dev)} is free "
                    "there; use --device cpu, fewer items, or itemknn")

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
