"""Stable hashing of values: the same bucket on every machine, process and version (in the
data layer: generated data and the feature system both use it).

Python's ``hash`` is salted per process and polars' hash may change between releases, so a
hashed feature fitted today could land in other buckets at serving time. Here every value is
hashed through its UTF-8 text with 64-bit FNV-1a, then avalanched with the splitmix64
finaliser (FNV's low bits alone are weak under a modulus). All of it is vectorised: one numpy
pass per byte position, never one Python call per row.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection of uint64 that spreads every input bit over the output."""
    x = np.asarray(x, np.uint64).copy()
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def _utf8_buffers(s: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets [n+1], bytes, null mask) of a series' values as UTF-8 text (arrow layout)."""
    arr = s.cast(pl.String).to_arrow()
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_string())
    bufs = arr.buffers()
    off = np.frombuffer(bufs[1], np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    nulls = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)
    return off, data, nulls


def fnv1a64(s: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """64-bit FNV-1a of each value's UTF-8 text -> (hashes uint64 [n], null mask [n]).

    Integers hash like their decimal text (``5`` and ``"5"`` agree), so a column read as text
    at serving time lands in the buckets it had when it was read as numbers at training time.
    """
    off, data, nulls = _utf8_buffers(s)
    starts, lens = off[:-1], np.diff(off)
    h = np.full(len(lens), FNV_OFFSET, np.uint64)
    with np.errstate(over="ignore"):
        for j in range(int(lens.max()) if len(lens) else 0):
            rows = np.flatnonzero(lens > j)
            h[rows] = (h[rows] ^ data[starts[rows] + j].astype(np.uint64)) * FNV_PRIME
    return h, nulls


def hash_bucket(s: pl.Series, buckets: int, seed: int = 0) -> np.ndarray:
    """Bucket codes int64: null -> 0, a value -> 1 + hash(value) mod `buckets`."""
    h, nulls = fnv1a64(s)
    with np.errstate(over="ignore"):
        h = mix64(h ^ mix64(np.full(1, seed, np.uint64)))
    codes = (h % np.uint64(buckets)).astype(np.int64) + 1
    codes[nulls] = 0
    return codes


def combine_codes(columns: list[np.ndarray], buckets: int) -> np.ndarray:
    """Hash a tuple of integer codes (one array per crossed field) into 1..buckets."""
    h = np.zeros(len(columns[0]), np.uint64)
    with np.errstate(over="ignore"):
        for c in columns:
            h = mix64(h * np.uint64(0x9E3779B97F4A7C15) + c.astype(np.uint64))
    return (h % np.uint64(buckets)).astype(np.int64) + 1
