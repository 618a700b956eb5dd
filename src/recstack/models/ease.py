"""EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

A linear item-item model with a zero diagonal, solved in closed form:
    P = (X^T X + l2 * I)^-1,   B = I - P diag(1 / diag(P))   (so B_jj = 0)
and a user's scores are x_u B.

The solve holds one dense n_items x n_items float32 matrix and no full-size copy of it: X^T X is
densified block of rows by block of rows straight into that buffer, l2 is added to its diagonal,
the Cholesky factor and the inverse overwrite it (torch's cholesky_ex and cholesky_inverse, on the
CPU or a GPU alike), and B is made from P in place. Gowalla (40,981 items,
6.3 GiB a matrix) fits a 24 GB machine; a solve that would not fit is refused, before it starts,
with the figures.
"""

from __future__ import annotations

import resource
import sys
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recstack.data.dataset import Interactions
from recstack.models.base import Recommender, csr_rows_torch

#: dense n_items x n_items float32 matrices alive at once at the peak of the CPU solve: the one
#: buffer that holds X^T X + l2 I, then its Cholesky factor, then P, then B (all in place; on
#: the CPU torch's cholesky_inverse runs LAPACK's potri in place).
CPU_PEAK_COPIES = 1
#: ... of the GPU solve: none in host memory (X^T X goes to the device a block of rows at a
#: time); on the device the buffer (Gram matrix -> Cholesky factor -> P -> B, in place) and the
#: working copy of the factor that torch.cholesky_inverse makes on CUDA (it solves L L^T P = I).
GPU_HOST_COPIES, GPU_DEVICE_COPIES = 0, 2
#: entries (rows x n_items) of one block of X^T X densified at a time
GRAM_BLOCK_ENTRIES = 1 << 24
#: LAPACK / OpenBLAS work buffers and allocator slack, counted on top of the matrices
SLACK_BYTES = 64 << 20


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


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (getrusage's ru_maxrss: KiB on Linux, bytes
    on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def gram_block_rows(n_items: int) -> int:
    """Rows of X^T X densified at a time: about GRAM_BLOCK_ENTRIES entries a block."""
    return max(1, min(n_items, GRAM_BLOCK_ENTRIES // max(1, n_items)))


def solve_memory_bytes(n_items: int, x_nnz: int = 0, device_type: str = "cpu") -> dict[str, int]:
    """Peak memory of `EASE._fit` for `n_items` items and `x_nnz` interactions:
    ``{"host": bytes, "device": bytes}``.

    Host: the dense float32 buffer on the CPU (none for a GPU solve), one working block of
    X^T X (a sparse product, 12 bytes an entry at most, and its dense float32 rows), X
    transposed (12 bytes an interaction) and SLACK_BYTES. Device: GPU_DEVICE_COPIES dense
    matrices and one dense block of rows."""
    unit = 4 * n_items * n_items  # one dense float32 matrix
    rows = gram_block_rows(n_items)
    block = 16 * n_items * rows  # sparse product (<= 12 B an entry) + its dense rows
    x_t = 12 * x_nnz + 8 * (n_items + 1)
    if device_type == "cpu":
        return {"host": CPU_PEAK_COPIES * unit + block + x_t + SLACK_BYTES, "device": 0}
    return {"host": GPU_HOST_COPIES * unit + block + x_t + SLACK_BYTES,
            "device": GPU_DEVICE_COPIES * unit + 4 * n_items * rows}


def _size(b: float) -> str:
    return f"{b / 2**30:.1f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def _gib(b: float) -> float:
    return round(b / 2**30, 3)


# ---- the solve, in place ---------------------------------------------------------------------------
def gram_into(x: sp.csr_matrix, out: np.ndarray | torch.Tensor, l2: float = 0.0) -> np.ndarray | torch.Tensor:
    """Write X^T X + l2 I into `out` (n_items x n_items float32, C-contiguous: a numpy array, or
    a torch tensor on any device), a block of rows at a time: no sparse or dense copy of the
    whole matrix is ever made."""
    n = x.shape[1]
    dense = out.numpy() if isinstance(out, torch.Tensor) and out.device.type == "cpu" else out
    x_t = sp.csr_matrix(x.T, dtype=np.float32)  # items x users
    x = sp.csr_matrix(x, dtype=np.float32)
    rows = gram_block_rows(n)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        part = x_t[r0:r1] @ x  # rows r0:r1 of X^T X, sparse
        if isinstance(dense, np.ndarray):  # straight into the buffer
            part.toarray(out=dense[r0:r1])
        else:
            out[r0:r1].copy_(torch.from_numpy(part.toarray()))
        del part
    _diagonal(out)[...] += l2
    return out


def _diagonal(m: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """A writable view of the diagonal."""
    if isinstance(m, np.ndarray):
        return m.reshape(-1)[:: m.shape[0] + 1]  # a view: `m` is C-contiguous
    return m.diagonal()


def _weights_in_place(p: torch.Tensor) -> torch.Tensor:
    """P (symmetric, both triangles filled) -> B = -P diag(1 / diag P) with a zero diagonal, in
    place: every column j divided by -P_jj (an elementwise in-place product: no temporary)."""
    d = p.diagonal()
    p.mul_(-1.0 / d)  # the n scales are computed before the product overwrites d
    d.zero_()
    return p


def solve_torch(g: torch.Tensor) -> torch.Tensor:
    """EASE's B from G = X^T X + l2 I (float32, contiguous, symmetric) on G's device,
    overwriting G; returns G's memory, now B.

    The Cholesky factor and P are written into G's memory seen in column-major order (the
    layout torch's LAPACK / cuSOLVER calls want, so torch makes no copy): cholesky_ex in place,
    then cholesky_inverse in place (potri on the CPU, in torch's threads; on CUDA it
    solves L L^T P = I and makes one working copy of the factor); then B from P in place.

    (Not scipy's LAPACK on the CPU: the threaded spotrf of the OpenBLAS that scipy ships
    crashed with SIGSEGV at once on 40,981 x 40,981 here.)"""
    f = g.mT  # column-major view of the same memory; equal to g (symmetric)
    info = torch.zeros((), dtype=torch.int32, device=g.device)
    # torch's own thread count (the user's --threads): an early measurement with 1 thread under
    # load was not confirmed on a quieter machine (4,000 items: 2 threads 0.55 s, 1 thread 1.2 s)
    torch.linalg.cholesky_ex(f, out=(f, info))  # L in f's lower triangle
    if int(info) != 0:
        raise np.linalg.LinAlgError(f"ease: Cholesky failed (info={int(info)}); increase l2")
    torch.cholesky_inverse(f, out=f)  # the full symmetric inverse
    if f.data_ptr() != g.data_ptr():
        raise RuntimeError("ease: torch did not work in place")
    return _weights_in_place(g)


class EASE(Recommender):
    """Closed-form EASE^R.

    Args:
        l2: L2 regularisation strength (lambda in the paper).
        max_items: refuse catalogues larger than this; the solve needs one items x items dense
            float32 matrix (n_items^2 x 4 bytes; 6.3 GiB for 40,981 items) and O(n_items^3)
            time. Below it, the memory the solve needs is checked against the memory available
            before it starts.
    """

    name = "ease"

    def __init__(self, l2: float = 500.0, max_items: int = 50_000, device: str = "auto") -> None:
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
        self.B_ = None  # a refit frees the old weights before the new buffer is taken
        memory = self._check_memory(n, x)
        cuda = self.device_.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device_)
        # the solve runs on CUDA there, else on the CPU (scored where the model's device is)
        g = torch.empty((n, n), dtype=torch.float32, device=self.device_ if cuda else "cpu")
        self.B_ = solve_torch(gram_into(x, g, self.l2))
        if self.B_.device != self.device_:
            self.B_ = self.B_.to(self.device_)
        del g
        memory["peak_rss_gib"] = _gib(peak_rss_bytes())
        if cuda:
            memory["device_peak_gib"] = _gib(torch.cuda.max_memory_allocated(self.device_))
        self.fit_info_: dict[str, Any] = {"memory": memory}

    def _check_memory(self, n: int, x) -> dict[str, Any]:
        """Refuse, with the figures, a solve that does not fit in memory (running out inside
        OpenBLAS / LAPACK kills the process with SIGSEGV instead of raising); return the
        estimate and the memory available, in GiB, for the fit's record."""
        device_type = self.device_.type if self.device_.type == "cuda" else "cpu"
        need = solve_memory_bytes(n, int(x.nnz), device_type)
        free = available_memory_bytes()
        unit = 4 * n * n
        if free is not None and need["host"] > free:
            what = (f"one dense {n:,} x {n:,} float32 matrix ({_size(unit)}) and "
                    f"{_size(need['host'] - unit)} of working blocks" if device_type == "cpu"
                    else "working blocks of X^T X")
            raise ValueError(
                f"ease: the solve for {n:,} items needs about {_size(need['host'])} of memory "
                f"({what}) but {_size(free)} is available; "
                "use fewer items (k-core filtering), a machine with more memory, or itemknn")
        memory: dict[str, Any] = {"estimate_gib": _gib(need["host"]),
                                  "available_gib": None if free is None else _gib(free)}
        if device_type == "cuda":
            free_dev, _ = torch.cuda.mem_get_info(self.device_)
            if need["device"] > free_dev:
                raise ValueError(
                    f"ease: the solve for {n:,} items needs about {_size(need['device'])} on {self.device_} "
                    f"({GPU_DEVICE_COPIES} dense {n:,} x {n:,} float32 matrices, {_size(unit)} each) but "
                    f"{_size(free_dev)} is free there; use --device cpu, fewer items, or itemknn")
            memory["device_estimate_gib"] = _gib(need["device"])
            memory["device_available_gib"] = _gib(free_dev)
        return memory

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
