"""Sparse item-item matrices for candidate sources: next-item transitions and kNN neighbours,
with vectorised row aggregation and pickle-free storage."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from recstack.data.dataset import Interactions
from recstack.data.transforms import user_sequences


def transition_matrix(data: Interactions, top_k: int = 100, window: int = 3) -> sp.csr_matrix:
    """First-order sequential model: M[i, j] ~ how often j follows i within `window` steps in a
    user's time-ordered history (closer steps weigh more: 1 / gap), row-normalised, the `top_k`
    largest per row kept."""
    if top_k < 1 or window < 1:
        raise ValueError(f"transition_matrix: top_k and window must be >= 1, got {top_k}, {window}")
    indptr, items = user_sequences(data, "timestamp" if data.timestamp is not None else "order")
    owner = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    n = data.n_items
    rows, cols, vals = [], [], []
    for gap in range(1, window + 1):  # a handful of shifted copies, each fully vectorised
        same = owner[:-gap] == owner[gap:]
        rows.append(items[:-gap][same])
        cols.append(items[gap:][same])
        vals.append(np.full(int(same.sum()), 1.0 / gap, np.float32))
    m = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    m.sum_duplicates()
    m.setdiag(0)
    m.eliminate_zeros()
    return _row_normalise(keep_top_k(m, top_k))


def keep_top_k(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """The `k` largest entries of every row (ties -> lower column), as a new CSR matrix."""
    m = m.tocsr()
    lens = np.diff(m.indptr)
    if lens.max(initial=0) <= k:
        return m.copy()
    # rank entries within each row by value: sort by (row, -value, column)
    row = np.repeat(np.arange(m.shape[0]), lens)
    order = np.lexsort((m.indices, -m.data, row))
    start = np.repeat(m.indptr[:-1], lens)
    keep_sorted = (np.arange(len(order)) - start) < k
    keep = order[keep_sorted]
    return sp.csr_matrix((m.data[keep], (row[keep], m.indices[keep])), shape=m.shape)


def dense_top_k(w: torch.Tensor, k: int, block: int = 4096) -> sp.csr_matrix:
    """The `k` largest entries of every row of a dense [n, n] matrix (e.g. EASE's weights) as
    CSR, computed in row blocks with torch.topk (no n^2 sparse intermediate)."""
    n_rows, n_cols = w.shape
    k = min(k, n_cols)
    vals, cols = [], []
    for s in range(0, n_rows, block):
        v, i = torch.topk(w[s : s + block].float(), k, dim=1)
        vals.append(v.cpu().numpy().ravel())
        cols.append(i.cpu().numpy().ravel())
    indptr = np.arange(n_rows + 1, dtype=np.int64) * k
    m = sp.csr_matrix((np.concatenate(vals), np.concatenate(cols), indptr), shape=(n_rows, n_cols))
    m.sort_indices()
    m.eliminate_zeros()
    return m


def _row_normalise(m: sp.csr_matrix) -> sp.csr_matrix:
    s = np.asarray(m.sum(axis=1)).ravel()
    s[s == 0] = 1
    return sp.csr_matrix(sp.diags(1.0 / s) @ m, dtype=np.float32)


_recent = threading.local()  # per thread: the last few aggregates (a request's stages reuse them)
# a batch of B requests reads up to 3 matrices per request (sources, coarse and fine rankers), so
# the memo holds a whole micro-batch's aggregates (~36 KB each on a 9k-item catalogue)
_RECENT_MAX = 160


def aggregate_rows(m: sp.csr_matrix, seeds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_s weights[s] * m[seeds[s], :] as a dense float32 vector [n_cols], gathered straight
    from the CSR arrays and summed with one bincount (scipy row slicing costs more than the
    arithmetic for a few rows, and sorting the gathered columns more than a dense sum).

    The result is read-only and memoised per thread for the last few (matrix, seeds, weights):
    within one request the item-to-item source and the coarse and fine rankers read the same
    history through the same matrix, so it is computed once."""
    seeds = np.asarray(seeds, np.int64)
    weights = np.asarray(weights, np.float32)
    key = (id(m), m.nnz, seeds.tobytes(), weights.tobytes())
    cache = _memo()
    hit = cache.get(key)
    if hit is not None and hit[0] is m:
        cache.move_to_end(key)
        return hit[1]
    out = _aggregate(m, seeds, weights)
    out.setflags(write=False)
    cache[key] = (m, out)  # the matrix is held so its id cannot be reused while cached
    if len(cache) > _RECENT_MAX:
        cache.popitem(last=False)
    return out


def _memo() -> OrderedDict:
    cache = getattr(_recent, "cache", None)
    if cache is None:
        cache = _recent.cache = OrderedDict()
    return cache


def aggregate_rows_batch(m: sp.csr_matrix, seeds: list[np.ndarray], weights: list[np.ndarray]) -> list[np.ndarray]:
    """`aggregate_rows` for several requests at once -> one read-only dense row per request,
    each equal to `aggregate_rows(m, seeds[j], weights[j])` bit for bit (same products, summed
    in the same order). Rows memoised earlier are reused; the others come from one gather and
    one bincount over (request, column) for the whole batch, no per-request numpy."""
    keys, out, miss = [], [], []
    seeds, weights = list(seeds), list(weights)
    cache = _memo()
    for j, (sd, w) in enumerate(zip(seeds, weights, strict=True)):
        sd, w = np.asarray(sd, np.int64), np.asarray(w, np.float32)
        seeds[j], weights[j] = sd, w
        key = (id(m), m.nnz, sd.tobytes(), w.tobytes())
        hit = cache.get(key)
        keys.append(key)
        if hit is not None and hit[0] is m:
            cache.move_to_end(key)
            out.append(hit[1])
        else:
            out.append(None)
            miss.append(j)
    if not miss:
        return out
    # chunks of ~64k gathered entries: larger chunks outgrow the CPU caches and cost more per
    # entry than they save in calls (EASE rows of 500 x 100 seeds are 50k entries per request)
    sizes = np.array([int((m.indptr[seeds[j] + 1] - m.indptr[seeds[j]]).sum()) for j in miss])
    chunk, used = [], 0
    for j, size in zip(miss, sizes.tolist(), strict=True):
        if chunk and used + size > _CHUNK_ENTRIES:
            _aggregate_chunk(m, chunk, seeds, weights, keys, out, cache)
            chunk, used = [], 0
        chunk.append(j)
        used += size
    _aggregate_chunk(m, chunk, seeds, weights, keys, out, cache)
    while len(cache) > _RECENT_MAX:
        cache.popitem(last=False)
    return out


_CHUNK_ENTRIES = 1 << 16


def _aggregate_chunk(m: sp.csr_matrix, miss: list[int], seeds: list[np.ndarray], weights: list[np.ndarray],
                     keys: list[tuple], out: list[np.ndarray | None], cache: OrderedDict) -> None:
    """Rows `miss` of a batch from one gather and one bincount over (request, column)."""
    n_cols = m.shape[1]
    sd = np.concatenate([seeds[j] for j in miss])
    w = np.concatenate([weights[j] for j in miss])
    owner = np.repeat(np.arange(len(miss)), [len(seeds[j]) for j in miss])
    starts = m.indptr[sd]
    lens = m.indptr[sd + 1] - starts
    total = int(lens.sum())
    pos = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total)
    flat = np.repeat(owner * n_cols, lens) + m.indices[pos]
    dense = np.bincount(flat, weights=m.data[pos] * np.repeat(w, lens),
                        minlength=len(miss) * n_cols).astype(np.float32).reshape(len(miss), n_cols)
    dense.setflags(write=False)
    for r, j in enumerate(miss):
        out[j] = dense[r]
        cache[keys[j]] = (m, dense[r])


def _aggregate(m: sp.csr_matrix, seeds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    starts, ends = m.indptr[seeds], m.indptr[seeds + 1]
    lens = ends - starts
    total = int(lens.sum())
    if total == 0:
        return np.zeros(m.shape[1], np.float32)
    unit = bool((weights == 1).all())  # no decay (e.g. EASE rows): skip the exact product
    if lens.min() == lens.max():
        # equal-length rows (a top-k matrix): positions by broadcasting, row-major as below
        pos = starts[:, None] + np.arange(lens[0])
        vals = m.data[pos] if unit else m.data[pos] * weights[:, None]
        return np.bincount(m.indices[pos].ravel(), weights=vals.ravel(),
                           minlength=m.shape[1]).astype(np.float32)
    # positions of every seed row's entries: one repeat of (row start - output offset)
    pos = np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total)
    vals = m.data[pos] if unit else m.data[pos] * np.repeat(weights, lens)
    return np.bincount(m.indices[pos], weights=vals, minlength=m.shape[1]).astype(np.float32)


def top_n(items: np.ndarray, scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The `n` best (items, scores), best first; ties -> lower item (deterministic).

    A partition finds the n-th best value, then only the entries at or above it are sorted."""
    if len(items) > n > 0:
        cut = len(scores) - n
        kth = np.partition(scores, cut)[cut]
        sel = np.flatnonzero(scores >= kth)  # ties at the boundary stay in; lexsort settles them
        items, scores = items[sel], scores[sel]
    order = np.lexsort((items, -scores))[:n]
    return items[order], scores[order]


def save_csr(m: sp.csr_matrix, path: str | Path) -> Path:
    """indptr / indices / data as .npy files plus shape.npy in directory `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    m = m.tocsr()
    np.save(path / "indptr.npy", m.indptr.astype(np.int64), allow_pickle=False)
    np.save(path / "indices.npy", m.indices.astype(np.int64), allow_pickle=False)
    np.save(path / "data.npy", m.data.astype(np.float32), allow_pickle=False)
    np.save(path / "shape.npy", np.asarray(m.shape, np.int64), allow_pickle=False)
    return path


def load_csr(path: str | Path) -> sp.csr_matrix:
    path = Path(path)
    arr = {n: np.load(path / f"{n}.npy", allow_pickle=False) for n in ("indptr", "indices", "data", "shape")}
    return sp.csr_matrix((arr["data"], arr["indices"], arr["indptr"]), shape=tuple(arr["shape"]))
