"""The one interface every index implements: build from vectors, search, save, load.

    index = build_index(item_vectors, IndexConfig(kind="hnsw"))
    scores, ids = index.search(queries, k=100)   # [nq, k] each; higher score = better
    index.save("out/index"); load_index("out/index")

Missing result slots (fewer than k reachable vectors) hold id -1 and score -inf. Files are
JSON + safetensors / Faiss's own binary format, never pickle.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from recstack.index.config import IndexConfig

CONFIG_FILE = "index.json"
FORMAT = "recstack-index"
FORMAT_VERSION = 1


def as_matrix(x: np.ndarray, dim: int | None = None, what: str = "vectors") -> np.ndarray:
    """`x` as a C-contiguous float32 [n, d] matrix (a single vector becomes one row), checked."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{what} must be a [n, d] matrix, got shape {a.shape}")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{what} have dimension {a.shape[1]}, the index has {dim}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} contain NaN or infinite values")
    return np.ascontiguousarray(a)


class VectorIndex(ABC):
    """Nearest-neighbour search over a fixed set of vectors with ids 0..ntotal-1."""

    def __init__(self, config: IndexConfig, dim: int, ntotal: int) -> None:
        self.config, self.dim, self.ntotal = config, int(dim), int(ntotal)

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each query -> (scores float32 [nq, k], ids int64 [nq, k]), best first."""

    @abstractmethod
    def _save_payload(self, path: Path) -> list[str]:
        """Write the index data into directory `path`; return the file names written."""

    def set_search_params(self, **params: int) -> None:
        """Change search-time knobs (ef_search, nprobe) without rebuilding."""
        allowed = {"ef_search", "nprobe"}
        bad = set(params) - allowed
        if bad:
            raise ValueError(f"unknown search parameter(s) {sorted(bad)}; valid: {sorted(allowed)}")
        for k, v in params.items():
            if int(v) < 1:
                raise ValueError(f"{k} must be >= 1, got {v}")
            setattr(self.config, k, int(v))

    def _check_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, int]:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        return as_matrix(queries, self.dim, "queries"), int(k)

    def save(self, path: str | Path) -> Path:
        """Write `index.json` and the index data into directory `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        files = self._save_payload(path)
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": self.config.to_dict(),
                "dim": self.dim, "ntotal": self.ntotal, "files": files}
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        return path

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.config.kind!r}, dim={self.dim}, ntotal={self.ntotal})"


def read_meta(path: str | Path) -> dict:
    """The `index.json` of a saved index, checked."""
    path = Path(path)
    f = path / CONFIG_FILE
    if not f.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_FILE}; not a saved recstack index")
    meta = json.loads(f.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{f}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{f}: format version {meta['format_version']} is newer than this "
                         f"recstack understands ({FORMAT_VERSION})")
    return meta
