"""Build an index of any kind from vectors, or load one saved by `VectorIndex.save`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recstack.index.base import VectorIndex, read_meta
from recstack.index.config import IndexConfig
from recstack.index.exact import ExactIndex


def _faiss_index(kind: str) -> type[VectorIndex]:
    """`FaissIndex`, imported only for Faiss kinds: the exact index works without Faiss."""
    from recstack.optional import MissingExtra

    try:
        from recstack.index.faiss_index import FaissIndex
    except MissingExtra as e:
        raise MissingExtra(e.module, e.extra, f"index kind {kind!r} (Faiss; kind='exact', "
                                              "`--index exact`, needs none)") from None
    return FaissIndex


def build_index(vectors: np.ndarray, config: IndexConfig | None = None, **options) -> VectorIndex:
    """A new index over `vectors` ([n, d]; ids are row numbers).

    `config` or keyword options (`build_index(v, kind="hnsw", ef_search=256)`) choose it.
    """
    if config is None:
        config = IndexConfig(**options)
    elif options:
        raise ValueError("pass either an IndexConfig or keyword options, not both")
    if config.kind == "exact":
        return ExactIndex(vectors, config)
    return _faiss_index(config.kind).build(vectors, config)


def load_index(path: str | Path) -> VectorIndex:
    """Load an index saved by `VectorIndex.save` (no pickle involved)."""
    path = Path(path)
    meta = read_meta(path)
    config = IndexConfig.from_dict(meta["config"])
    index = (ExactIndex if config.kind == "exact" else _faiss_index(config.kind)).load_payload(path, config)
    if (index.dim, index.ntotal) != (meta["dim"], meta["ntotal"]):
        raise ValueError(f"{path}: index holds {index.ntotal} x {index.dim} vectors, index.json "
                         f"says {meta['ntotal']} x {meta['dim']}")
    return index
