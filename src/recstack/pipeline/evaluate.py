"""Offline evaluation of a pipeline: one request per test user, ranking metrics on the result."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from recstack.pipeline.pipeline import Pipeline


def evaluate_pipeline(pipeline: Pipeline, test: sp.csr_matrix, ks: Sequence[int] = (10,),
                      users: np.ndarray | None = None, per_user: bool = False,
                      batch_size: int = 1) -> dict[str, Any]:
    """Mean NDCG / HR / recall at `ks` of `pipeline.run` for each user with test items, plus
    the mean per-stage latency (ms). With `per_user`, "per_user" maps each metric to its
    per-user values (aligned with the evaluated users, for paired significance tests). `test` is a users x items CSR in the bundle's indices; the
    pipeline's stored histories must not contain the test items (fit on the training part).
    `batch_size` > 1 runs the requests through `pipeline.run_batch` that many at a time (what
    the micro-batching service does; same items, stage timings are the batch's).
    """
    test = test.tocsr()
    users = np.flatnonzero(np.diff(test.indptr) > 0) if users is None else np.asarray(users)
    kmax = max(ks)
    hits = np.zeros((len(users), kmax), bool)
    n_targets = np.diff(test.indptr)[users]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    order = users.tolist()
    for start in range(0, len(order), max(1, batch_size)):  # one request per user: what the service does
        chunk = order[start : start + max(1, batch_size)]
        reqs = [pipeline.request(user_id=pipeline.assets.users.ids[u], k=kmax)[0] for u in chunk]
        results = [pipeline.run(reqs[0])] if batch_size <= 1 else pipeline.run_batch(reqs)
        for row, u, res in zip(range(start, start + len(chunk)), chunk, results, strict=True):
            if isinstance(res, Exception):
                raise res
            targets = test.indices[test.indptr[u] : test.indptr[u + 1]]
            hits[row, : len(res.items)] = np.isin(res.items, targets)
            for key, v in res.timings_ms.items():
                timings[key] = timings.get(key, 0.0) + v
    out: dict[str, Any] = ranking_metrics(hits, n_targets, ks)
    if per_user:
        out["per_user"] = ranking_metrics(hits, n_targets, ks, reduce=False)
    out.update({f"ms.{k}": v / max(1, len(users)) for k, v in timings.items()})
    out["users"] = len(users)
    out["seconds"] = time.perf_counter() - t0
    return out


def ranking_metrics(hits: np.ndarray, n_targets: np.ndarray, ks: Sequence[int],
                    reduce: bool = True) -> dict[str, Any]:
    """Binary-relevance NDCG, HR and recall at each k from a [users, K] hit matrix (means, or
    per-user arrays with `reduce=False`)."""
    disc = 1.0 / np.log2(np.arange(hits.shape[1]) + 2.0)
    ideal = np.cumsum(disc)
    out = {}
    for k in ks:
        h = hits[:, :k]
        dcg = (h * disc[:k]).sum(1)
        idcg = ideal[np.minimum(n_targets, k) - 1]
        values = {"ndcg": dcg / idcg, "hr": h.any(1).astype(float), "recall": h.sum(1) / n_targets}
        for name, v in values.items():
            out[f"{name}@{k}"] = float(v.mean()) if reduce else v
    return out
