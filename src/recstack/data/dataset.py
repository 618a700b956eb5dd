"""The one dataset type: interactions as columnar arrays, id vocabularies, feature tables.

Everything downstream (splits, models, evaluation) reads these arrays; nothing here loops over
rows in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recstack.data.errors import DataError

# Fold codes used by `Interactions.fold` for predefined splits.
TRAIN, VALID, TEST = 0, 1, 2

# Largest id range encoded through a dense lookup table (beyond it: hashing).
_DENSE_MAX = 1 << 25


def _as_ids(s: pl.Series) -> pl.Series:
    """Normalise an id column to Int64 or String."""
    if s.dtype.is_integer():
        return s.cast(pl.Int64)
    if s.dtype == pl.String:
        return s
    return s.cast(pl.String)


@dataclass(frozen=True)
class Vocab:
    """Maps raw ids (ints or strings) to contiguous indices 0..n-1 and back, exactly.

    `raw[i]` is the raw id of index `i`; raw ids are kept sorted so encoding is a binary search.
    """

    raw: np.ndarray
    name: str = "id"

    @classmethod
    def fit(cls, values: np.ndarray | pl.Series, name: str = "id") -> Vocab:
        """Sorted unique ids; integer ids of moderate range take an O(n) bitmap path."""
        s = _as_ids(values if isinstance(values, pl.Series) else pl.Series(values))
        if s.null_count():
            raise DataError(f"{name}: missing (null) ids are not allowed")
        if len(s) and s.dtype == pl.Int64:
            lo, hi = int(s.min()), int(s.max())
            if hi - lo < min(_DENSE_MAX, 16 * len(s) + (1 << 20)):
                present = np.zeros(hi - lo + 1, bool)
                present[s.to_numpy() - lo] = True
                return cls(raw=np.flatnonzero(present).astype(np.int64) + lo, name=name)
        raw = s.unique().sort().to_numpy()
        return cls(raw=raw.astype(np.int64) if s.dtype == pl.Int64 else raw, name=name)

    def __len__(self) -> int:
        return len(self.raw)

    def encode(self, values: np.ndarray | pl.Series, strict: bool = True) -> np.ndarray:
        """Raw ids -> indices (int64). Unknown ids raise, or become -1 when `strict=False`.

        Integer vocabularies use a lookup table (O(n)); string ones a hash replace in polars.
        """
        out = self._lookup(_as_ids(values if isinstance(values, pl.Series) else pl.Series(values)))
        if strict and len(out) and out.min() < 0:
            bad = np.asarray(values)[out < 0][:5]
            raise DataError(f"{self.name}: {int((out < 0).sum())} unknown ids, e.g. {list(bad)}")
        return out

    def _lookup(self, s: pl.Series) -> np.ndarray:
        raw, n = self.raw, len(self.raw)
        if n == 0:
            return np.full(len(s), -1, np.int64)
        if raw.dtype.kind in "iu":
            if s.dtype != pl.Int64:
                s = s.cast(pl.Int64, strict=False)  # text that is not an integer matches nothing
            lo, hi = int(raw.min()), int(raw.max())  # raw is sorted, except after `extend`
            if hi - lo < _DENSE_MAX and s.null_count() == 0:
                table = np.full(hi - lo + 1, -1, np.int64 if n >= 2**31 else np.int32)
                table[raw - lo] = np.arange(n)
                v = s.to_numpy()
                if len(v) and v.min() >= lo and v.max() <= hi:
                    return table[v - lo].astype(np.int64)
                inside = (v >= lo) & (v <= hi)
                out = np.full(len(v), -1, np.int64)
                out[inside] = table[v[inside] - lo]
                return out
            old = pl.Series(raw)
        else:
            s = s.cast(pl.String)
            old = pl.Series(raw.astype(str)) if raw.dtype != object else pl.Series(raw, dtype=pl.String)
        codes = s.replace_strict(old, pl.Series(np.arange(n, dtype=np.int64)), default=-1,
                                 return_dtype=pl.Int64)
        return codes.fill_null(-1).to_numpy()

    def decode(self, idx: np.ndarray | int) -> np.ndarray:
        """Indices -> raw ids."""
        return self.raw[np.asarray(idx)]

    def extend(self, new: np.ndarray | list) -> Vocab:
        """A vocabulary with `new` raw ids appended (indices n, n+1, ...), e.g. items added to
        a fitted model's catalogue.

        Raises:
            DataError: an id already in the vocabulary, or repeated in `new`.
        """
        new = np.asarray(new, dtype=self.raw.dtype if self.raw.dtype.kind in "iu" else object)
        known = self.encode(new, strict=False)
        dup = new[known >= 0]
        if len(dup) or len(np.unique(new.astype(str))) < len(new):
            bad = dup[:5].tolist() if len(dup) else new[:5].tolist()
            raise DataError(f"{self.name}: ids to add must be new and distinct, e.g. {bad}")
        return Vocab(raw=np.concatenate([self.raw, new]), name=self.name)

    def next_ids(self, n: int) -> np.ndarray:
        """`n` raw ids not in the vocabulary: the next integers for integer ids, else "new-K"."""
        if self.raw.dtype.kind in "iu":
            start = int(self.raw.max()) + 1 if len(self.raw) else 0
            return np.arange(start, start + n, dtype=np.int64)
        taken = set(self.raw.astype(str).tolist())
        out, k = [], len(self.raw)
        while len(out) < n:
            if f"new-{k}" not in taken:
                out.append(f"new-{k}")
            k += 1
        return np.asarray(out, dtype=object)

    def save(self, path: str | Path) -> Path:
        """Write the raw ids (in index order) to a Parquet file (no pickle: ints or text)."""
        raw = self.raw
        col = pl.Series("id", raw if raw.dtype.kind in "iu" else raw.astype(str), dtype=pl.Int64 if raw.dtype.kind in "iu" else pl.String)
        pl.DataFrame([col]).write_parquet(path)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path, name: str = "id") -> Vocab:
        """Inverse of :meth:`save`."""
        s = pl.read_parquet(path)["id"]
        raw = s.to_numpy() if s.dtype == pl.Int64 else np.asarray(s.to_list(), dtype=object)
        return cls(raw=raw, name=name)


@dataclass
class FeatureTable:
    """Side features aligned to entity index (row i describes user/item i).

    - categorical: name -> (codes int64 [n], vocabulary of raw values); code -1 = missing
    - multihot: name -> (offsets int64 [n+1], values int64 [nnz], vocabulary)
    - numeric: name -> float32 [n] (NaN = missing)
    - text: name -> object array of str [n]
    """

    n: int
    categorical: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    multihot: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    text: dict[str, np.ndarray] = field(default_factory=dict)

    def names(self) -> list[str]:
        return [*self.categorical, *self.multihot, *self.numeric, *self.text]

    def take(self, idx: np.ndarray) -> FeatureTable:
        """Rows `idx` (e.g. after re-indexing entities) as a new table."""
        idx = np.asarray(idx, dtype=np.int64)
        mh = {}
        for k, (off, val, voc) in self.multihot.items():
            lens = off[1:] - off[:-1]
            new_lens = lens[idx]
            new_off = np.zeros(len(idx) + 1, np.int64)
            np.cumsum(new_lens, out=new_off[1:])
            # vectorised gather of variable-length rows
            starts = np.repeat(off[idx], new_lens)
            within = np.arange(new_off[-1]) - np.repeat(new_off[:-1], new_lens)
            mh[k] = (new_off, val[starts + within], voc)
        return FeatureTable(
            n=len(idx),
            categorical={k: (c[idx], v) for k, (c, v) in self.categorical.items()},
            multihot=mh,
            numeric={k: a[idx] for k, a in self.numeric.items()},
            text={k: a[idx] for k, a in self.text.items()},
        )


@dataclass
class Interactions:
    """A user-item interaction log with encoded ids.

    Arrays are aligned (one entry per interaction). `user`/`item` are indices into
    `user_vocab`/`item_vocab`. `timestamp` orders events (for s3rec-style files it is the
    position in the user's sequence). `fold` marks a predefined split (TRAIN/VALID/TEST).
    `log` records what transforms did (rows filtered, duplicates merged, ...).
    """

    user: np.ndarray
    item: np.ndarray
    user_vocab: Vocab
    item_vocab: Vocab
    rating: np.ndarray | None = None
    timestamp: np.ndarray | None = None
    weight: np.ndarray | None = None
    fold: np.ndarray | None = None
    user_features: FeatureTable | None = None
    item_features: FeatureTable | None = None
    name: str = "data"
    fmt: str = "csv"
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.user)
        for col in ("item", "rating", "timestamp", "weight", "fold"):
            a = getattr(self, col)
            if a is not None and len(a) != n:
                raise DataError(f"{self.name}: column '{col}' has {len(a)} rows, 'user' has {n}")

    # ---- constructors from the PyData ecosystem (implemented in recstack.data.interop) ----------
    @classmethod
    def from_pandas(cls, df: Any, user: str = "user_id", item: str = "item_id",
                    timestamp: str | None = None, rating: str | None = None, **kw: Any) -> Interactions:
        """From a pandas DataFrame, one row per interaction (raw ids kept exactly); pandas is
        imported by nobody but the caller. See :func:`recstack.data.interop.from_polars`."""
        from recstack.data.interop import from_pandas

        return from_pandas(df, user, item, timestamp, rating, **kw)

    @classmethod
    def from_polars(cls, df: Any, user: str = "user_id", item: str = "item_id",
                    timestamp: str | None = None, rating: str | None = None, **kw: Any) -> Interactions:
        """From a polars DataFrame or LazyFrame; see :func:`recstack.data.interop.from_polars`."""
        from recstack.data.interop import from_polars

        return from_polars(df, user, item, timestamp, rating, **kw)

    @classmethod
    def from_arrow(cls, table: Any, user: str = "user_id", item: str = "item_id",
                   timestamp: str | None = None, rating: str | None = None, **kw: Any) -> Interactions:
        """From a pyarrow Table or RecordBatch; see :func:`recstack.data.interop.from_polars`."""
        from recstack.data.interop import from_arrow

        return from_arrow(table, user, item, timestamp, rating, **kw)

    @classmethod
    def from_csr(cls, matrix: Any, user_ids: Any = None, item_ids: Any = None, **kw: Any) -> Interactions:
        """From a scipy sparse users x items matrix: nonzeros are interactions, values ratings
        unless all 1; row i is ``user_ids[i]`` (default i). See
        :func:`recstack.data.interop.from_csr`."""
        from recstack.data.interop import from_csr

        return from_csr(matrix, user_ids, item_ids, **kw)

    # ---- sizes -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_users(self) -> int:
        return len(self.user_vocab)

    @property
    def n_items(self) -> int:
        return len(self.item_vocab)

    # ---- row selection -----------------------------------------------------------------------
    def columns(self) -> dict[str, np.ndarray]:
        cols = {"user": self.user, "item": self.item}
        for c in ("rating", "timestamp", "weight", "fold"):
            a = getattr(self, c)
            if a is not None:
                cols[c] = a
        return cols

    def subset(self, rows: np.ndarray) -> Interactions:
        """Rows selected by a boolean mask or index array; vocabularies are kept as they are."""
        cols = {k: v[rows] for k, v in self.columns().items()}
        return replace(self, **cols, log=list(self.log))

    def to_polars(self) -> pl.DataFrame:
        return pl.DataFrame(self.columns())

    # ---- matrix views ------------------------------------------------------------------------
    def csr(self, binary: bool = True, dtype=np.float32) -> sp.csr_matrix:
        """users x items sparse matrix (duplicates summed, or clipped to 1 when `binary`)."""
        vals = np.ones(len(self), dtype) if binary or self.weight is None else self.weight.astype(dtype)
        m = sp.csr_matrix((vals, (self.user, self.item)), shape=(self.n_users, self.n_items))
        m.sum_duplicates()
        if binary:
            m.data[:] = 1
        return m

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.item, minlength=self.n_items)

    def user_counts(self) -> np.ndarray:
        return np.bincount(self.user, minlength=self.n_users)

    def describe(self) -> dict:
        """Summary statistics, as printed by `recstack data info`."""
        n = len(self)
        out = {
            "name": self.name,
            "format": self.fmt,
            "interactions": n,
            "users": self.n_users,
            "items": self.n_items,
            "density": n / max(1, self.n_users * self.n_items),
            "has_rating": self.rating is not None,
            "has_timestamp": self.timestamp is not None,
            "predefined_split": self.fold is not None,
            "user_features": self.user_features.names() if self.user_features else [],
            "item_features": self.item_features.names() if self.item_features else [],
        }
        if n:
            uc, ic = self.user_counts(), self.item_counts()
            out["interactions_per_user"] = {"min": int(uc.min()), "median": float(np.median(uc)), "max": int(uc.max())}
            out["interactions_per_item"] = {"min": int(ic.min()), "median": float(np.median(ic)), "max": int(ic.max())}
        return out

    # ---- re-indexing -------------------------------------------------------------------------
    def compact(self) -> Interactions:
        """Drop users/items with no interactions left, re-index contiguously, keep features aligned."""
        ukeep = np.flatnonzero(self.user_counts() > 0)
        ikeep = np.flatnonzero(self.item_counts() > 0)
        if len(ukeep) == self.n_users and len(ikeep) == self.n_items:
            return self
        umap = np.full(self.n_users, -1, np.int64)
        umap[ukeep] = np.arange(len(ukeep))
        imap = np.full(self.n_items, -1, np.int64)
        imap[ikeep] = np.arange(len(ikeep))
        return replace(
            self,
            user=umap[self.user],
            item=imap[self.item],
            user_vocab=Vocab(self.user_vocab.raw[ukeep], self.user_vocab.name),
            item_vocab=Vocab(self.item_vocab.raw[ikeep], self.item_vocab.name),
            user_features=self.user_features.take(ukeep) if self.user_features else None,
            item_features=self.item_features.take(ikeep) if self.item_features else None,
            log=list(self.log),
        )


def from_raw(
    users: np.ndarray | pl.Series,
    items: np.ndarray | pl.Series,
    *,
    rating=None,
    timestamp=None,
    weight=None,
    fold=None,
    name: str = "data",
    fmt: str = "csv",
) -> Interactions:
    """Build an `Interactions` from raw id columns, fitting both vocabularies."""
    uv = Vocab.fit(users, "user_id")
    iv = Vocab.fit(items, "item_id")

    def arr(x, dtype):
        if x is None:
            return None
        return (x.to_numpy() if isinstance(x, pl.Series) else np.asarray(x)).astype(dtype, copy=False)

    return Interactions(
        user=uv.encode(users),
        item=iv.encode(items),
        user_vocab=uv,
        item_vocab=iv,
        rating=arr(rating, np.float32),
        timestamp=arr(timestamp, np.int64) if timestamp is not None and np.asarray(timestamp).dtype.kind in "iu" else arr(timestamp, np.float64),
        weight=arr(weight, np.float32),
        fold=arr(fold, np.int8),
        name=name,
        fmt=fmt,
    )
