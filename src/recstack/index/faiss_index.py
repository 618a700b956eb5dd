"""Faiss indexes (Flat, IVF-Flat, HNSW, IVF-PQ) behind the `VectorIndex` interface.

Saved with `faiss.write_index` (Faiss's own binary format, not pickle).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recstack.index.base import VectorIndex, as_matrix
from recstack.index.config import IndexConfig
from recstack.optional import needs

with needs("index", "Faiss indexes (recstack.index)"):
    import faiss

_FILE = "index.faiss"


def _factory_string(cfg: IndexConfig, n: int, dim: int) -> str:
    if cfg.kind == "flat":
        return "Flat"
    if cfg.kind == "hnsw":
        return f"HNSW{cfg.hnsw_m},Flat"
    nlist = _nlist(cfg, n)
    if cfg.kind == "ivf_flat":
        return f"IVF{nlist},Flat"
    if dim % cfg.pq_m:
        raise ValueError(f"ivf_pq: pq_m={cfg.pq_m} must divide the dimension {dim}")
    return f"IVF{nlist},PQ{cfg.pq_m}x{cfg.pq_bits}"


def _nlist(cfg: IndexConfig, n: int) -> int:
    # k-means wants ~39 training points per centroid; fewer cells beats a badly trained quantiser
    return max(1, min(cfg.nlist, n // 39))


class FaissIndex(VectorIndex):
    """A Faiss index built from `vectors` (ids = row numbers) with the config's parameters."""

    def __init__(self, index: faiss.Index, config: IndexConfig) -> None:
        super().__init__(config, index.d, index.ntotal)
        self.index = index
        self._apply_search_params()

    @classmethod
    def build(cls, vectors: np.ndarray, config: IndexConfig) -> FaissIndex:
        """Train (IVF / PQ) and fill a new index."""
        if config.kind == "exact":
            raise ValueError("FaissIndex: kind 'exact' is ExactIndex; use build_index()")
        v = as_matrix(vectors)
        n, dim = v.shape
        if n == 0:
            raise ValueError("cannot build an index from 0 vectors")
        metric = faiss.METRIC_INNER_PRODUCT if config.metric == "ip" else faiss.METRIC_L2
        index = faiss.index_factory(dim, _factory_string(config, n, dim), metric)
        if config.kind == "hnsw":
            index.hnsw.efConstruction = config.ef_construction  # must be set before add
        if not index.is_trained:
            if config.kind == "ivf_pq" and n < 2 ** config.pq_bits:
                raise ValueError(f"ivf_pq: {n} vectors cannot train {2 ** config.pq_bits} codes per "
                                 f"sub-quantiser; lower pq_bits or use ivf_flat")
            sample = v
            if config.train_size is not None and n > config.train_size:
                rng = np.random.default_rng(config.seed)
                sample = v[np.sort(rng.choice(n, config.train_size, replace=False))]
            index.train(sample)
        index.add(v)
        return cls(index, config)

    def set_search_params(self, **params: int) -> None:
        super().set_search_params(**params)
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        if self.config.kind == "hnsw":
            self.index.hnsw.efSearch = self.config.ef_search
        elif self.config.kind in ("ivf_flat", "ivf_pq"):
            ivf = faiss.extract_index_ivf(self.index)
            ivf.nprobe = min(self.config.nprobe, ivf.nlist)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q, k = self._check_search(queries, k)
        if self.config.kind == "hnsw" and self.index.hnsw.efSearch < k:
            self.index.hnsw.efSearch = k  # a candidate list shorter than k cannot fill k slots
        d, i = self.index.search(q, k)
        scores = d if self.config.metric == "ip" else -d
        scores = np.where(i < 0, np.float32(-np.inf), scores).astype(np.float32, copy=False)
        return scores, i.astype(np.int64, copy=False)

    def _save_payload(self, path: Path) -> list[str]:
        faiss.write_index(self.index, str(path / _FILE))
        return [_FILE]

    @classmethod
    def load_payload(cls, path: Path, config: IndexConfig) -> FaissIndex:
        return cls(faiss.read_index(str(path / _FILE)), config)
