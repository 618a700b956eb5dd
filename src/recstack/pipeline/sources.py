"""Candidate sources. Each returns up to `n` eligible (items, scores), best first, or nothing
when it does not apply (e.g. a history-based source on a cold-start request); `n` grows with
a request's k beyond the pipeline's default_k (`Request.pool`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recstack.index.base import VectorIndex
from recstack.models.capabilities import EncodesSequences
from recstack.pipeline.embedding import QueryEncoder
from recstack.pipeline.fast_sequence import FastSASRec
from recstack.pipeline.matrices import aggregate_rows, aggregate_rows_batch, top_n
from recstack.pipeline.request import Request

_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.float32))


class CandidateSource(Protocol):
    """What the pipeline needs from a source."""

    name: str
    n: int

    def candidates(self, req: Request) -> tuple[np.ndarray, np.ndarray]:
        """Up to `n` eligible (item indices int64, scores float32), best first."""
        ...


Candidates = tuple[np.ndarray, np.ndarray]


def candidates_many(src: CandidateSource, reqs: Sequence[Request]) -> list[Candidates | Exception]:
    """`src.candidates` of each of `reqs`, in order: one batched call (`candidates_batch`) when
    the source has one, else one call per request. A request that fails gets its exception in
    its slot; when the batched call itself fails, the requests are retried one by one, so one
    bad request never fails the others."""
    batch = getattr(src, "candidates_batch", None)
    if batch is not None and len(reqs) > 1:
        try:
            return list(batch(reqs))
        except Exception:  # noqa: BLE001 - isolate the failing request below
            pass
    out: list[Candidates | Exception] = []
    for req in reqs:
        try:
            out.append(src.candidates(req))
        except Exception as e:  # noqa: BLE001 - reported for this request only
            out.append(e)
    return out


class AnnSource:
    """Two-tower (or any embedding model) retrieval: query vector -> vector index."""

    def __init__(self, name: str, encoder: QueryEncoder, index: VectorIndex, n: int) -> None:
        if encoder.item_table.shape != (index.ntotal, index.dim):
            raise ValueError(f"source '{name}': index holds {index.ntotal} x {index.dim} vectors, the "
                             f"model has {encoder.item_table.shape[0]} x {encoder.item_table.shape[1]}")
        self.name, self.encoder, self.index, self.n = name, encoder, index, n

    def candidates(self, req: Request) -> tuple[np.ndarray, np.ndarray]:
        q = self.encoder.query(req.user, req.history)
        if q is None:
            return _EMPTY
        n = req.pool(self.n)
        # over-fetch by the excluded count (seen items are often the nearest ones), bounded
        k = min(self.index.ntotal, n + min(req.exclude.size, n // 2))
        scores, items = self.index.search(q, k)
        items, scores = items[0], scores[0]
        keep = (items >= 0) & req.eligible(np.maximum(items, 0))
        return items[keep][:n], scores[keep][:n]

    def candidates_batch(self, reqs: Sequence[Request]) -> list[Candidates]:
        """`candidates` of several requests with one index search at the largest k asked; each
        row is cut to its own k. A row of a k-search is the prefix of the larger search's row:
        exact search ranks all items, and HNSW explores max(efSearch, k) candidates, with
        efSearch raised to the largest k once searched (`FaissIndex.search`)."""
        out: list[Candidates] = [_EMPTY] * len(reqs)
        rows: list[tuple[int, np.ndarray, int, int]] = []
        for j, req in enumerate(reqs):
            q = self.encoder.query(req.user, req.history)
            if q is None:
                continue
            n = req.pool(self.n)
            rows.append((j, q, n, min(self.index.ntotal, n + min(req.exclude.size, n // 2))))
        if not rows:
            return out
        queries = np.stack([q for _, q, _, _ in rows]).astype(np.float32, copy=False)
        scores, items = self.index.search(queries, max(k for *_, k in rows))
        for r, (j, _, n, k) in enumerate(rows):
            it, sc = items[r, :k], scores[r, :k]
            keep = (it >= 0) & reqs[j].eligible(np.maximum(it, 0))
            out[j] = (it[keep][:n], sc[keep][:n])
        return out


class NeighbourSource:
    """Neighbours of the most recent items in a sparse item-item matrix: item-to-item
    similarity (kind "item2item", e.g. ItemKNN) or next-item transitions ("sequential").
    The i-th most recent seed item weighs `decay ** i`."""

    def __init__(self, name: str, matrix: sp.csr_matrix, n: int, last_n: int = 20, decay: float = 0.9,
                 kind: str = "item2item") -> None:
        if matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"source '{name}': item-item matrix must be square, got {matrix.shape}")
        self.name, self.matrix, self.n, self.last_n, self.decay = name, matrix.tocsr(), n, last_n, decay
        self.kind = kind

    def candidates(self, req: Request) -> tuple[np.ndarray, np.ndarray]:
        seeds = req.history[-self.last_n :][::-1]  # most recent first
        if seeds.size == 0:
            return _EMPTY
        dense = aggregate_rows(self.matrix, seeds, self.decay ** np.arange(len(seeds)))
        items = np.flatnonzero(dense > 0)
        items = items[req.eligible(items)]
        return top_n(items, dense[items], req.pool(self.n))

    def candidates_batch(self, reqs: Sequence[Request]) -> list[Candidates]:
        """`candidates` of several requests; the seed rows of all of them are summed by one
        `aggregate_rows_batch` (same sums as the one-request path)."""
        out: list[Candidates] = [_EMPTY] * len(reqs)
        seeds = [req.history[-self.last_n :][::-1] for req in reqs]
        live = [j for j, sd in enumerate(seeds) if sd.size]
        if not live:
            return out
        rows = aggregate_rows_batch(self.matrix, [seeds[j] for j in live],
                                    [self.decay ** np.arange(len(seeds[j])) for j in live])
        for j, dense in zip(live, rows, strict=True):
            items = np.flatnonzero(dense > 0)
            items = items[reqs[j].eligible(items)]
            out[j] = top_n(items, dense[items], reqs[j].pool(self.n))
        return out


class SequenceModelSource:
    """A sequential recommender (GRU4Rec, SASRec, BERT4Rec, ... any model that
    `EncodesSequences`) reading the request's recent items: next-item retrieval that works for
    anonymous sessions too."""

    def __init__(self, name: str, model: Any, n: int, last_n: int = 50) -> None:
        if not isinstance(model, EncodesSequences):
            raise ValueError(f"source '{name}': model '{getattr(model, 'name', model)}' does not encode "
                             "sequences (EncodesSequences); use a sequential model or a `matrix`")
        self.name, self.model, self.n, self.last_n = name, model, n, last_n
        # SASRec: the same forward on weights prepared once for this bundle (`FastSASRec`),
        # ~5x cheaper per request; other models: their own `recommend_sequence_indices`
        self.fast = FastSASRec.try_build(model)

    def _recommend(self, hists: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.fast is not None:
            return self.fast.recommend(hists, k)
        return self.model.recommend_sequence_indices(hists, k=k)

    def candidates(self, req: Request) -> tuple[np.ndarray, np.ndarray]:
        hist = req.history[-self.last_n :]
        if hist.size == 0:
            return _EMPTY
        n = req.pool(self.n)
        k = min(self.model.n_items_, n + min(req.exclude.size, n))
        items, scores = self._recommend([hist], k)
        items, scores = items[0].astype(np.int64), scores[0].astype(np.float32)
        keep = req.eligible(items) & np.isfinite(scores)
        return items[keep][:n], scores[keep][:n]

    def candidates_batch(self, reqs: Sequence[Request]) -> list[Candidates]:
        """`candidates` of several requests through one forward pass of the sequence encoder
        over all their histories (the costly part: ~3 ms for one sequence, ~0.6 ms per sequence
        in a batch of 32 on one CPU thread) and one top-k at the largest k asked; each row is
        then cut to its own k (a top-k's prefix)."""
        out: list[Candidates] = [_EMPTY] * len(reqs)
        hists = [req.history[-self.last_n :] for req in reqs]
        live = [j for j, h in enumerate(hists) if h.size]
        if not live:
            return out
        ns = [reqs[j].pool(self.n) for j in live]
        ks = [min(self.model.n_items_, n + min(reqs[j].exclude.size, n)) for j, n in zip(live, ns, strict=True)]
        items, scores = self._recommend([hists[j] for j in live], max(ks))
        items, scores = items.astype(np.int64), scores.astype(np.float32)
        for r, (j, n, k) in enumerate(zip(live, ns, ks, strict=True)):
            it, sc = items[r, :k], scores[r, :k]
            keep = reqs[j].eligible(it) & np.isfinite(sc)
            out[j] = (it[keep][:n], sc[keep][:n])
        return out


class StaticSource:
    """A fixed ranking for everybody (most popular, freshest): precomputed once, filtered per
    request. Keeps a reserve beyond `n` so heavy users with many seen items still get `n`."""

    def __init__(self, name: str, values: np.ndarray, n: int, reserve: int = 2048) -> None:
        self.name, self.n = name, n
        items = np.arange(len(values), dtype=np.int64)
        self.items, self.scores = top_n(items, np.asarray(values, np.float32), min(len(values), n + reserve))

    def candidates(self, req: Request) -> tuple[np.ndarray, np.ndarray]:
        n = req.pool(self.n)
        keep = req.eligible(self.items)
        return self.items[keep][:n], self.scores[keep][:n]
