"""Index configuration as data: one dataclass, JSON round-trip, validated on construction."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

KINDS = ("exact", "flat", "ivf_flat", "hnsw", "ivf_pq")
METRICS = ("ip", "l2")


@dataclass
class IndexConfig:
    """How to build and search a vector index.

    Args:
        kind: "exact" (torch matrix product, deterministic ties) | "flat" (Faiss brute force) |
            "ivf_flat" | "hnsw" | "ivf_pq" (Faiss approximate indexes).
        metric: "ip" (inner product; use L2-normalised vectors for cosine) | "l2". Search
            always returns scores where higher is better (for "l2": minus the squared distance).
        nlist: IVF cells (ivf_flat, ivf_pq); clipped to the number of vectors.
        nprobe: IVF cells visited per query.
        hnsw_m: HNSW graph degree (M).
        ef_construction: HNSW candidate-list size while building.
        ef_search: HNSW candidate-list size while searching (raised to k when smaller).
        pq_m: PQ sub-quantisers (must divide the dimension).
        pq_bits: bits per PQ code.
        train_size: vectors sampled to train IVF / PQ (None = all).
        seed: seed of that sample.
    """

    kind: str = "hnsw"
    metric: str = "ip"
    nlist: int = 1024
    nprobe: int = 32
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 128
    pq_m: int = 16
    pq_bits: int = 8
    train_size: int | None = 100_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"index kind '{self.kind}' unknown; use one of {', '.join(KINDS)}")
        if self.metric not in METRICS:
            raise ValueError(f"index metric '{self.metric}' unknown; use one of {', '.join(METRICS)}")
        for name in ("nlist", "nprobe", "hnsw_m", "ef_construction", "ef_search", "pq_m", "pq_bits"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"index {name} must be >= 1, got {getattr(self, name)}")
        if self.train_size is not None and self.train_size < 1:
            raise ValueError(f"index train_size must be >= 1 or None, got {self.train_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IndexConfig:
        """Inverse of `to_dict`; unknown keys are an error (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown index option(s) {sorted(unknown)}; valid: {sorted(known)}")
        return cls(**d)
