"""Full-catalogue top-K ranking evaluation with deterministic tie-breaking.

Conventions used throughout :mod:`recstack.evaluation`:

* Users are ``0..n_users-1`` and items ``0..n_items-1``.
* Sets (test items, items to exclude) are ``scipy.sparse.csr_matrix`` of shape
  ``(n_users, n_items)``; a stored nonzero (after summing duplicates) marks a member.
* Ranking order is *score descending, then a tie rule that gives a model no credit for
  ties*: equal scores are ordered by a seeded hash of (user, item) (:func:`tie_keys`), a
  fair random order that is still a deterministic function of the scores and the seed,
  so two runs (or a CPU and a GPU run) agree exactly. Untied scores rank exactly as a
  plain sort would. ``ties="index"`` restores the old rule (lower item index first), which
  flatters a model wherever item ids follow popularity or first appearance.
* Items excluded from ranking get a score of ``-inf``; a top-K slot holding ``-inf``
  is never counted as a hit.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "RANKING_METRICS",
    "RankingResult",
    "ScoreFn",
    "EmbeddingScorer",
    "embedding_scorer",
    "evaluate_ranking",
    "resolve_device",
    "TIE_RULES",
    "tie_keys",
    "topk",
]

#: Metric names understood by :func:`evaluate_ranking` (and, prefixed, by the sampled protocol).
RANKING_METRICS: tuple[str, ...] = ("recall", "hr", "precision", "ndcg", "mrr", "map")

ScoreFn = Callable[[torch.Tensor], torch.Tensor]

# Rows handled per fix-up batch in `topk` (elements); bounds the temporary int64 keys.
_FIXUP_ELEMENTS = 1 << 22


@dataclass
class RankingResult:
    """Per-user metric values of one evaluation run.

    Attributes:
        users: Evaluated user indices, ``int64`` array of shape ``[n]``.
        per_user: Metric name (e.g. ``"ndcg@10"``) -> ``float64`` array aligned with ``users``.
        protocol: ``"full"`` for full-catalogue ranking, ``"sampled(N,strategy)"`` otherwise.
        ties: The tie rule used: ``"random(seed=S)"`` or ``"index"`` (lower index first).
        topk: ``[n, max K]`` recommended item indices when requested, else ``None``.
            Slots that could not be filled (fewer than K rankable items) hold ``-1``.
        topk_scores: ``[n, max K]`` float32 scores of ``topk`` (``-inf`` in unfilled slots)
            when requested, else ``None``.
        seconds: Wall-clock duration of the evaluation.
    """

    users: np.ndarray
    per_user: dict[str, np.ndarray]
    protocol: str = "full"
    ties: str = "random(seed=0)"
    topk: np.ndarray | None = None
    seconds: float = 0.0
    ks: tuple[int, ...] = field(default_factory=tuple)
    topk_scores: np.ndarray | None = None

    def summary(self) -> dict[str, float]:
        """Mean of every metric over the evaluated users (``nan`` when no user was evaluated)."""
        return {
            name: (float(values.mean()) if values.size else float("nan"))
            for name, values in self.per_user.items()
        }

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v:.4f}" for k, v in self.summary().items())
        return (f"RankingResult(protocol={self.protocol!r}, ties={self.ties!r}, "
                f"n_users={len(self)}, {shown})")


def check_ties(ties: str, tie_seed: int) -> str:
    """Validate a tie rule; return its label (``"random(seed=S)"`` or ``"index"``)."""
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    if isinstance(tie_seed, bool) or not isinstance(tie_seed, int | np.integer):
        raise ValueError(f"tie_seed must be an int, got {tie_seed!r}")
    return f"random(seed={int(tie_seed)})" if ties == "random" else "index"


def resolve_device(device: str | torch.device) -> torch.device:
    """Map ``"auto"`` to ``cuda`` when available (else ``cpu``); give ``cuda`` an explicit index."""
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        # Pin the index so it compares equal to the device of tensors created on it.
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


#: Tie rules of :func:`evaluate_ranking` and :func:`~recstack.evaluation.evaluate_sampled`:
#: ``"random"`` (default) orders equal scores by a seeded hash of (user, item), so a model gets
#: no credit for how items happen to be numbered; ``"index"`` puts the lower item index first
#: (the rule before 2026-12; optimistic wherever ids follow popularity or first appearance).
TIE_RULES: tuple[str, ...] = ("random", "index")

_M32 = 0xFFFFFFFF
# Multipliers of a 32-bit avalanche hash (Wellons' "lowbias32" finaliser) and of its input.
_H1, _H2 = 0x7FEB352D, 0x846CA68B
_ITEM_MUL, _USER_MUL, _SEED_MUL = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D
_OFFSET = 0x632BE5AB  # keeps (user 0, item 0, seed 0) off the hash's fixed point 0


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for int64 ``0 <= x < 2**32`` without int64 overflow (so CPU and CUDA
    agree by construction): the constant is split into 16-bit halves."""
    hi, lo = c >> 16, c & 0xFFFF
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def tie_keys(users: torch.Tensor, items: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Seeded pseudo-random priorities that order equal scores: the larger key ranks first.

    ``key = h(seed, user, item)``, a 32-bit hash:
    ``x = (item * 0x9E3779B1 + ((user * 0x85EBCA77) ^ (seed * 0xC2B2AE3D)) + 0x632BE5AB)
    mod 2**32``, then ``x ^= x >> 16; x *= 0x7FEB352D; x ^= x >> 15; x *= 0x846CA68B;
    x ^= x >> 16`` (all mod 2**32). For one user (and seed) the map item -> key
    is a bijection (the item enters through an odd multiplier mod 2**32, then invertible
    avalanche steps), so keys never tie and the order is total. Integer arithmetic only, so
    the keys are bit-identical on every device.

    Args:
        users: Global user indices, broadcastable against ``items`` (e.g. ``[b, 1]``).
        items: Item indices (``< 2**32``), e.g. ``[b, m]`` or ``[1, n]``.
        seed: Tie seed; another seed is another (equally fair) tie order.

    Returns:
        ``int64`` keys in ``[0, 2**32)`` of the broadcast shape.
    """
    items = items.to(torch.int64)
    users = users.to(device=items.device, dtype=torch.int64)
    base = _mul32(users & _M32, _USER_MUL) ^ (((seed & _M32) * _SEED_MUL) & _M32)
    x = (_mul32(items, _ITEM_MUL) + base + _OFFSET) & _M32
    x = x ^ (x >> 16)
    x = _mul32(x, _H1)
    x = x ^ (x >> 15)
    x = _mul32(x, _H2)
    return x ^ (x >> 16)


def _order_keys(
    items: torch.Tensor, n: int, tie_users: torch.Tensor | None, tie_seed: int
) -> torch.Tensor:
    """Priority among equal scores (larger first): the hash of :func:`tie_keys`, or, without
    ``tie_users``, the reversed index (lower index first)."""
    if tie_users is None:
        return (n - 1) - items.to(torch.int64)
    return tie_keys(tie_users.reshape(-1, 1), items, tie_seed)


def topk(
    scores: torch.Tensor,
    k: int,
    *,
    tie_users: torch.Tensor | None = None,
    tie_seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic row-wise top-k: score descending, then a fixed tie rule.

    Tie rule: with ``tie_users`` (the global user index of every row), equal scores are
    ordered by :func:`tie_keys` of ``(tie_seed, user, item)``: a fair random order, the same
    for a user whatever the batch or device. Without it, the lower item index comes first
    (what ``recommend`` uses: a stable, explainable order for serving).

    Both the *set* of selected items and their *order* follow the rule, so the result does
    not depend on the backend's (unspecified) tie handling of :func:`torch.topk`, and untied
    scores give exactly the plain top-k. ``-inf`` scores (excluded items) always rank after
    finite ones; when a row has fewer than ``k`` finite scores, the trailing slots hold
    ``-inf`` values. NaN is not supported (``torch.topk`` ranks it first).

    Args:
        scores: ``[b, n]`` floating tensor.
        k: Number of items per row; clipped to ``n``.
        tie_users: Optional ``[b]`` user indices: switches ties to the seeded random rule.
        tie_seed: Seed of the random tie rule.

    Returns:
        ``(values, indices)``, both ``[b, min(k, n)]``.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be 2-D [batch, n_items], got shape {tuple(scores.shape)}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    b, n = scores.shape
    if tie_users is not None and tie_users.numel() != b:
        raise ValueError(f"tie_users has {tie_users.numel()} entries for {b} rows")
    k = min(int(k), n)
    if k == 0 or b == 0:
        empty = torch.empty((b, k), dtype=torch.long, device=scores.device)
        return scores.new_empty((b, k)), empty

    # Asking for one extra element tells us, for free, whether the k-th value is tied
    # with an item left outside: the (k+1)-th largest is the best score not chosen.
    kk = min(k + 1, n)
    vals, idx = torch.topk(scores, kk, dim=1, largest=True, sorted=True)
    boundary = vals[:, k - 1] == vals[:, k] if kk > k else torch.zeros_like(vals[:, 0], dtype=torch.bool)
    vals, idx = vals[:, :k], idx[:, :k]
    # torch.topk's sorted output is already right wherever the chosen scores are all distinct
    # and none equals the best one left out; only rows with a tie need the rule (one host
    # sync per call, as the old rule had; the tie work is skipped entirely without ties).
    inside = (vals[:, 1:] == vals[:, :-1]).any(dim=1) if k > 1 else torch.zeros_like(boundary)
    rows = (boundary | inside).nonzero().squeeze(1)
    if rows.numel():
        r_users = None if tie_users is None else tie_users[rows]
        r_idx = idx[rows]
        b_rows = boundary[rows].nonzero().squeeze(1)
        if b_rows.numel():
            r_idx[b_rows] = _fix_boundary_ties(
                scores, rows[b_rows], vals[rows[b_rows], k - 1], k,
                None if r_users is None else r_users[b_rows], tie_seed,
            )
        # Order the chosen set by (score desc, tie key desc): sort by the key, then a stable
        # sort by score keeps the key order inside every group of equal scores.
        key = _order_keys(r_idx, n, r_users, tie_seed)
        r_idx = r_idx.gather(1, key.argsort(dim=1, descending=True))
        r_vals = scores[rows.unsqueeze(1), r_idx]
        r_vals, order = r_vals.sort(dim=1, descending=True, stable=True)
        vals, idx = vals.clone(), idx.clone()
        vals[rows], idx[rows] = r_vals, r_idx.gather(1, order)
    return vals, idx


def _fix_boundary_ties(
    scores: torch.Tensor,
    rows: torch.Tensor,
    kth: torch.Tensor,
    k: int,
    tie_users: torch.Tensor | None,
    tie_seed: int,
) -> torch.Tensor:
    """Exact top-k *set* for rows whose k-th score is tied with an unselected item.

    Everything strictly above the k-th value is in; the remaining slots go to the items
    equal to it with the largest tie keys. Encoded as one integer key per item (above: 2**32,
    tied: the tie key, below: -1) so one more ``torch.topk`` on the affected rows answers.
    """
    n = scores.shape[1]
    dev = scores.device
    above = torch.tensor(1 << 32, device=dev, dtype=torch.int64)
    below = torch.tensor(-1, device=dev, dtype=torch.int64)
    all_items = torch.arange(n, device=dev, dtype=torch.int64).unsqueeze(0)
    out = []
    step = max(1, _FIXUP_ELEMENTS // n)
    for start in range(0, rows.numel(), step):
        r = rows[start : start + step]
        sub = scores[r]
        t = kth[start : start + step].unsqueeze(1)
        users = None if tie_users is None else tie_users[start : start + step]
        tied = _order_keys(all_items, n, users, tie_seed)
        key = torch.where(sub > t, above, torch.where(sub == t, tied, below))
        out.append(torch.topk(key, k, dim=1).indices)
    return torch.cat(out)


class EmbeddingScorer:
    """Dot-product scorer ``users -> user_emb[users] @ item_emb.T`` (see :func:`embedding_scorer`).

    Supports ``out=`` so :func:`evaluate_ranking` can reuse one score buffer across
    chunks: on CPU a fresh multi-hundred-MB allocation per chunk costs page faults that
    rival the GEMM itself.
    """

    accepts_out = True

    def __init__(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> None:
        if user_emb.dim() != 2 or item_emb.dim() != 2 or user_emb.shape[1] != item_emb.shape[1]:
            raise ValueError(
                f"expected [n_users, d] and [n_items, d], got {tuple(user_emb.shape)} and "
                f"{tuple(item_emb.shape)}"
            )
        self.user_emb = user_emb.detach()
        self.item_emb = item_emb.detach()
        self.n_items = int(item_emb.shape[0])
        self._cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def _on(self, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if dev not in self._cache:
            u = self.user_emb.to(device=dev, dtype=torch.float32)
            # Pre-transposed contiguous copy so every chunk is a plain GEMM.
            i_t = self.item_emb.to(device=dev, dtype=torch.float32).t().contiguous()
            self._cache[dev] = (u, i_t)
        return self._cache[dev]

    def __call__(self, users: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Scores ``[len(users), n_items]`` on ``users.device`` (written into ``out`` if given)."""
        u, i_t = self._on(users.device)
        if out is None:
            return u[users] @ i_t
        return torch.mm(u[users], i_t, out=out)


def embedding_scorer(user_emb: torch.Tensor, item_emb: torch.Tensor) -> EmbeddingScorer:
    """Dot-product ``score_fn`` for :func:`evaluate_ranking`.

    The embeddings are copied to the device of the first ``users`` tensor seen (once per
    device, not per call) and kept as ``float32``.

    Args:
        user_emb: ``[n_users, d]`` user vectors.
        item_emb: ``[n_items, d]`` item vectors.

    Returns:
        A callable ``score_fn(users) -> [len(users), n_items]`` scores on ``users.device``.
    """
    return EmbeddingScorer(user_emb, item_emb)


def _binarize(
    m: sp.spmatrix | sp.sparray, name: str, shape: tuple[int, int] | None
) -> sp.csr_matrix:
    """Canonical binary CSR copy: duplicates summed, zeros dropped, indices sorted, data=1."""
    if not sp.issparse(m):
        raise TypeError(f"{name} must be a scipy.sparse matrix, got {type(m).__name__}")
    out = sp.csr_matrix(m, copy=True)
    if shape is not None and out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}, expected {shape}")
    out.sum_duplicates()
    out.eliminate_zeros()
    out.sort_indices()
    out.data = np.ones(out.nnz, dtype=np.int8)
    out.indptr = out.indptr.astype(np.int64, copy=False)
    out.indices = out.indices.astype(np.int64, copy=False)
    return out


def _check_ks_metrics(
    ks: Sequence[int], metrics: Sequence[str]
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    ks_t = tuple(sorted({int(k) for k in ks}))
    if not ks_t or ks_t[0] < 1:
        raise ValueError(f"ks must be a non-empty collection of positive ints, got {ks!r}")
    unknown = [m for m in metrics if m not in RANKING_METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown metrics {unknown!r}; choose from {RANKING_METRICS}")
    return ks_t, tuple(dict.fromkeys(metrics))


def _select_users(test: sp.csr_matrix, users: np.ndarray | Sequence[int] | None) -> np.ndarray:
    n_test = np.diff(test.indptr)
    if users is None:
        return np.flatnonzero(n_test > 0).astype(np.int64)
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    if users.size and (users.min() < 0 or users.max() >= test.shape[0]):
        raise ValueError("users contains indices outside 0..n_users-1")
    empty = int((n_test[users] == 0).sum())
    if empty:
        # Recall/NDCG/MAP are undefined without targets; refusing beats silently
        # returning zeros (which would drag means down) or NaNs.
        raise ValueError(f"{empty} of the given users have no test items; drop them first")
    return users


def _rank_metrics(
    hits: torch.Tensor,
    n_targets: torch.Tensor,
    ks: tuple[int, ...],
    metrics: tuple[str, ...],
) -> dict[str, torch.Tensor]:
    """Binary-relevance metrics from a ``[b, K]`` hit matrix (rank order) and ``|T|`` per row.

    Small tensors only, so float64 is affordable and keeps hand-computed values exact.
    """
    b, width = hits.shape
    max_k = max(ks)
    h = hits.to(torch.float64)
    if width < max_k:  # fewer items than K: the missing slots are misses
        h = torch.cat([h, h.new_zeros((b, max_k - width))], dim=1)
    dev = h.device
    ranks = torch.arange(1, max_k + 1, device=dev, dtype=torch.float64)
    cum_hits = h.cumsum(1)
    disc = 1.0 / torch.log2(ranks + 1.0)
    n_t = n_targets.to(device=dev, dtype=torch.float64)
    n_t_long = n_targets.to(device=dev, dtype=torch.long)
    out: dict[str, torch.Tensor] = {}
    if "ndcg" in metrics:
        dcg = (h * disc).cumsum(1)
        idcg_table = disc.cumsum(0)
    if "map" in metrics:
        ap = (h * cum_hits / ranks).cumsum(1)
    if "mrr" in metrics:
        any_hit = cum_hits[:, -1] > 0
        first = torch.where(
            any_hit, h.argmax(1).to(torch.float64) + 1.0, torch.full_like(n_t, math.inf)
        )
    for k in ks:
        hk = cum_hits[:, k - 1]
        ideal = torch.clamp(n_t_long, max=k)
        for m in metrics:
            key = f"{m}@{k}"
            if m == "recall":
                out[key] = hk / n_t
            elif m == "hr":
                out[key] = (hk > 0).to(torch.float64)
            elif m == "precision":
                out[key] = hk / k
            elif m == "ndcg":
                out[key] = dcg[:, k - 1] / idcg_table[ideal - 1]
            elif m == "mrr":
                out[key] = torch.where(first <= k, 1.0 / first, torch.zeros_like(first))
            elif m == "map":
                out[key] = ap[:, k - 1] / ideal.to(torch.float64)
    return out


def evaluate_ranking(
    score_fn: ScoreFn,
    test: sp.spmatrix | sp.sparray,
    exclude: sp.spmatrix | sp.sparray | None = None,
    ks: Sequence[int] = (5, 10, 20),
    metrics: Sequence[str] = RANKING_METRICS,
    users: np.ndarray | Sequence[int] | None = None,
    device: str | torch.device = "auto",
    memory_budget_mb: float = 512,
    progress: bool = False,
    return_topk: bool = False,
    ties: str = "random",
    tie_seed: int = 0,
) -> RankingResult:
    """Full-catalogue top-K evaluation (every item is a candidate).

    For each evaluated user all items are scored, the ``exclude`` items (typically the
    training interactions) are set to ``-inf``, one deterministic :func:`topk` at
    ``max(ks)`` is taken and all metrics at all K are derived from it. Equal scores are
    ordered by ``ties``: ``"random"`` (default) by :func:`tie_keys` of
    ``(tie_seed, user, item)``, so a tie earns a model its chance value, identically on CPU
    and CUDA and for any chunking; ``"index"``: lower item index first.

    Metrics (binary relevance, ``T`` = the user's test items, hits counted in the top K):
    ``recall = hits/|T|``, ``hr = 1[hits > 0]``, ``precision = hits/K``,
    ``ndcg = DCG/IDCG`` with ``DCG = sum_{hit ranks r} 1/log2(r+1)`` and IDCG over
    ``min(|T|, K)`` ideal hits, ``mrr = 1/rank of the first hit`` (0 if none), and
    ``map = sum_{hit ranks r} precision@r / min(|T|, K)``.

    A test item that is also in ``exclude`` for the same user is still a target but is
    scored ``-inf`` and so can never be hit (a warning is emitted once per call when that
    overlap exists). This is the usual protocol; remove such pairs from ``exclude`` if you
    want them rankable.

    Args:
        score_fn: ``score_fn(users)`` with ``users`` a ``LongTensor`` on ``device``,
            returning ``[len(users), n_items]`` floating scores on that device. The returned
            tensor may be modified in place (views are copied first). NaN is an error.
            A scorer with a true ``accepts_out`` attribute is called as
            ``score_fn(users, out=buffer)`` with one float32 buffer reused across chunks.
        test: ``[n_users, n_items]`` CSR of test items.
        exclude: Optional CSR of the same shape of items never to recommend.
        ks: Cut-offs.
        metrics: Subset of :data:`RANKING_METRICS`.
        users: Users to evaluate (each must have test items); default: all users with
            at least one test item, ascending.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
        memory_budget_mb: Users are processed in chunks of ``c`` with
            ``c * n_items * 4 bytes <= budget`` (at least one user per chunk; fractions
            of a MB are allowed, e.g. to force chunking in tests).
        progress: Print a progress line to stderr.
        return_topk: Keep the ``[n_users, max(ks)]`` recommended item indices (``topk``)
            and their scores (``topk_scores``).
        ties: Tie rule, one of :data:`TIE_RULES`.
        tie_seed: Seed of the ``"random"`` tie rule.

    Returns:
        A :class:`RankingResult` with keys ``"{metric}@{k}"``, ``protocol="full"`` and the
        tie rule's label in ``ties``.
    """
    t0 = time.perf_counter()
    ks_t, metrics_t = _check_ks_metrics(ks, metrics)
    tie_label = check_ties(ties, tie_seed)
    if not sp.issparse(test):
        raise TypeError(f"test must be a scipy.sparse matrix, got {type(test).__name__}")
    test_b = _binarize(test, "test", None)
    n_users, n_items = test_b.shape
    excl_b = _binarize(exclude, "exclude", test_b.shape) if exclude is not None else None
    eval_users = _select_users(test_b, users)
    dev = resolve_device(device)
    max_k = max(ks_t)
    n_eval = eval_users.shape[0]

    # Slice both matrices to the evaluated users once (scipy row gather, C speed); from
    # here on row r of every structure is eval_users[r].
    test_sub = test_b[eval_users]
    if excl_b is not None:
        excl_sub = excl_b[eval_users]
        if test_sub.multiply(excl_sub).nnz:
            warnings.warn(
                "some test items are also in `exclude` for the same user; they stay targets "
                "but can never be recommended, so metrics are capped below 1",
                UserWarning,
                stacklevel=2,
            )

    def to_dev(csr: sp.csr_matrix) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        # indptr stays on the host so chunk boundaries cost no device sync; per-nonzero
        # row ids are precomputed so no chunk needs a repeat_interleave.
        rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), np.diff(csr.indptr))
        return (
            csr.indptr,
            torch.from_numpy(rows).to(dev),
            torch.from_numpy(csr.indices).to(dev),
        )

    t_ptr, t_rows, t_cols = to_dev(test_sub)
    if excl_b is not None:
        e_ptr, e_rows, e_cols = to_dev(excl_sub)
    n_targets_all = torch.from_numpy(np.diff(test_sub.indptr)).to(dev)
    users_dev = torch.from_numpy(eval_users).to(dev)

    chunk = max(1, int(memory_budget_mb * 2**20 // (max(n_items, 1) * 4)))
    parts: dict[str, list[torch.Tensor]] = {}
    topk_parts: list[torch.Tensor] = []
    topk_score_parts: list[torch.Tensor] = []
    neg_inf = float("-inf")
    # Scorers that can write into a caller buffer (see EmbeddingScorer) get one reused
    # buffer for all chunks.
    buffer = None
    if getattr(score_fn, "accepts_out", False) and n_eval:
        buffer = torch.empty((min(chunk, n_eval), n_items), device=dev, dtype=torch.float32)

    with torch.no_grad():
        for start in range(0, n_eval, chunk):
            stop = min(start + chunk, n_eval)
            b = stop - start
            if buffer is not None:
                scores = score_fn(users_dev[start:stop], out=buffer[:b])
            else:
                scores = score_fn(users_dev[start:stop])
            if not isinstance(scores, torch.Tensor) or scores.shape != (b, n_items):
                shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
                raise ValueError(f"score_fn must return [{b}, {n_items}] scores, got {shape}")
            if scores.device != dev:
                raise ValueError(f"score_fn returned scores on {scores.device}, expected {dev}")
            if not scores.is_floating_point():
                scores = scores.float()
            elif buffer is not None and scores.data_ptr() == buffer.data_ptr():
                pass  # our own scratch buffer: free to overwrite
            elif scores._base is not None or not scores.is_contiguous():
                # A view may alias the caller's cache; never write -inf into it.
                scores = scores.contiguous() if scores._base is None else scores.clone()

            if excl_b is not None:
                a, z = int(e_ptr[start]), int(e_ptr[stop])
                if z > a:
                    flat = (e_rows[a:z] - start) * n_items + e_cols[a:z]
                    scores.view(-1).index_fill_(0, flat, neg_inf)

            tie_users = users_dev[start:stop] if ties == "random" else None
            vals, idx = topk(scores, max_k, tie_users=tie_users, tie_seed=tie_seed)
            del scores
            if torch.isnan(vals).any():  # topk ranks NaN first, so any NaN shows up here
                raise ValueError("score_fn returned NaN scores")

            # Hits by binary search: (row, item) keys of the chunk's test set are sorted
            # because CSR rows are consecutive and column indices sorted within a row.
            a, z = int(t_ptr[start]), int(t_ptr[stop])
            keys = (t_rows[a:z] - start) * n_items + t_cols[a:z]
            local = torch.arange(b, device=dev, dtype=torch.long).unsqueeze(1)
            query = local * n_items + idx
            if keys.numel():
                pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
                hits = (keys[pos] == query) & (vals != neg_inf)
            else:
                hits = torch.zeros_like(idx, dtype=torch.bool)

            for key, v in _rank_metrics(hits, n_targets_all[start:stop], ks_t, metrics_t).items():
                parts.setdefault(key, []).append(v)
            if return_topk:
                # -inf slots hold excluded items only as filler; never report them.
                idx = idx.masked_fill(vals == neg_inf, -1)
                vals_out = vals.float()
                if idx.shape[1] < max_k:
                    pad = idx.new_full((b, max_k - idx.shape[1]), -1)
                    idx = torch.cat([idx, pad], dim=1)
                    vals_out = torch.cat([vals_out, vals_out.new_full(pad.shape, neg_inf)], dim=1)
                topk_parts.append(idx)
                topk_score_parts.append(vals_out)
            if progress:
                sys.stderr.write(f"\revaluate_ranking: {stop}/{n_eval} users")
                sys.stderr.flush()
    if progress:
        sys.stderr.write("\n")

    per_user = {
        f"{m}@{k}": (
            torch.cat(parts[f"{m}@{k}"]).cpu().numpy() if n_eval else np.zeros(0, dtype=np.float64)
        )
        for k in ks_t
        for m in metrics_t
    }
    recs = rec_scores = None
    if return_topk:
        recs = (
            torch.cat(topk_parts).cpu().numpy()
            if topk_parts
            else np.zeros((0, max_k), dtype=np.int64)
        )
        rec_scores = (
            torch.cat(topk_score_parts).cpu().numpy()
            if topk_score_parts
            else np.zeros((0, max_k), dtype=np.float32)
        )
    return RankingResult(
        users=eval_users,
        per_user=per_user,
        protocol="full",
        ties=tie_label,
        topk=recs,
        seconds=time.perf_counter() - t0,
        ks=ks_t,
        topk_scores=rec_scores,
    )
