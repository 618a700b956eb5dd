"""Candidate sources. Each returns up to `n` eligible (items, scores), best first, or nothing
when it does not apply (e.g. a history-based source on a cold-start request); `n` grows with
a request's k beyond the pipeline's default_k (`Request.pool`)."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from recstack.index.base import VectorIndex
from recstack.models.capabilities import EncodesSequences
from recstack.pipeline.embedding import QueryEncoder
from recstack.pipeline.matrices import aggregate_rows, top_n
from recstack.pipeline.request import Request

_EMPTY = (np.zeros(0, np.int64), np.zeros(0, np.float32))


class CandidateSource(Protocol):
    """What the pipeline needs from a source."""

    name: str
    n: int

    def candidates(self, req: Request) -> tuple[np.ndarray, np.ndarray]:
        """Up to `n` eligible (item indices int64, scores float32), best first."""
        ...


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


class SequenceModelSource:
    """A sequential recommender (GRU4Rec, SASRec, BERT4Rec, ... any model that
    `EncodesSequences`) reading the request's recent items: next-item retrieval that works for
    anonymous sessions too."""

    def __init__(self, name: str, model: Any, n: int, last_n: int = 50) -> None:
        if not isinstance(model, EncodesSequences):
            raise ValueError(f"source '{name}': model '{getattr(model, 'name', model)}' does not encode "
                             "sequences (EncodesSequences); use a sequential model or a `matrix`")
        self.name, self.model, self.n, self.last_n = name, model, n, last_n

    def candidates(self, req: Request) -> tuple[np.ndarray, np.ndarray]:
        hist = req.history[-self.last_n :]
        if hist.size == 0:
            return _EMPTY
        n = req.pool(self.n)
        k = min(self.model.n_items_, n + min(req.exclude.size, n))
        items, scores = self.model.recommend_sequence_indices([hist], k=k)
        items, scores = items[0].astype(np.int64), scores[0].astype(np.float32)
        keep = req.eligible(items) & np.isfinite(scores)
        return items[keep][:n], scores[keep][:n]


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
