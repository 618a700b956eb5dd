"""iALS: implicit-feedback matrix factorisation by alternating least squares.

Hu, Koren & Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008:
every (user, item) pair is a target p_ui (1 if observed, else 0) weighted by a confidence
c_ui = 1 + alpha * r_ui (r_ui = 1 for an observed pair, 0 otherwise), and

    min_{X, Y}  sum_{u, i} c_ui (p_ui - x_u . y_i)^2 + sum_u lambda_u |x_u|^2 + sum_i lambda_i |y_i|^2.

With Y fixed, each x_u solves  (Y^T Y + alpha Y_u^T Y_u + lambda_u I) x_u = (1 + alpha) Y_u^T 1,
where Y_u holds the rows of u's items (the Gramian trick: Y^T Y covers every unobserved pair and
is computed once per sweep). Rather than factorising that d x d matrix per row, a few
conjugate-gradient steps warm-started from the current x_u update it (Takacs, Pilaszy & Tikk,
"Applications of the conjugate gradient method for implicit feedback collaborative filtering",
RecSys 2011); items are solved the same way with X fixed.

The regularisation follows Rendle, Krichene, Zhang & Koren, "Revisiting the Performance of iALS
on Item Recommendation Benchmarks", RecSys 2022 (section 3): there a row's L2 weight grows with
the weight of its terms in the loss, lambda_u = lambda (|I_u| + alpha_0 |I|)^nu, where alpha_0
is the weight of the unobserved pairs relative to the observed ones and nu in [0, 1]. Written
with Hu et al.'s confidences (unobserved weight 1, observed weight 1 + alpha, i.e. alpha_0 =
1 / alpha, a constant factor absorbed into lambda) this is ``reg_scaling="frequency"``:

    lambda_u = lambda (|I| + alpha |I_u|)^nu,   lambda_i = lambda (|U| + alpha |U_i|)^nu,

the row's total confidence raised to ``reg_exponent`` (nu); ``"none"`` keeps lambda for every row.

Vectorised: the rows (users, then items) are sorted by their number of interactions and cut into
blocks of about `BLOCK_BYTES` of gathered vectors; a block's other-side vectors are gathered once
per sweep into a [rows, longest list, factors] tensor, and every CG step is two batched
matrix-vector products over it plus one [rows, d] x [d, d] product with the Gramian: no Python
loop per row. The arithmetic is torch's (its intra-op threads on the CPU; a GPU with
``device="cuda"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
import scipy.sparse as sp
import torch

from recstack.configs.params import Range
from recstack.data.dataset import Interactions
from recstack.models.base import Recommender

#: size of a block's gathered vectors (padded entries x factors x bytes per value): they stay in
#: cache across the block's CG steps (4 to 8 MiB measured best on a 2-core EPYC, 32 MiB L3)
BLOCK_BYTES = 8 << 20


@dataclass
class _Block:
    """One block of rows solved together: their ids, their other-side indices padded to the
    block's longest list (padding points at an all-zero row), and which slots are real."""

    rows: torch.Tensor  # [B] int64
    index: torch.Tensor  # [B * L] int64 into the other side's vectors (n_other: the zero row)
    mask: torch.Tensor  # [B, L] float: 1 for an interaction, 0 for padding
    reg: torch.Tensor  # [B, 1] the rows' lambda


def _blocks(m: sp.csr_matrix, reg: np.ndarray, device: torch.device, dtype: torch.dtype,
            budget: int) -> list[_Block]:
    """`m`'s rows grouped into blocks of similar length (longest first), each padded to its
    longest row and holding about `budget` padded entries; the loop runs once per block, not
    per row."""
    n_rows, n_other = m.shape
    deg = np.diff(m.indptr)
    order = np.argsort(-deg, kind="stable")
    out = []
    start = 0
    while start < n_rows:
        longest = max(1, int(deg[order[start]]))
        stop = min(n_rows, start + max(1, budget // longest))
        rows = order[start:stop]
        lens = deg[rows]
        slots = np.arange(longest)
        real = slots[None, :] < lens[:, None]
        pos = m.indptr[rows][:, None] + slots[None, :]
        index = np.where(real, m.indices[np.minimum(pos, max(0, m.nnz - 1))] if m.nnz else 0, n_other)
        out.append(_Block(
            rows=torch.as_tensor(rows, dtype=torch.int64, device=device),
            index=torch.as_tensor(index.reshape(-1), dtype=torch.int64, device=device),
            mask=torch.as_tensor(real, dtype=dtype, device=device),
            reg=torch.as_tensor(reg[rows], dtype=dtype, device=device).unsqueeze(1),
        ))
        start = stop
    return out


def _row_reg(m: sp.csr_matrix, regularization: float, scaling: str, exponent: float,
             alpha: float) -> np.ndarray:
    """lambda of every row of `m` (module docs)."""
    if scaling == "none":
        return np.full(m.shape[0], regularization, np.float64)
    total = m.shape[1] + alpha * np.diff(m.indptr).astype(np.float64)  # the row's total confidence
    return regularization * total**exponent


#: lists at most this long use elementwise products: torch's batched matrix products pay a
#: fixed cost per matrix that dominates for such tiny ones.
SHORT_LISTS = 4


def _products(yb: torch.Tensor):
    """For gathered vectors yb [n, L, d]: (v [n, d] -> yb_b v_b [n, L], w [n, L] -> yb_b^T w_b
    [n, d]), each as one batched operation over the block."""
    if yb.shape[1] <= SHORT_LISTS:
        return (lambda v: (yb * v.unsqueeze(1)).sum(2)), (lambda w: (w.unsqueeze(2) * yb).sum(1))
    yt = yb.transpose(1, 2)  # a row vector times yb^T: several times faster than yb times a column
    return (lambda v: torch.bmm(v.unsqueeze(1), yt).squeeze(1)), (lambda w: torch.bmm(w.unsqueeze(1), yb).squeeze(1))


@torch.no_grad()
def solve_side(own: torch.Tensor, other: torch.Tensor, blocks: list[_Block], alpha: float,
               cg_steps: int) -> None:
    """One half-sweep: every row of `own` moved towards its least-squares solution given
    `other` by `cg_steps` conjugate-gradient steps from its current value (in place).

    `other` ends in one all-zero row, where the blocks' padding points (the fit keeps one at the
    end of both factor matrices; no block updates it).

    Row u's system is  (G + alpha Y_u^T Y_u + lambda_u I) x = (1 + alpha) Y_u^T 1  with
    G = other^T other computed once here.
    """
    gram = other.T @ other  # the padding row is zero: it adds nothing
    d = other.shape[1]
    # one buffer for every block's gathered vectors: a fresh large tensor per block would cost
    # more in page faults than the gather itself
    buf = other.new_empty(max(b.index.numel() for b in blocks) * d) if blocks else None
    tiny = torch.finfo(other.dtype).tiny
    for blk in blocks:
        n, width = blk.mask.shape
        yb = torch.index_select(other, 0, blk.index, out=buf[: n * width * d].view(n * width, d)).view(n, width, d)
        dots, combine = _products(yb)
        weight = blk.mask * alpha  # alpha on the row's items, 0 on the padding

        def apply(v: torch.Tensor, weight=weight, blk=blk, dots=dots, combine=combine) -> torch.Tensor:
            """A v for every row of the block: [n, d]."""
            return torch.addmm(combine(dots(v).mul_(weight)), v, gram).addcmul_(blk.reg, v)

        x = own.index_select(0, blk.rows)
        # residual b - A x, with b = (1 + alpha) Y_u^T 1 folded into the same product
        r = torch.addmm(combine(blk.mask * (1.0 + alpha) - dots(x).mul_(weight)), x, gram, alpha=-1.0)
        r.addcmul_(blk.reg, x, value=-1.0)
        p = r.clone()
        rs = (r * r).sum(1, keepdim=True)
        for step in range(cg_steps):
            ap = apply(p)
            # p = 0 only where r = 0 (a solved row): then rs = 0 and the step is 0, not 0 / 0
            a = rs / (p * ap).sum(1, keepdim=True).clamp_min_(tiny)
            x.addcmul_(a, p)
            if step == cg_steps - 1:
                break
            r.addcmul_(a, ap, value=-1.0)
            rs_new = (r * r).sum(1, keepdim=True)
            p.mul_(rs_new / rs.clamp_min(tiny)).add_(r)
            rs = rs_new
        own.index_copy_(0, blk.rows, x)


def ials_objective(x: torch.Tensor, y: torch.Tensor, m: sp.csr_matrix, alpha: float,
                   reg_users: np.ndarray, reg_items: np.ndarray) -> float:
    """Hu et al.'s loss (module docs) of factors `x` (users) and `y` (items) on the binary
    users x items matrix `m`, in float64, without forming the users x items matrix."""
    x64, y64 = x.double().cpu(), y.double().cpu()
    every_pair = float(((x64.T @ x64) * (y64.T @ y64)).sum())  # sum_{u,i} (x_u . y_i)^2
    coo = m.tocoo()
    pred = (x64[torch.as_tensor(coo.row, dtype=torch.int64)]
            * y64[torch.as_tensor(coo.col, dtype=torch.int64)]).sum(1)
    observed = float(((1.0 + alpha) * (1.0 - pred) ** 2 - pred**2).sum())  # replaces their c=1, p=0 term
    reg = float((torch.as_tensor(reg_users) * (x64**2).sum(1)).sum()
                + (torch.as_tensor(reg_items) * (y64**2).sum(1)).sum())
    return every_pair + observed + reg


class IALS(Recommender):
    """iALS with a conjugate-gradient solver (module docs: the loss, the solver, the papers).

    Args:
        factors: dimension of the user and item vectors.
        regularization: lambda, the L2 weight (per row, scaled as `reg_scaling` says).
        reg_scaling: "none" (lambda for every row, as Hu et al. and implicit) or "frequency"
            (lambda (|I| + alpha |I_u|)^nu per user and likewise per item: Rendle et al. 2022's
            frequency-scaled regularisation in Hu et al.'s parameters).
        reg_exponent: nu of the "frequency" scaling (0 = no scaling, 1 = in proportion to the
            row's total confidence); unused with "none".
        alpha: confidence of an observed pair is 1 + alpha (unobserved pairs weigh 1). implicit's
            ``alpha`` is this confidence itself: implicit alpha = 1 + this alpha.
        iterations: alternating sweeps (users, then items, per sweep).
        cg_steps: conjugate-gradient steps per row per half-sweep, warm-started from the row's
            current vector (3 as implicit; about `factors` steps reach the exact solution).
        init_std: standard deviation of the normal initial vectors.
        seed: seed of the initial vectors.
        dtype: "float32" (default) or "float64".

    The defaults are the point chosen on validation data only: the grid of
    `benchmarks/grids/ials.yaml` (16 points) scored on 20% of each Gowalla user's training
    interactions (docs/benchmarks.md, issue 21), kept for every data set; frequency scaling
    makes lambda follow the catalogue's size.
    """

    name = "ials"

    def __init__(self, factors: Annotated[int, Range(ge=1)] = 128,
                 regularization: Annotated[float, Range(ge=0)] = 0.001,
                 reg_scaling: Literal["none", "frequency"] = "frequency",
                 reg_exponent: Annotated[float, Range(ge=0, le=1)] = 1.0,
                 alpha: Annotated[float, Range(ge=0)] = 49.0,
                 iterations: Annotated[int, Range(ge=0)] = 15,
                 cg_steps: Annotated[int, Range(ge=1)] = 3,
                 init_std: float = 0.01, seed: int = 0,
                 dtype: Literal["float32", "float64"] = "float32", device: str = "auto") -> None:
        super().__init__(device)
        self.factors = factors
        self.regularization = regularization
        self.reg_scaling = reg_scaling
        self.reg_exponent = reg_exponent
        self.alpha = alpha
        self.iterations = iterations
        self.cg_steps = cg_steps
        self.init_std = init_std
        self.seed = seed
        self.dtype = dtype

    def _regs(self, m: sp.csr_matrix, mt: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        args = (self.regularization, self.reg_scaling, self.reg_exponent, self.alpha)
        return _row_reg(m, *args), _row_reg(mt, *args)

    def _fit(self, data: Interactions) -> None:
        dtype = getattr(torch, self.dtype)
        m = self.seen_.tocsr()
        mt = m.T.tocsr()
        reg_u, reg_i = self._regs(m, mt)
        gen = torch.Generator().manual_seed(int(self.seed))
        x = torch.randn(self.n_users_ + 1, self.factors, generator=gen, dtype=dtype) * self.init_std
        y = torch.randn(self.n_items_ + 1, self.factors, generator=gen, dtype=dtype) * self.init_std
        x[-1], y[-1] = 0.0, 0.0  # the padding rows (solve_side)
        x, y = x.to(self.device_), y.to(self.device_)
        budget = max(1, BLOCK_BYTES // (self.factors * x.element_size()))
        user_blocks = _blocks(m, reg_u, self.device_, dtype, budget)
        item_blocks = _blocks(mt, reg_i, self.device_, dtype, budget)
        for _ in range(self.iterations):
            solve_side(x, y, user_blocks, float(self.alpha), self.cg_steps)
            solve_side(y, x, item_blocks, float(self.alpha), self.cg_steps)
        self.user_factors_, self.item_factors_ = x[:-1].contiguous(), y[:-1].contiguous()

    def objective(self) -> float:
        """The training loss (module docs) of the fitted factors on the training data."""
        self._check_fitted()
        m = self.seen_.tocsr()
        reg_u, reg_i = self._regs(m, m.T.tocsr())
        return ials_objective(self.user_factors_, self.item_factors_, m, float(self.alpha), reg_u, reg_i)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        x = self.user_factors_[users.to(self.user_factors_.device)]
        return (x @ self.item_factors_.T).float()

    def _state(self) -> dict[str, torch.Tensor]:
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.user_factors_, self.item_factors_ = state["user_factors"], state["item_factors"]
