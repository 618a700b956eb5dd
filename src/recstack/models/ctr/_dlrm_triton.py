"""Triton kernels of `recstack.models.ctr.dlrm_kernels` (imported on first use on a GPU, so CPU-only
code never pays Triton's import). See that module for what each computes and why."""

import triton
import triton.language as tl


@triton.jit
def sample_tile(x_ptr, w_ptr, rows_ptr, b, ok, i, d, F: tl.constexpr, D: tl.constexpr, DOT: tl.constexpr):
    """Sample b's tile ``[NP, D]``: row 0 its vector, rows 1..F its table rows, the rest zero."""
    is_x, is_f = i == 0, (i >= 1) & (i <= F)
    r = tl.load(rows_ptr + b * F + (i - 1), mask=is_f & ok, other=0).to(tl.int64)
    tw = tl.load(w_ptr + r[:, None] * D + d[None, :], mask=(is_f & ok)[:, None], other=0.0)
    tx = tl.load(x_ptr + b * D + i[:, None] * 0 + d[None, :], mask=(is_x & ok)[:, None], other=0.0)
    return tl.where(is_x[:, None], tx.to(DOT), tw.to(DOT))


@triton.jit
def interaction_fwd_kernel(x_ptr, w_ptr, rows_ptr, out_ptr, B,
                           F: tl.constexpr, D: tl.constexpr, NP: tl.constexpr, SPP: tl.constexpr,
                           DOT: tl.constexpr):
    i = tl.arange(0, NP)  # tile row: 0 = the vector, 1..F = the fields, the rest padding
    d = tl.arange(0, D)
    ii, jj = i[:, None], i[None, :]
    tri = (jj < ii) & (ii <= F)
    out_w = D + (F + 1) * F // 2
    tri_off = D + ii * (ii - 1) // 2 + jj
    for s in range(SPP):
        b = tl.program_id(0) * SPP + s
        ok = (i * 0 + b) < B  # as vectors: masks of scalars and vectors mixed trip the interpreter
        okd = (d * 0 + b) < B
        t = sample_tile(x_ptr, w_ptr, rows_ptr, b, ok, i, d, F, D, DOT)
        gram = tl.dot(t, tl.trans(t))  # [NP, NP], fp32 accumulation
        tl.store(out_ptr + b * out_w + tri_off, gram.to(out_ptr.dtype.element_ty), mask=tri & ok[:, None])
        xv = tl.load(x_ptr + b * D + d, mask=okd)
        tl.store(out_ptr + b * out_w + d, xv, mask=okd)


@triton.jit
def interaction_bwd_kernel(g_ptr, x_ptr, w_ptr, rows_ptr, dx_ptr, de_ptr, B,
                           F: tl.constexpr, D: tl.constexpr, NP: tl.constexpr, SPP: tl.constexpr,
                           DOT: tl.constexpr):
    i = tl.arange(0, NP)
    d = tl.arange(0, D)
    ii, jj = i[:, None], i[None, :]
    is_x, is_f = i == 0, (i >= 1) & (i <= F)
    out_w = D + (F + 1) * F // 2
    lower = (jj < ii) & (ii <= F)
    lo_off = D + ii * (ii - 1) // 2 + jj
    for s in range(SPP):
        b = tl.program_id(0) * SPP + s
        ok = (i * 0 + b) < B  # as vectors: masks of scalars and vectors mixed trip the interpreter
        okd = (d * 0 + b) < B
        t = sample_tile(x_ptr, w_ptr, rows_ptr, b, ok, i, d, F, D, DOT)
        # the Gram gradient is symmetric: dZ + dZ^T (the triangle and its transpose are disjoint)
        g = tl.load(g_ptr + b * out_w + lo_off, mask=lower & ok[:, None], other=0.0).to(tl.float32)
        g = g + tl.trans(g)
        dt = tl.dot(g.to(DOT), t)  # [NP, D]
        dx = tl.sum(tl.where(is_x[:, None], dt, 0.0), axis=0)
        dx += tl.load(g_ptr + b * out_w + d, mask=okd, other=0.0).to(tl.float32)
        tl.store(dx_ptr + b * D + d, dx.to(dx_ptr.dtype.element_ty), mask=okd)
        tl.store(de_ptr + (b * F + ii - 1) * D + d[None, :], dt.to(de_ptr.dtype.element_ty),
                 mask=(is_f & ok)[:, None])


@triton.jit
def segment_sum_kernel(g_ptr, perm_ptr, seg_ptr, out_ptr, N, D: tl.constexpr, R: tl.constexpr,
                        DOT: tl.constexpr):
    p = tl.program_id(0) * R + tl.arange(0, R)
    ok = p < N
    d = tl.arange(0, D)
    seg = tl.load(seg_ptr + p, mask=ok, other=0)
    first = tl.load(seg_ptr + tl.program_id(0) * R)
    local = tl.where(ok, seg - first, R)  # sorted, so 0..R-1 within the block; R = none
    src = tl.load(perm_ptr + p, mask=ok, other=0).to(tl.int64)
    g = tl.load(g_ptr + src[:, None] * D + d[None, :], mask=ok[:, None], other=0.0)
    k = tl.arange(0, R)
    onehot = k[:, None] == local[None, :]  # [segment in block, position]
    sums = tl.dot(onehot.to(DOT), g.to(DOT))  # exact: 0/1 weights, fp32 accumulation
    last = tl.max(tl.where(ok, local, 0), axis=0)
    tl.atomic_add(out_ptr + (first + k)[:, None].to(tl.int64) * D + d[None, :], sums,
                  mask=(k <= last)[:, None])


@triton.jit
def rowwise_adagrad_kernel(g_ptr, unique_ptr, w_ptr, acc_ptr, U, lr, eps,
                            D: tl.constexpr, R: tl.constexpr):
    u = tl.program_id(0) * R + tl.arange(0, R)
    ok = u < U
    d = tl.arange(0, D)
    row = tl.load(unique_ptr + u, mask=ok, other=0).to(tl.int64)
    g = tl.load(g_ptr + u[:, None].to(tl.int64) * D + d[None, :], mask=ok[:, None], other=0.0)
    acc = tl.load(acc_ptr + row, mask=ok, other=0.0) + tl.sum(g * g, axis=1) / D
    tl.store(acc_ptr + row, acc, mask=ok)
    w_ptrs = w_ptr + row[:, None] * D + d[None, :]
    w = tl.load(w_ptrs, mask=ok[:, None], other=0.0).to(tl.float32)
    w -= g * (lr / (tl.sqrt(acc) + eps))[:, None]
    tl.store(w_ptrs, w.to(w_ptr.dtype.element_ty), mask=ok[:, None])
