"""Beyond-accuracy metrics over a top-k recommendation matrix.

``recs`` is an integer array ``[n_users, k]`` of item indices, one row per user (as
returned in :attr:`RankingResult.topk`). Negative entries mark unfilled slots (``-1``
padding) and are ignored everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["coverage", "gini", "intra_list_diversity", "novelty", "popularity_bias"]

# Users per block in intra_list_diversity (bounds the [users, k, d] gather).
_ILD_BLOCK_ELEMENTS = 1 << 24


def _recs(recs: Any) -> np.ndarray:
    if isinstance(recs, torch.Tensor):
        recs = recs.detach().cpu().numpy()
    r = np.asarray(recs)
    if r.ndim != 2:
        raise ValueError(f"recs must be 2-D [n_users, k], got shape {r.shape}")
    if r.size and not np.issubdtype(r.dtype, np.integer):
        raise ValueError("recs must hold integer item indices")
    return r.astype(np.int64, copy=False)


def _vec(x: Any, n: int | None, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    if n is not None and v.shape[0] != n:
        raise ValueError(f"{name} has {v.shape[0]} entries, expected {n}")
    return v


def _counts(recs: np.ndarray, n_items: int) -> np.ndarray:
    valid = recs[recs >= 0]
    if valid.size and valid.max() >= n_items:
        raise ValueError("recs contains item indices >= n_items")
    return np.bincount(valid, minlength=n_items)


def coverage(recs: Any, n_items: int) -> float:
    """Catalogue coverage: fraction of the ``n_items`` items recommended at least once."""
    r = _recs(recs)
    if n_items <= 0:
        raise ValueError("n_items must be positive")
    return float((_counts(r, n_items) > 0).sum() / n_items)


def gini(recs: Any, n_items: int) -> float:
    """Gini index of how often each of the ``n_items`` items is recommended.

    0 means every item is recommended equally often; it approaches 1 when a single item
    takes all recommendations. Items never recommended count (with 0).
    ``G = sum_i (2i - n - 1) x_(i) / (n * sum x)`` over counts sorted ascending, i 1-based.
    Returns ``nan`` if ``recs`` holds no item.
    """
    r = _recs(recs)
    if n_items <= 0:
        raise ValueError("n_items must be positive")
    x = np.sort(_counts(r, n_items)).astype(np.float64)
    total = x.sum()
    if total == 0:
        return float("nan")
    i = np.arange(1, n_items + 1, dtype=np.float64)
    return float(((2.0 * i - n_items - 1.0) * x).sum() / (n_items * total))


def novelty(recs: Any, item_popularity: Any, n_users: int) -> float:
    """Mean self-information ``-log2(pop_i / n_users)`` of the recommended items.

    Averaged within each list, then over users (lists with no valid item are skipped).
    ``item_popularity`` counts the users who interacted with each item (training data);
    popularity 0 is treated as 1 so never-seen items get the maximum finite novelty
    ``log2(n_users)`` instead of infinity.
    """
    r = _recs(recs)
    pop = _vec(item_popularity, None, "item_popularity")
    if n_users <= 0:
        raise ValueError("n_users must be positive")
    valid = r >= 0
    if r[valid].size and r[valid].max() >= pop.shape[0]:
        raise ValueError("recs contains item indices outside item_popularity")
    info = -np.log2(np.maximum(pop, 1.0) / n_users)
    per_slot = np.where(valid, info[np.where(valid, r, 0)], 0.0)
    n_valid = valid.sum(1)
    keep = n_valid > 0
    if not keep.any():
        return float("nan")
    return float((per_slot.sum(1)[keep] / n_valid[keep]).mean())


def intra_list_diversity(recs: Any, item_vectors: Any) -> float:
    """Mean pairwise cosine distance ``1 - cos(v_i, v_j)`` within each list, averaged over users.

    ``item_vectors`` may be dense (numpy / torch embeddings) or a scipy sparse matrix
    (e.g. a multi-hot genre matrix). All-zero vectors have cosine 0 with everything
    (distance 1). Lists with fewer than two valid items are skipped.

    Uses ``sum_{i<j} cos_ij = (||sum_i v_i/|v_i| ||^2 - #nonzero) / 2``, so the cost is
    ``O(n_users * k * d)`` without materialising ``k x k`` similarity matrices.
    """
    r = _recs(recs)
    sparse = sp.issparse(item_vectors)
    if sparse:
        vecs = sp.csr_matrix(item_vectors, dtype=np.float64)
        norms = np.sqrt(np.asarray(vecs.multiply(vecs).sum(axis=1)).ravel())
    else:
        if isinstance(item_vectors, torch.Tensor):
            item_vectors = item_vectors.detach().cpu().numpy()
        vecs = np.asarray(item_vectors, dtype=np.float64)
        if vecs.ndim != 2:
            raise ValueError("item_vectors must be 2-D [n_items, d]")
        norms = np.linalg.norm(vecs, axis=1)
    n_items = vecs.shape[0]
    if r[r >= 0].size and r[r >= 0].max() >= n_items:
        raise ValueError("recs contains item indices outside item_vectors")
    inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0)
    if sparse:
        unit = sp.diags(inv) @ vecs
    else:
        unit = vecs * inv[:, None]
    nonzero = norms > 0

    n_users, k = r.shape
    d = vecs.shape[1]
    # Sparse gathers stay sparse, so their block size does not scale with d.
    block = max(1, _ILD_BLOCK_ELEMENTS // max(1, k * (64 if sparse else d)))
    values = []
    for u0 in range(0, n_users, block):
        rb = r[u0 : u0 + block]
        valid = rb >= 0
        items = np.where(valid, rb, 0)
        nb = rb.shape[0]
        if sparse:
            flat_rows = np.flatnonzero(valid.ravel())
            # Sum of each list's unit vectors via a [users, users*k] indicator product.
            agg = sp.csr_matrix(
                (np.ones(flat_rows.size), (flat_rows // k, flat_rows)), shape=(nb, nb * k)
            )
            s = agg @ unit[items.ravel()]
            sq = np.asarray(s.multiply(s).sum(axis=1)).ravel()
        else:
            s = (unit[items] * valid[:, :, None]).sum(1)
            sq = (s * s).sum(1)
        c = valid.sum(1).astype(np.float64)
        nz = (nonzero[items] & valid).sum(1)
        pairs = c * (c - 1.0) / 2.0
        sum_cos = (sq - nz) / 2.0
        keep = pairs > 0
        values.append(1.0 - sum_cos[keep] / pairs[keep])
    allv = np.concatenate(values) if values else np.zeros(0)
    return float(allv.mean()) if allv.size else float("nan")


def popularity_bias(
    recs: Any,
    item_popularity: Any,
    user_history: sp.spmatrix | sp.sparray | None = None,
    head_fraction: float = 0.2,
) -> dict[str, float]:
    """Popularity-bias summary of a recommendation matrix.

    Returns a dict with:

    * ``"arp"``: average recommendation popularity, the mean over users of the mean
      ``item_popularity`` of their recommended items.
    * ``"aplt"``: average percentage of long-tail items, the mean over users of the
      share of recommended items in the long tail. The *head* is the top
      ``ceil(head_fraction * n_items)`` items by popularity (ties broken by lower item
      index); every other item is tail.
    * ``"popularity_lift"`` (only if ``user_history`` is given): mean over users with a
      non-empty history of ``(ARP_u(recs) - ARP_u(history)) / ARP_u(history)`` where
      ``ARP_u(history)`` is the mean popularity of the user's history items (users whose
      history has zero mean popularity are skipped). Row ``u`` of ``user_history``
      belongs to row ``u`` of ``recs``.

    Lists with no valid item are skipped.
    """
    r = _recs(recs)
    pop = _vec(item_popularity, None, "item_popularity")
    n_items = pop.shape[0]
    if r[r >= 0].size and r[r >= 0].max() >= n_items:
        raise ValueError("recs contains item indices outside item_popularity")
    if not 0.0 <= head_fraction <= 1.0:
        raise ValueError("head_fraction must be in [0, 1]")
    valid = r >= 0
    items = np.where(valid, r, 0)
    c = valid.sum(1).astype(np.float64)
    keep = c > 0
    rec_pop = np.where(valid, pop[items], 0.0).sum(1)
    arp_u = np.divide(rec_pop, c, out=np.zeros_like(rec_pop), where=keep)

    n_head = int(np.ceil(head_fraction * n_items - 1e-9))
    head = np.zeros(n_items, dtype=bool)
    head[np.lexsort((np.arange(n_items), -pop))[:n_head]] = True
    tail_share = (valid & ~head[items]).sum(1) / np.maximum(c, 1.0)

    out = {
        "arp": float(arp_u[keep].mean()) if keep.any() else float("nan"),
        "aplt": float(tail_share[keep].mean()) if keep.any() else float("nan"),
    }
    if user_history is not None:
        hist = sp.csr_matrix(user_history)
        if hist.shape[0] != r.shape[0] or hist.shape[1] != n_items:
            raise ValueError(
                f"user_history has shape {hist.shape}, expected ({r.shape[0]}, {n_items})"
            )
        hist = hist.copy()
        hist.sum_duplicates()
        hist.eliminate_zeros()
        hist.data = np.ones_like(hist.data, dtype=np.float64)
        h_cnt = np.diff(hist.indptr).astype(np.float64)
        h_pop = hist @ pop
        h_arp = np.divide(h_pop, h_cnt, out=np.zeros_like(h_pop), where=h_cnt > 0)
        ok = keep & (h_cnt > 0) & (h_arp > 0)
        lift = (arp_u[ok] - h_arp[ok]) / h_arp[ok]
        out["popularity_lift"] = float(lift.mean()) if ok.any() else float("nan")
    return out
