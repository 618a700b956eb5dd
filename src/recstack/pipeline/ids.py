"""Raw id <-> index lookups for requests: a few ids at a time, vectorised, no polars overhead."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def storable_ids(raw: np.ndarray) -> np.ndarray:
    """Raw ids as an int64 or fixed-width unicode array (both saved by np.save without pickle)."""
    raw = np.asarray(raw)
    if raw.dtype.kind in "iu":
        return raw.astype(np.int64)
    return raw.astype(str)


class IdMap:
    """Maps raw ids (ints or strings) to positions 0..n-1 of `raw` by binary search."""

    def __init__(self, raw: np.ndarray) -> None:
        self.raw = storable_ids(raw)
        self.is_int = self.raw.dtype.kind == "i"
        self._order = np.argsort(self.raw, kind="stable")
        self._sorted = self.raw[self._order]
        if len(self._sorted) > 1 and (self._sorted[1:] == self._sorted[:-1]).any():
            raise ValueError("ids must be unique")

    def __len__(self) -> int:
        return len(self.raw)

    def lookup(self, values: Sequence[Any]) -> np.ndarray:
        """Positions of `values` (int64), -1 where a value is unknown or of the wrong type."""
        n = len(values)
        if n == 0 or len(self.raw) == 0:
            return np.full(n, -1, np.int64)
        if self.is_int:
            arr, ok = _as_int64(values)
        else:
            arr, ok = np.asarray([str(v) for v in values]), np.ones(n, bool)
        pos = np.minimum(np.searchsorted(self._sorted, arr), len(self._sorted) - 1)
        hit = ok & (self._sorted[pos] == arr)
        return np.where(hit, self._order[pos], -1).astype(np.int64)

    def decode(self, idx: np.ndarray) -> list[int | str]:
        """Raw ids of positions `idx` as JSON-ready Python scalars."""
        return self.raw[np.asarray(idx, dtype=np.int64)].tolist()


def _as_int64(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """int64 array and a mask of the values that are integers (ints or integer strings)."""
    try:
        arr = np.asarray(values, dtype=np.int64)  # fast path: all ints (or integer strings)
        if not any(isinstance(v, float | bool) for v in values):
            return arr, np.ones(len(arr), bool)
    except (ValueError, TypeError, OverflowError):
        pass
    out = np.zeros(len(values), np.int64)
    ok = np.zeros(len(values), bool)
    for j, v in enumerate(values):  # slow path only for malformed input
        if isinstance(v, bool) or isinstance(v, float):
            continue
        try:
            out[j] = int(v)
            ok[j] = True
        except (ValueError, TypeError, OverflowError):
            pass
    return out, ok
