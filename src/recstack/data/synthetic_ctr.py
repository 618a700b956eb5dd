"""A synthetic Criteo-like click log: any size, seeded, with planted structure.

    gen = SyntheticCTR(SyntheticCTRConfig(seed=0))
    arrays = gen.sample(100_000, chunk=0)         # label [n], dense [n, 13] (NaN), sparse ranks [n, 26]
    frame = gen.frame(100_000, chunk=0)           # the same rows with Criteo columns (I*, C* hex)
    write_criteo("synthetic.tsv", gen.frames(45_000_000, chunk_rows=1_000_000))

* Categories follow truncated power laws (Zipf-like: a few values dominate, a long tail is rare),
  one per field with Criteo-like cardinalities capped at `max_cardinality`.
* The label is Bernoulli(sigmoid(logit)) with a planted logit: per-category weights (first
  order), dot products of per-category vectors on `n_pairs` chosen field pairs (second order:
  what FM / DeepFM / DLRM can learn and LR cannot), effects of the dense features including a
  dense x categorical interaction, and a bias calibrated to `base_rate`.
* Every weight is a hash of (seed, field, category): no tables are stored, so the generator's
  memory does not grow with cardinality or rows, and chunk k is the same whatever the chunk size
  of other chunks (rows are seeded by (seed, chunk)).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from recstack.data.criteo import CAT_COLUMNS, INT_COLUMNS, LABEL
from recstack.data.hashing import mix64

# Cardinalities of the 26 categorical fields of the Criteo Kaggle (display advertising) data.
CRITEO_CARDINALITIES = (1460, 583, 10131227, 2202608, 305, 24, 12517, 633, 3, 93145, 5683, 8351593,
                        3194, 27, 14992, 5461306, 10, 5652, 2173, 4, 7046547, 18, 15, 286181, 105,
                        142572)
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


@dataclass
class SyntheticCTRConfig:
    """Shape and difficulty of the synthetic log."""

    n_dense: int = 13
    cardinalities: tuple[int, ...] = CRITEO_CARDINALITIES
    max_cardinality: int = 1_000_000
    zipf: float = 1.05  # power-law exponent of category frequencies
    n_pairs: int = 10  # planted pairwise field interactions
    pair_dim: int = 4
    first_order_std: float = 0.6
    pair_strength: float = 0.9
    dense_missing: float = 0.2
    cat_missing: float = 0.03
    base_rate: float = 0.25
    seed: int = 0
    pairs: tuple[tuple[int, int], ...] = field(default=())  # chosen from the seed when empty


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _key(*parts: int) -> np.uint64:
    """A 64-bit key from small integers (seed, role, field)."""
    h = np.zeros(1, np.uint64)
    with np.errstate(over="ignore"):
        for p in parts:
            h = mix64(h * _GOLDEN + np.uint64(p))
    return h[0]


def _hash(keys: np.ndarray | np.uint64, ranks: np.ndarray) -> np.ndarray:
    """One splitmix pass: hash of (key, rank) for broadcast keys and ranks -> uint64."""
    with np.errstate(over="ignore"):
        return mix64(np.asarray(keys, np.uint64) ^ (ranks.astype(np.uint64) * _GOLDEN))


def _weight(h: np.ndarray, part: int = 0, bits: int = 32) -> np.ndarray:
    """`bits` bits of a hash (slice `part`) -> a unit-variance weight, uniform on [-sqrt 3, sqrt 3]."""
    u = ((h >> np.uint64(part * bits)) & np.uint64((1 << bits) - 1)).astype(np.float64)
    return np.sqrt(3.0) * (2.0 * (u + 0.5) / float(1 << bits) - 1.0)


class SyntheticCTR:
    """The generator (see the module docstring)."""

    def __init__(self, config: SyntheticCTRConfig | None = None) -> None:
        self.config = c = config or SyntheticCTRConfig()
        self.cards = np.minimum(np.asarray(c.cardinalities, np.int64), c.max_cardinality)
        rng = np.random.default_rng([c.seed, 7])
        n_cat = len(self.cards)
        if c.pairs:
            self.pairs = np.asarray(c.pairs, np.int64)
        else:
            all_pairs = np.array([(a, b) for a in range(n_cat) for b in range(a + 1, n_cat)])
            self.pairs = all_pairs[rng.choice(len(all_pairs), min(c.n_pairs, len(all_pairs)), replace=False)]
        self.dense_mu = rng.uniform(0.5, 3.0, c.n_dense)
        self.dense_sigma = rng.uniform(0.5, 1.5, c.n_dense)
        self.dense_coef = rng.normal(0, 0.3, c.n_dense)
        f = np.arange(n_cat)
        self.first_keys = np.array([_key(c.seed, 1, i) for i in f], np.uint64)
        self.pair_keys = np.array([[_key(c.seed, 2, a), _key(c.seed, 3, b)] for a, b in self.pairs], np.uint64)
        self.dense_cat_key = _key(c.seed, 4, 0)
        self.bias = 0.0
        self.bias = self._calibrate()

    # ---- sampling ----------------------------------------------------------------------------------
    def _ranks(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """[n, F] category ranks from truncated power laws (inverse CDF of the continuous law)."""
        a = self.config.zipf
        h = (self.cards + 1).astype(np.float64)
        u = rng.random((n, len(self.cards)))
        if abs(a - 1.0) < 1e-9:
            x = np.exp(u * np.log(h))
        else:
            x = ((h ** (1 - a) - 1) * u + 1) ** (1 / (1 - a))
        return np.minimum(np.floor(x).astype(np.int64) - 1, self.cards - 1).clip(0)

    def _logit(self, ranks: np.ndarray, z: np.ndarray, present: np.ndarray) -> np.ndarray:
        c = self.config
        logit = np.full(len(ranks), self.bias)
        logit += c.first_order_std * (_weight(_hash(self.first_keys, ranks)) * present).sum(1)
        if c.pair_dim > 4:
            raise ValueError("pair_dim must be <= 4 (four 16-bit weights per hash)")
        for (a, b), (ka, kb) in zip(self.pairs, self.pair_keys, strict=True):
            ha, hb = _hash(ka, ranks[:, a]), _hash(kb, ranks[:, b])
            dot = sum(_weight(ha, k, 16) * _weight(hb, k, 16) for k in range(c.pair_dim))
            logit += c.pair_strength * (present[:, a] & present[:, b]) * dot / np.sqrt(c.pair_dim)
        zz = np.nan_to_num(z)
        logit += zz @ self.dense_coef
        if z.shape[1] >= 3:
            logit += 0.5 * np.tanh(zz[:, 1] * zz[:, 2])  # a dense x dense interaction
            logit += 0.5 * zz[:, 0] * _weight(_hash(self.dense_cat_key, ranks[:, 0]))  # dense x categorical
        return logit

    def _calibrate(self) -> float:
        """Bias so that the mean click rate is `base_rate` (on a fixed pilot sample)."""
        rng = np.random.default_rng([self.config.seed, 99])
        ranks = self._ranks(rng, 20000)
        z = rng.standard_normal((20000, self.config.n_dense))
        logit = self._logit(ranks, z, np.ones_like(ranks, bool))
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            rate = (1 / (1 + np.exp(-(logit + mid)))).mean()
            lo, hi = (mid, hi) if rate < self.config.base_rate else (lo, mid)
        return (lo + hi) / 2

    def sample(self, n: int, chunk: int = 0) -> dict[str, np.ndarray]:
        """Rows of chunk `chunk`: label int8 [n], dense float32 [n, D] (integer counts, NaN =
        missing), sparse int64 [n, F] (category ranks, -1 = missing), logit float64 [n]."""
        c = self.config
        rng = np.random.default_rng([c.seed, 1, chunk])
        ranks = self._ranks(rng, n)
        present = rng.random(ranks.shape) >= c.cat_missing
        z = rng.standard_normal((n, c.n_dense))
        logit = self._logit(ranks, z, present)
        label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)
        dense = np.floor(np.exp(self.dense_mu + self.dense_sigma * z)) - 1  # counts >= -1, heavy tail
        dense[rng.random(dense.shape) < c.dense_missing] = np.nan
        return {"label": label, "dense": dense.astype(np.float32),
                "sparse": np.where(present, ranks, -1), "logit": logit}

    def frame(self, n: int, chunk: int = 0) -> pl.DataFrame:
        """Chunk `chunk` as a Criteo frame: label, I1..I13 (Int64, null = missing), C1..C26
        (8 hex digits of a scrambled id, null = missing)."""
        s = self.sample(n, chunk)
        cols = [pl.Series(LABEL, s["label"])]
        for j, name in enumerate(INT_COLUMNS[: self.config.n_dense]):
            x = s["dense"][:, j]
            cols.append(pl.Series(name, np.nan_to_num(x).astype(np.int64)).set(
                pl.Series(np.isnan(x)), None) if np.isnan(x).any() else pl.Series(name, x.astype(np.int64)))
        for f, name in enumerate(CAT_COLUMNS[: len(self.cards)]):
            r = s["sparse"][:, f]
            ids = _hash(_key(self.config.seed, 5, f), r) & np.uint64(0xFFFFFFFF)  # scrambled, stable
            shifts = np.arange(7, -1, -1, dtype=np.uint64) * np.uint64(4)
            text = _HEX[((ids[:, None] >> shifts) & np.uint64(15)).astype(np.intp)]  # [n, 8] ASCII
            col = pl.Series(name, np.ascontiguousarray(text).view("S8").ravel()).cast(pl.String)
            cols.append(col.set(pl.Series(r < 0), None) if (r < 0).any() else col)
        return pl.DataFrame(cols)

    def frames(self, n_rows: int, chunk_rows: int = 1_000_000) -> Iterator[pl.DataFrame]:
        """`n_rows` rows as consecutive chunks (memory: one chunk at a time)."""
        for k, start in enumerate(range(0, n_rows, chunk_rows)):
            yield self.frame(min(chunk_rows, n_rows - start), chunk=k)

    def table(self, n_rows: int, chunk_rows: int = 1_000_000, threads: int | None = None) -> pl.DataFrame:
        """`n_rows` rows in memory, the same as ``pl.concat(frames(n_rows, chunk_rows))``; the
        chunks are made on `threads` threads (default: the CPU count; numpy releases the GIL
        in the hashing and sampling that take the time)."""
        import os
        from concurrent.futures import ThreadPoolExecutor

        sizes = [(k, min(chunk_rows, n_rows - start)) for k, start in enumerate(range(0, n_rows, chunk_rows))]
        workers = max(1, min(len(sizes), threads or os.cpu_count() or 1))
        if workers == 1:
            return pl.concat([self.frame(n, chunk=k) for k, n in sizes])
        with ThreadPoolExecutor(workers) as pool:
            return pl.concat(list(pool.map(lambda kn: self.frame(kn[1], chunk=kn[0]), sizes)))
