"""Fused kernels for the DLRM training step on a `RowWiseAdagradTable` (Triton on CUDA, plain
PyTorch elsewhere; both compute the same function and the tests hold them to each other).

The unfused step moves every gathered row several times: the lookup writes ``[B, F, D]`` rows,
a concatenation with the bottom MLP's output copies them, the Gram product reads them, its
backward writes ``[B, F+1, D]`` gradients, the embedding backward sorts the batch's indices to
sum duplicates into the distinct rows, and the row-wise optimiser then reads and writes those
rows in five more passes. Three kernels do the same work with each row moved about once:

* `gather_interaction`: per sample, the bottom-MLP vector and the ``F`` table rows are loaded
  straight from the table into one on-chip tile, their pairwise dot products (one small matrix
  product) are written as the strict lower triangle next to the vector: the top MLP's input
  ``[B, D + (F+1)F/2]``; nothing ``[B, F, D]``-sized is stored. The backward recomputes the tile
  and writes the rows' gradients ``[B*F, D]`` and the vector's gradient.
* `segment_sum`: the rows' gradients summed per distinct table row, reading them in the row
  order of a sort made ahead of the step (`sort_rows`, prefetchable with the next batch): a
  block of sorted positions is reduced by one one-hot matrix product and added to its segments
  (atomics only where a segment spans blocks).
* `rowwise_adagrad_update`: ``s_r += mean(g_r^2); w_r -= lr g_r / (sqrt(s_r) + eps)`` for every
  distinct row in one pass over weights and accumulators.
"""

from __future__ import annotations

import importlib.util
import os
from typing import NamedTuple

import torch
from torch import Tensor

# Triton ships with CUDA builds of PyTorch; CPU-only installs run the PyTorch versions. The kernels
# themselves live in `_dlrm_triton`, imported on first use.
HAVE_TRITON = importlib.util.find_spec("triton") is not None


class SortedRows(NamedTuple):
    """A batch's table rows and their sort: what the fused backward needs, computable one step
    ahead (it reads no weights).

    rows: ``[B, F]`` table rows (codes + field offsets), int64.
    perm: ``[B*F]`` positions of the flattened rows in ascending row order.
    segment: ``[B*F]`` distinct-row index of each sorted position (0, 0, 1, 2, 2, ...), int32.
    unique: ``[U]`` the distinct rows, ascending.
    """

    rows: Tensor
    perm: Tensor
    segment: Tensor
    unique: Tensor


def sort_rows(rows: Tensor, n_rows: int) -> SortedRows:
    """Sort a batch's ``[B, F]`` table rows of a table of `n_rows` rows (int32 keys when they
    fit: a radix sort on half the bits). Syncs the host once, for the distinct-row count."""
    flat = rows.reshape(-1)
    keys = flat.to(torch.int32) if n_rows < 2**31 else flat
    sorted_keys, perm = torch.sort(keys)
    start = torch.ones_like(sorted_keys, dtype=torch.bool)
    start[1:] = sorted_keys[1:] != sorted_keys[:-1]
    segment = torch.cumsum(start, 0, dtype=torch.int32) - 1
    n_unique = int(segment[-1]) + 1 if len(segment) else 0  # host sync
    unique = torch.empty(n_unique, dtype=torch.int64, device=rows.device)
    unique[segment.long()] = sorted_keys.long()  # duplicates write the same value
    return SortedRows(rows, perm, segment, unique)


# TRITON_INTERPRET=1 runs the kernels on CPU tensors through Triton's interpreter (kernel tests
# without a GPU)
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def _use_triton(*tensors: Tensor) -> bool:
    return HAVE_TRITON and (_INTERPRET or all(t.is_cuda for t in tensors))


def _kernels():
    from recstack.models.ctr import _dlrm_triton

    return _dlrm_triton


def _dot_dtype():
    """bf16 tiles on the GPU; fp32 under the interpreter, whose bf16 products are wrong."""
    import triton.language as tl

    return tl.float32 if _INTERPRET else tl.bfloat16


def _pow2(n: int) -> bool:
    return n >= 16 and n & (n - 1) == 0


# ---- interaction ---------------------------------------------------------------------------------
def interaction_width(n_fields: int, dim: int) -> int:
    """Width of the top MLP's input: the vector + the strict lower triangle of F+1 vectors."""
    return dim + (n_fields + 1) * n_fields // 2


def _tile_torch(x: Tensor, weight: Tensor, rows: Tensor) -> Tensor:
    return torch.cat([x.unsqueeze(1), weight[rows].to(x.dtype)], 1)  # [B, F+1, D]


def _tril(n: int, device: torch.device) -> Tensor:
    li, lj = torch.tril_indices(n, n, offset=-1, device=device)
    return li * n + lj  # row-major: (1,0), (2,0), (2,1), (3,0), ...


def interaction_forward_torch(x: Tensor, weight: Tensor, rows: Tensor) -> Tensor:
    """Reference: ``[x, dots of (x, w[rows_1..F])]`` with fp32 accumulation, in x's dtype."""
    t = _tile_torch(x, weight, rows)
    n = t.shape[1]
    z = torch.bmm(t.float(), t.float().transpose(1, 2)).flatten(1)[:, _tril(n, x.device)]
    return torch.cat([x, z.to(x.dtype)], 1)


def interaction_backward_torch(grad: Tensor, x: Tensor, weight: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Reference backward: ``(dx [B, D], d rows [B*F, D])`` from the output's gradient."""
    t = _tile_torch(x, weight, rows)
    b, n, d = t.shape
    g = torch.zeros(b, n * n, dtype=torch.float32, device=x.device)
    g[:, _tril(n, x.device)] = grad[:, d:].float()
    g = g.view(b, n, n)
    dt = torch.bmm((g + g.transpose(1, 2)).to(t.dtype).float(), t.float())
    dx = (dt[:, 0] + grad[:, :d].float()).to(x.dtype)
    return dx, dt[:, 1:].reshape(-1, d).to(x.dtype)


def _interaction_shapes(x: Tensor, rows: Tensor) -> tuple[int, int, int, int]:
    b, d = x.shape
    f = rows.shape[1]
    np_ = max(16, 1 << f.bit_length())  # F + 1 rows, padded to a power of two
    return b, f, d, np_


_SPP = 4  # samples per program: amortises the index arithmetic, keeps 16K+ programs in flight


def interaction_forward(x: Tensor, weight: Tensor, rows: Tensor) -> Tensor:
    """``[B, D]`` vectors, the ``[R, D]`` table and ``[B, F]`` rows -> ``[B, D + (F+1)F/2]``:
    the vector followed by the pairwise dot products of (vector, rows) (strict lower triangle,
    row-major), in x's dtype."""
    if not (_use_triton(x, weight, rows) and _pow2(x.shape[1]) and x.dtype == torch.bfloat16):
        return interaction_forward_torch(x, weight, rows)
    b, f, d, np_ = _interaction_shapes(x, rows)
    x = x.contiguous()
    out = torch.empty(b, interaction_width(f, d), dtype=x.dtype, device=x.device)
    _kernels().interaction_fwd_kernel[(-(-b // _SPP),)](x, weight, rows.contiguous(), out, b,
                                                      F=f, D=d, NP=np_, SPP=_SPP, DOT=_dot_dtype(), num_warps=4)
    return out


def interaction_backward(grad: Tensor, x: Tensor, weight: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Gradients of `interaction_forward`: ``(dx [B, D], d rows [B*F, D])``, the rows' gradients
    in the flattened ``[B, F]`` order and in x's dtype: bf16 under autocast, the precision the
    plain path's cast of the looked-up rows to bf16 gives them too, and half the bytes for the
    duplicate merge whatever the table's dtype (its sums are fp32)."""
    if not (_use_triton(grad, x, weight, rows) and _pow2(x.shape[1]) and x.dtype == torch.bfloat16):
        return interaction_backward_torch(grad, x, weight, rows)
    b, f, d, np_ = _interaction_shapes(x, rows)
    dx = torch.empty_like(x)
    de = torch.empty(b * f, d, dtype=x.dtype, device=x.device)
    _kernels().interaction_bwd_kernel[(-(-b // _SPP),)](grad.contiguous(), x.contiguous(), weight, rows.contiguous(),
                                                      dx, de, b, F=f, D=d, NP=np_, SPP=_SPP, DOT=_dot_dtype(), num_warps=4)
    return dx, de


class GatherInteraction(torch.autograd.Function):
    """`interaction_forward` as an autograd op. The table is not a leaf of the graph: the rows'
    gradient goes to ``sink(d_rows)`` (the table's fused optimiser), x's flows back normally."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, rows: Tensor, sink) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x, rows)
        ctx.weight, ctx.sink = weight, sink  # the weight changes only in the step after backward
        return interaction_forward(x, weight, rows)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: D102
        x, rows = ctx.saved_tensors
        dx, d_rows = interaction_backward(grad, x, ctx.weight, rows)
        ctx.sink(d_rows)
        return dx, None, None, None


# ---- duplicate merge + row-wise Adagrad ----------------------------------------------------------
def segment_sum(grad_rows: Tensor, sorted_rows: SortedRows) -> Tensor:
    """``[B*F, D]`` row gradients -> ``[U, D]`` fp32 sums per distinct row (`sorted_rows.unique`)."""
    n_unique, d = len(sorted_rows.unique), grad_rows.shape[1]
    out = torch.zeros(n_unique, d, dtype=torch.float32, device=grad_rows.device)
    n = grad_rows.shape[0]
    if n == 0:
        return out
    if _use_triton(grad_rows) and _pow2(d) and grad_rows.dtype in (torch.bfloat16, torch.float16):
        r = 64
        _kernels().segment_sum_kernel[(-(-n // r),)](grad_rows.contiguous(), sorted_rows.perm, sorted_rows.segment,
                                                   out, n, D=d, R=r, DOT=_dot_dtype(), num_warps=4)
        return out
    return out.index_add_(0, sorted_rows.segment.long(), grad_rows[sorted_rows.perm].float())


def rowwise_adagrad_update(weight: Tensor, accumulator: Tensor, unique: Tensor, grad: Tensor,
                           lr: float, eps: float, distinct: bool = True) -> None:
    """Row-wise Adagrad, the one implementation recstack has (the fused table's `step` and the
    `optim.RowWiseAdagrad` optimiser both call it). In place, for rows `unique` with summed
    gradients `grad` [U, D]: ``s_r += mean(g_r^2); w_r -= lr * g_r / (sqrt(s_r) + eps)``
    (arithmetic in fp32).

    `distinct=False` admits repeated rows whose repeats carry zero gradients (the fixed-shape,
    sync-free padding of `optim.coalesce_rows`): the update is then written with index_add,
    where a zero row adds nothing. The Triton kernel (CUDA) needs distinct rows."""
    if len(unique) == 0:
        return
    d = weight.shape[1]
    if distinct and _use_triton(weight, accumulator, unique, grad) and _pow2(d):
        r = 32
        _kernels().rowwise_adagrad_kernel[(-(-len(unique) // r),)](grad, unique, weight, accumulator, len(unique),
                                                                 float(lr), float(eps), D=d, R=r, num_warps=4)
        return
    grad = grad.float()
    accumulator.index_add_(0, unique, grad.square().mean(1))
    scale = lr / (accumulator.index_select(0, unique).sqrt() + eps)
    weight.index_add_(0, unique, (grad * -scale.unsqueeze(1)).to(weight.dtype))
