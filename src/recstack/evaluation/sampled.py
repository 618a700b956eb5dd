"""Sampled-negative ranking evaluation (the "rank 1 positive among N negatives" protocol).

Sampled metrics are known to disagree with full-catalogue metrics, sometimes even on
which model is better (Krichene & Rendle, 2020). They are therefore only produced on
request, by :func:`evaluate_sampled`, and every key carries a ``sampled_`` prefix so a
sampled number can never be mistaken for a full-ranking one.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from recstack.evaluation.ranking import (
    RANKING_METRICS,
    RankingResult,
    _binarize,
    _check_ks_metrics,
    _select_users,
    check_ties,
    resolve_device,
    tie_keys,
)

__all__ = ["PairScoreFn", "embedding_pair_scorer", "evaluate_sampled", "sample_negatives"]

PairScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Test pairs whose negatives are drawn together. Fixed (not derived from the memory
# budget) so that the random stream, hence the result, does not depend on the budget.
_SAMPLE_BLOCK = 8192
# Vectorised rejection rounds before falling back to exact per-row sampling.
_MAX_ROUNDS = 64


def embedding_pair_scorer(user_emb: torch.Tensor, item_emb: torch.Tensor) -> PairScoreFn:
    """Dot-product ``pair_score_fn`` for :func:`evaluate_sampled`.

    Embeddings are copied (as float32) to the device of the first call's tensors, once.
    """
    if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.shape[1] != item_emb.shape[1]:
        raise ValueError(
            f"expected [n_users, d] and [n_items, d], got {tuple(user_emb.shape)} and "
            f"{tuple(item_emb.shape)}"
        )
    cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def pair_score_fn(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dev = users.device
        if dev not in cache:
            cache[dev] = (
                user_emb.detach().to(device=dev, dtype=torch.float32),
                item_emb.detach().to(device=dev, dtype=torch.float32),
            )
        u, i = cache[dev]
        m, c = items.shape
        # index_select is a plain row gather (faster than advanced indexing on CPU);
        # [m, c, d] x [m, d, 1] -> [m, c]
        cand = i.index_select(0, items.reshape(-1)).view(m, c, -1)
        return torch.bmm(cand, u.index_select(0, users).unsqueeze(2)).squeeze(2)

    return pair_score_fn


def _row_duplicates(cand: np.ndarray) -> np.ndarray:
    """Mask of entries equal to an earlier entry of the same row (first occurrence kept)."""
    order = np.argsort(cand, axis=1, kind="stable")
    srt = np.take_along_axis(cand, order, axis=1)
    dup_sorted = np.zeros_like(cand, dtype=bool)
    dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
    dup = np.zeros_like(dup_sorted)
    np.put_along_axis(dup, order, dup_sorted, axis=1)
    return dup


def sample_negatives(
    rows: np.ndarray,
    forbidden: sp.csr_matrix,
    n_negatives: int,
    rng: np.random.Generator,
    probs: np.ndarray | None = None,
) -> np.ndarray:
    """Draw ``n_negatives`` distinct items per entry of ``rows``, avoiding ``forbidden[row]``.

    Vectorised rejection: draw everything, redraw the forbidden/duplicate slots, repeat;
    rows still unresolved after a few rounds (tiny allowed pools) are sampled exactly.

    Args:
        rows: ``[m]`` row indices into ``forbidden``.
        forbidden: Binary CSR ``[n_rows, n_items]`` with sorted indices.
        n_negatives: Negatives per row.
        rng: Random generator (the only source of randomness).
        probs: Optional sampling distribution over items (sums to 1); uniform if ``None``.

    Returns:
        ``[m, n_negatives]`` int64 item indices.
    """
    n_items = forbidden.shape[1]
    m = rows.shape[0]
    keys = (
        np.repeat(np.arange(forbidden.shape[0], dtype=np.int64), np.diff(forbidden.indptr))
        * n_items
        + forbidden.indices
    )
    cdf = None
    if probs is not None:
        cdf = np.cumsum(probs)
        cdf /= cdf[-1]

    def draw(size: int) -> np.ndarray:
        if cdf is None:
            return rng.integers(0, n_items, size, dtype=np.int64)
        # side="right" never selects a zero-probability item (its cdf step is empty).
        out = np.searchsorted(cdf, rng.random(size), side="right")
        return np.minimum(out, n_items - 1).astype(np.int64)

    def bad_mask(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        q = r[:, None] * n_items + c
        if keys.size:
            pos = np.minimum(np.searchsorted(keys, q), keys.size - 1)
            hit = keys[pos] == q
        else:
            hit = np.zeros(q.shape, dtype=bool)
        return hit | _row_duplicates(c)

    cand = draw(m * n_negatives).reshape(m, n_negatives)
    todo = np.arange(m)
    for _ in range(_MAX_ROUNDS):
        sub = cand[todo]
        bad = bad_mask(rows[todo], sub)
        still = bad.any(1)
        if not still.any():
            todo = todo[:0]
            break
        todo, sub, bad = todo[still], sub[still], bad[still]
        sub[bad] = draw(int(bad.sum()))
        cand[todo] = sub
    else:
        # Last redraw was never checked: recheck and keep only rows still failing.
        if todo.size:
            todo = todo[bad_mask(rows[todo], cand[todo]).any(1)]

    if todo.size:
        # Nearly exhausted pools: exact sampling from the allowed items, row by row
        # (only ever a handful of rows).
        support = np.arange(n_items) if probs is None else np.flatnonzero(probs > 0)
        for t in todo:
            r = rows[t]
            banned = forbidden.indices[forbidden.indptr[r] : forbidden.indptr[r + 1]]
            allowed = np.setdiff1d(support, banned, assume_unique=True)
            p = None
            if probs is not None:
                p = probs[allowed] / probs[allowed].sum()
            cand[t] = rng.choice(allowed, n_negatives, replace=False, p=p)
    return cand


def _single_target_metrics(
    rank: torch.Tensor, ks: tuple[int, ...], metrics: tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """The full-ranking metric definitions specialised to ``|T| = 1`` (one relevant item).

    With a single target at ``rank``: hits@K = 1[rank <= K], so recall = hr = hit,
    precision = hit/K, ndcg = hit/log2(rank+1) (IDCG = 1), and mrr = map = hit/rank.
    """
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hit = (rank <= k).to(torch.float64)
        for m in metrics:
            if m in ("recall", "hr"):
                v = hit
            elif m == "precision":
                v = hit / k
            elif m == "ndcg":
                v = hit / torch.log2(rank + 1.0)
            else:  # mrr, map
                v = hit / rank
            out[f"sampled_{m}@{k}"] = v
    return out


def evaluate_sampled(
    pair_score_fn: PairScoreFn,
    test: sp.spmatrix | sp.sparray,
    exclude: sp.spmatrix | sp.sparray | None = None,
    n_negatives: int = 100,
    sampling: str = "uniform",
    item_popularity: np.ndarray | None = None,
    ks: Sequence[int] = (5, 10, 20),
    metrics: Sequence[str] = RANKING_METRICS,
    seed: int = 0,
    users: np.ndarray | Sequence[int] | None = None,
    device: str | torch.device = "auto",
    memory_budget_mb: float = 512,
    progress: bool = False,
    ties: str = "random",
    tie_seed: int = 0,
) -> RankingResult:
    """Rank every test item against ``n_negatives`` sampled negatives.

    For each test pair ``(u, i)``, ``n_negatives`` *distinct* items are drawn that are in
    neither ``u``'s test set nor ``u``'s ``exclude`` set; the candidate list is
    ``[i, neg_1, ..., neg_N]``. The positive's rank follows the same order as full ranking
    (score descending, then the ``ties`` rule: by default a seeded hash of (user, item), so a
    negative tied with the positive is ahead of it half the time, never by its index) and the
    metrics of
    :func:`~recstack.evaluation.evaluate_ranking` are computed with ``|T| = 1``; a user's
    value is the mean over their test items. With ``K >= N + 1`` every instance is a hit.

    Args:
        pair_score_fn: ``pair_score_fn(users LongTensor[m], items LongTensor[m, c])`` ->
            ``[m, c]`` scores on the same device. Column 0 holds the positive.
        test: ``[n_users, n_items]`` CSR of test items.
        exclude: Optional CSR of items never used as negatives (e.g. training items).
        n_negatives: Negatives per test item.
        sampling: ``"uniform"`` or ``"popularity"`` (probability proportional to
            ``item_popularity``; items with popularity 0 are never drawn).
        item_popularity: ``[n_items]`` counts for popularity sampling; defaults to the
            column counts of ``exclude`` (the training interactions).
        ks: Cut-offs.
        metrics: Subset of :data:`~recstack.evaluation.RANKING_METRICS`.
        seed: Seed of the negative sampler (numpy ``default_rng``; device independent).
        users: Users to evaluate (each must have test items); default all with test items.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        memory_budget_mb: Bounds the candidate scores scored per call.
        progress: Print a progress line to stderr.
        ties: ``"random"`` (default) or ``"index"``, as in
            :func:`~recstack.evaluation.evaluate_ranking`.
        tie_seed: Seed of the random tie rule.

    Returns:
        :class:`~recstack.evaluation.RankingResult` with keys ``"sampled_{metric}@{k}"``
        and ``protocol == f"sampled({n_negatives},{sampling})"``.
    """
    t0 = time.perf_counter()
    ks_t, metrics_t = _check_ks_metrics(ks, metrics)
    tie_label = check_ties(ties, tie_seed)
    if sampling not in ("uniform", "popularity"):
        raise ValueError(f"sampling must be 'uniform' or 'popularity', got {sampling!r}")
    if int(n_negatives) < 1:
        raise ValueError(f"n_negatives must be >= 1, got {n_negatives}")
    n_negatives = int(n_negatives)
    test_b = _binarize(test, "test", None)
    n_users, n_items = test_b.shape
    excl_b = _binarize(exclude, "exclude", test_b.shape) if exclude is not None else None
    eval_users = _select_users(test_b, users)
    dev = resolve_device(device)

    probs = None
    if sampling == "popularity":
        if item_popularity is None:
            if excl_b is None:
                raise ValueError("popularity sampling needs item_popularity or an exclude matrix")
            pop = np.asarray(excl_b.sum(axis=0), dtype=np.float64).ravel()
        else:
            pop = np.asarray(item_popularity, dtype=np.float64).reshape(-1)
            if pop.shape[0] != n_items:
                raise ValueError(f"item_popularity has {pop.shape[0]} entries, expected {n_items}")
            if (pop < 0).any() or not np.isfinite(pop).all():
                raise ValueError("item_popularity must be finite and non-negative")
        if pop.sum() <= 0:
            raise ValueError("item_popularity is all zero")
        probs = pop / pop.sum()

    test_sub = test_b[eval_users]
    forbidden = test_sub if excl_b is None else (test_sub + excl_b[eval_users])
    forbidden = _binarize(forbidden, "forbidden", None)

    # Refuse up front instead of looping forever when a user has too few allowed items.
    if probs is None:
        pool = n_items - np.diff(forbidden.indptr)
    else:
        support = probs > 0
        f_rows = np.repeat(np.arange(forbidden.shape[0]), np.diff(forbidden.indptr))
        banned_in_support = np.bincount(
            f_rows, weights=support[forbidden.indices], minlength=forbidden.shape[0]
        )
        pool = int(support.sum()) - banned_in_support
    short = int((pool < n_negatives).sum())
    if short:
        raise ValueError(
            f"{short} users have fewer than n_negatives={n_negatives} items that can be "
            "sampled as negatives"
        )

    rows = np.repeat(np.arange(test_sub.shape[0], dtype=np.int64), np.diff(test_sub.indptr))
    positives = test_sub.indices.astype(np.int64)
    m = rows.shape[0]
    rng = np.random.default_rng(seed)
    c = n_negatives + 1
    # Scores, item ids and comparison temporaries: ~16 bytes per candidate.
    score_batch = max(1, int(memory_budget_mb * 2**20 // (c * 16)))

    parts: dict[str, list[np.ndarray]] = {}
    users_dev_all = torch.from_numpy(eval_users).to(dev)
    with torch.no_grad():
        for b0 in range(0, m, _SAMPLE_BLOCK):
            b1 = min(b0 + _SAMPLE_BLOCK, m)
            negs = sample_negatives(rows[b0:b1], forbidden, n_negatives, rng, probs)
            cand = np.concatenate([positives[b0:b1, None], negs], axis=1)
            for s0 in range(0, b1 - b0, score_batch):
                s1 = min(s0 + score_batch, b1 - b0)
                items = torch.from_numpy(cand[s0:s1]).to(dev)
                r = torch.from_numpy(rows[b0 + s0 : b0 + s1]).to(dev)
                scores = pair_score_fn(users_dev_all[r], items)
                if not isinstance(scores, torch.Tensor) or scores.shape != items.shape:
                    got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
                    raise ValueError(
                        f"pair_score_fn must return {tuple(items.shape)} scores, got {got}"
                    )
                if torch.isnan(scores).any():
                    raise ValueError("pair_score_fn returned NaN scores")
                pos_s, neg_s = scores[:, :1], scores[:, 1:]
                # Same total order as full ranking: score desc, then the tie rule's key desc.
                if ties == "random":
                    key = tie_keys(users_dev_all[r].unsqueeze(1), items, tie_seed)
                else:
                    key = -items
                ahead = (neg_s > pos_s) | ((neg_s == pos_s) & (key[:, 1:] > key[:, :1]))
                rank = ahead.sum(1).to(torch.float64) + 1.0  # 1-based rank of the positive
                for key, v in _single_target_metrics(rank, ks_t, metrics_t).items():
                    parts.setdefault(key, []).append(v.cpu().numpy())
            if progress:
                sys.stderr.write(f"\revaluate_sampled: {b1}/{m} test items")
                sys.stderr.flush()
    if progress:
        sys.stderr.write("\n")

    n_eval = eval_users.shape[0]
    counts = np.bincount(rows, minlength=n_eval).astype(np.float64)
    per_user: dict[str, np.ndarray] = {}
    for k in ks_t:
        for mname in metrics_t:
            key = f"sampled_{mname}@{k}"
            inst = np.concatenate(parts[key]) if key in parts else np.zeros(0)
            # Per-user mean over that user's test items, so users weigh equally.
            per_user[key] = np.bincount(rows, weights=inst, minlength=n_eval) / np.maximum(
                counts, 1.0
            )
    return RankingResult(
        users=eval_users,
        per_user=per_user,
        protocol=f"sampled({n_negatives},{sampling})",
        ties=tie_label,
        topk=None,
        seconds=time.perf_counter() - t0,
        ks=ks_t,
    )
