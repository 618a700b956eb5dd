"""Data in from the PyData ecosystem: pandas / polars DataFrames, Arrow tables, scipy sparse.

    data = Interactions.from_pandas(df, user="user_id", item="item_id", timestamp="ts")
    data = Interactions.from_csr(matrix)           # rows are users, columns items
    EASE().fit(matrix)                             # every model's fit takes these too

Raw ids survive: the vocabularies hold them exactly (ints stay ints, text stays text; text ids
are not stripped), so ``recommend`` takes and returns the ids the user gave. Bad input raises
the readers' one-line :class:`DataError`, naming the source (e.g. ``pandas DataFrame``), the
column and the data row (1-based, as the readers' messages count rows).

pandas is not a dependency of recstack: it is never imported here; a pandas frame is converted
by ``polars.from_pandas`` (which needs pandas, already installed by whoever passes one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from recstack.data.dataset import Interactions, Vocab
from recstack.data.errors import DataError
from recstack.data.readers._common import _build, _cast_columns, _first_line, _show

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa

__all__ = ["InteractionsLike", "as_interactions", "from_arrow", "from_csr", "from_pandas", "from_polars"]

#: What a model's ``fit`` accepts: Interactions, a scipy sparse users x items matrix, a
#: pandas / polars DataFrame or a pyarrow Table (columns ``user_id``, ``item_id`` and, when
#: present, ``timestamp`` and ``rating``).
InteractionsLike = Any


# =============================================================================================
# column checks shared by the frame constructors
# =============================================================================================
def _row_error(what: str, col: str, i: int, message: str) -> DataError:
    return DataError(f"data row {i + 1}: {message}", path=what, field=col)


def _first(mask: pl.Series | np.ndarray) -> int | None:
    idx = np.flatnonzero(np.asarray(mask))
    return int(idx[0]) if len(idx) else None


def _ids(s: pl.Series, what: str) -> pl.Series:
    """An id column as Int64 or String, every value present (raw values kept exactly)."""
    col = s.name
    i = _first(s.is_null().to_numpy())
    if i is not None:
        raise _row_error(what, col, i, "missing (null) id")
    if s.dtype.is_integer():
        return s.cast(pl.Int64)
    if s.dtype.is_float():
        v = s.to_numpy()
        i = _first(~np.isfinite(v) | (v != np.round(v)))
        if i is not None:
            raise _row_error(what, col, i, f"expected an integer id, got {_show(float(v[i]))}")
        return s.cast(pl.Int64)
    if s.dtype in (pl.Categorical, pl.Enum) or s.dtype != pl.String:
        s = s.cast(pl.String)
    i = _first((s == "").to_numpy())
    if i is not None:
        raise _row_error(what, col, i, "empty id")
    return s


def _numbers(s: pl.Series, what: str, kind: str) -> pl.Series:
    """A rating ("float") or timestamp ("time") column: finite numbers, none missing.

    Dates and datetimes become seconds since the epoch (Int64 when whole seconds)."""
    col = s.name
    i = _first(s.is_null().to_numpy())
    if i is not None:
        raise _row_error(what, col, i, "missing value (null)")
    if kind == "time" and (s.dtype == pl.Date or isinstance(s.dtype, pl.Datetime)):
        us = s.cast(pl.Datetime("us")).dt.epoch("us")
        return (us // 1_000_000) if bool(((us % 1_000_000) == 0).all()) else (us / 1e6)
    if s.dtype.is_integer():
        return s.cast(pl.Int64) if kind == "time" else s.cast(pl.Float64)
    if s.dtype.is_float():
        v = s.to_numpy()
        i = _first(~np.isfinite(v))
        if i is not None:
            raise _row_error(what, col, i, f"expected a finite number, got {_show(float(v[i]))}")
        return s.cast(pl.Float64)
    if s.dtype == pl.Boolean:
        return s.cast(pl.Float64)
    if s.dtype == pl.String:  # text numbers: the readers' casting and messages
        typed, errors = _cast_columns(pl.DataFrame([s]), {col: kind}, what, None)
        if errors:
            raise min(errors, key=lambda e: e[0])[1]
        return typed[col]
    raise DataError(f"expected numbers, got column type {s.dtype}", path=what, field=col)


def _frame(df: pl.DataFrame, what: str, fmt: str, user: str, item: str, timestamp: str | None,
           rating: str | None, like: Interactions | None = None, name: str | None = None) -> Interactions:
    """The shared path of every frame constructor: columns checked, ids encoded."""
    cols = df.columns
    for role, col in (("user", user), ("item", item), ("timestamp", timestamp), ("rating", rating)):
        if col is not None and col not in cols:
            raise DataError(f"no {role} column '{col}'; columns: {', '.join(map(str, cols)) or 'none'}",
                            path=what, field=col)
    if df.height == 0:
        raise DataError("no rows", path=what)
    users, items = _ids(df[user], what), _ids(df[item], what)
    r = None if rating is None else _numbers(df[rating], what, "float")
    t = None if timestamp is None else _numbers(df[timestamp], what, "time")
    log = [f"{len(users):,} interactions from a {what}"]
    if like is None:
        return _build(users, items, rating=r, timestamp=t, name=name or fmt, fmt=fmt, log=log)
    return Interactions(
        user=_encode_known(like.user_vocab, users, what),
        item=_encode_known(like.item_vocab, items, what),
        user_vocab=like.user_vocab, item_vocab=like.item_vocab,
        rating=None if r is None else r.to_numpy().astype(np.float32),
        timestamp=None if t is None else t.to_numpy(),
        name=name or fmt, fmt=fmt, log=log,
    )


def _encode_known(vocab: Vocab, ids: pl.Series, what: str) -> np.ndarray:
    """Ids encoded with a fitted vocabulary (e.g. the training data's); unknown ids raise."""
    idx = vocab.encode(ids, strict=False)
    i = _first(idx < 0)
    if i is not None:
        n = int((idx < 0).sum())
        raise _row_error(what, ids.name, i, f"id {_show(ids[i])} is not in the training data "
                                             f"({n:,} row(s) with unknown ids)")
    return idx


# =============================================================================================
# constructors
# =============================================================================================
def from_polars(df: pl.DataFrame | pl.LazyFrame, user: str = "user_id", item: str = "item_id",
                timestamp: str | None = None, rating: str | None = None, *,
                name: str = "polars", like: Interactions | None = None) -> Interactions:
    """Interactions from a polars DataFrame (or LazyFrame, collected).

    Args:
        df: One row per interaction.
        user: User id column: integers (kept as ints; whole-number floats too) or anything
            else (kept as text, exactly).
        item: Item id column, typed as `user` is.
        timestamp: Optional column of numbers, dates or datetimes (seconds since the epoch).
        rating: Optional column of finite numbers.
        name: The data set's name.
        like: Encode the ids with this data's vocabularies (e.g. validation data for a model
            fitted on `like`) instead of fitting new ones; unknown ids raise.

    Raises:
        DataError: a missing column, a null / empty / non-integral id, a missing or non-finite
            number, naming the column and the 1-based data row.
    """
    if isinstance(df, pl.LazyFrame):
        df = df.collect()
    if not isinstance(df, pl.DataFrame):
        raise TypeError(f"expected a polars DataFrame, got {type(df).__name__}")
    return _frame(df, "polars DataFrame", "polars", user, item, timestamp, rating, like, name)


def from_pandas(df: Any, user: str = "user_id", item: str = "item_id", timestamp: str | None = None,
                rating: str | None = None, *, name: str = "pandas",
                like: Interactions | None = None) -> Interactions:
    """Interactions from a pandas DataFrame (its index is ignored); see :func:`from_polars`.

    The columns used are converted with ``polars.from_pandas``; a column that cannot be (e.g.
    an object column mixing ints and text) raises a DataError naming it.
    """
    what = "pandas DataFrame"
    missing = [c for c in (user, item, timestamp, rating) if c is not None and c not in df.columns]
    if missing:
        cols = ", ".join(map(str, df.columns)) or "none"
        role = {user: "user", item: "item", timestamp: "timestamp", rating: "rating"}[missing[0]]
        raise DataError(f"no {role} column '{missing[0]}'; columns: {cols}", path=what, field=missing[0])
    used = list(dict.fromkeys(c for c in (user, item, timestamp, rating) if c is not None))
    try:
        frame = pl.from_pandas(df[used].reset_index(drop=True))
    except Exception:  # find the column polars / Arrow cannot convert, and say why
        for c in used:
            try:
                pl.from_pandas(df[[c]].reset_index(drop=True))
            except Exception as e:  # noqa: BLE001 (any conversion failure is reported as data)
                raise DataError(f"cannot convert the column: {_first_line(e)}", path=what, field=c) from None
        raise
    return _frame(frame, what, "pandas", user, item, timestamp, rating, like, name)


def from_arrow(table: pa.Table | Any, user: str = "user_id", item: str = "item_id",
               timestamp: str | None = None, rating: str | None = None, *, name: str = "arrow",
               like: Interactions | None = None) -> Interactions:
    """Interactions from a pyarrow Table or RecordBatch; see :func:`from_polars`."""
    what = "Arrow table"
    try:
        frame = pl.from_arrow(table)
    except (TypeError, ValueError, pl.exceptions.PolarsError) as e:
        raise DataError(f"cannot convert: {_first_line(e)}", path=what) from None
    if not isinstance(frame, pl.DataFrame):
        raise TypeError(f"expected a pyarrow Table or RecordBatch, got {type(table).__name__}")
    return _frame(frame, what, "arrow", user, item, timestamp, rating, like, name)


def _id_array(ids: Any, n: int, what: str) -> np.ndarray:
    """Raw ids for the rows (or columns) of a matrix, in order: int64, or text as objects."""
    s = pl.Series(what, list(ids) if not isinstance(ids, np.ndarray | pl.Series) else ids)
    if len(s) != n:
        raise DataError(f"{len(s):,} ids for {n:,} matrix {'rows' if what == 'user_ids' else 'columns'}",
                        field=what)
    s = _ids(s, "sparse matrix")
    dup = ~s.is_first_distinct().to_numpy()
    i = _first(dup)
    if i is not None:
        j = _first((s == s[i]).to_numpy())
        raise DataError(f"duplicate id {_show(s[i])} at positions {j} and {i}", field=what)
    return s.to_numpy() if s.dtype == pl.Int64 else np.asarray(s.to_list(), dtype=object)


def from_csr(matrix: Any, user_ids: Any = None, item_ids: Any = None, *,
             name: str = "csr", like: Interactions | None = None) -> Interactions:
    """Interactions from a scipy sparse users x items matrix (any format: csr, coo, ...).

    Every stored nonzero is one interaction (explicit zeros are not); its value becomes the
    rating unless every value is 1 (then there is no rating). Row i is user ``user_ids[i]``
    and column j item ``item_ids[j]`` (default: the indices themselves, so ``recommend``
    takes row indices and returns column indices). Users and items without interactions stay
    in the vocabularies: the catalogue is every column.

    Args:
        like: Use this data's vocabularies (the matrix must have its shape), e.g. validation
            data for a model fitted on `like`.

    Raises:
        DataError: non-finite values, or ids that do not match the shape or repeat.
    """
    if not sp.issparse(matrix):
        raise TypeError(f"expected a scipy sparse matrix, got {type(matrix).__name__}")
    m = sp.coo_matrix(matrix)
    m.sum_duplicates()  # also orders the entries row by row
    m.eliminate_zeros()
    n_users, n_items = m.shape
    values = np.asarray(m.data)
    if values.dtype.kind not in "biuf":
        raise DataError(f"expected numeric values, got dtype {values.dtype}", path="sparse matrix")
    if not np.isfinite(values).all():
        k = _first(~np.isfinite(values))
        raise DataError(f"non-finite value {values[k]} at row {m.row[k]}, column {m.col[k]}",
                        path="sparse matrix")
    if like is not None:
        if (user_ids is not None) or (item_ids is not None):
            raise ValueError("from_csr: give either like= or user_ids / item_ids, not both")
        if m.shape != (like.n_users, like.n_items):
            raise DataError(f"shape {m.shape} does not match the training data's "
                            f"({like.n_users:,} users x {like.n_items:,} items)", path="sparse matrix")
        uv, iv = like.user_vocab, like.item_vocab
    else:
        uv = Vocab(np.arange(n_users, dtype=np.int64) if user_ids is None
                   else _id_array(user_ids, n_users, "user_ids"), "user_id")
        iv = Vocab(np.arange(n_items, dtype=np.int64) if item_ids is None
                   else _id_array(item_ids, n_items, "item_ids"), "item_id")
    binary = bool((values == 1).all())
    return Interactions(
        user=m.row.astype(np.int64), item=m.col.astype(np.int64), user_vocab=uv, item_vocab=iv,
        rating=None if binary else values.astype(np.float32), name=name, fmt="csr",
        log=[f"{m.nnz:,} interactions from a {n_users:,} x {n_items:,} sparse matrix"],
    )


# =============================================================================================
# the one coercion every model's fit goes through
# =============================================================================================
def _kind(x: Any) -> str | None:
    mod = type(x).__module__.split(".")[0]
    if mod == "pandas" and type(x).__name__ == "DataFrame":
        return "pandas"
    if isinstance(x, pl.DataFrame | pl.LazyFrame):
        return "polars"
    if mod == "pyarrow" and type(x).__name__ in ("Table", "RecordBatch"):
        return "arrow"
    return None


def as_interactions(x: InteractionsLike, like: Interactions | None = None) -> Interactions:
    """`x` as Interactions: itself when it is one; a scipy sparse matrix via :func:`from_csr`;
    a pandas / polars DataFrame or Arrow table via its constructor with the columns
    ``user_id``, ``item_id`` and, when present, ``timestamp`` and ``rating``.

    Args:
        like: Fitted data whose vocabularies `x` must use (validation data passed to ``fit``):
            a matrix must have its shape, a frame's ids must all be known to it.

    Raises:
        TypeError: `x` is none of these.
        DataError: bad data (see the constructors).
    """
    if isinstance(x, Interactions):
        return x
    if sp.issparse(x):
        return from_csr(x, like=like)
    kind = _kind(x)
    if kind is None:
        raise TypeError(f"expected Interactions, a scipy sparse matrix, a pandas or polars DataFrame "
                        f"or a pyarrow Table, got {type(x).__module__}.{type(x).__name__}")
    cols = list(x.collect_schema().names() if isinstance(x, pl.LazyFrame) else
                (x.schema.names if kind == "arrow" else x.columns))
    missing = [c for c in ("user_id", "item_id") if c not in cols]
    if missing:
        what = {"pandas": "pandas DataFrame", "polars": "polars DataFrame", "arrow": "Arrow table"}[kind]
        raise DataError(f"no column '{missing[0]}' (columns: {', '.join(map(str, cols)) or 'none'}); name the "
                        f"columns user_id / item_id, or build the data with Interactions.from_{kind}"
                        f"(x, user=..., item=...)", path=what, field=missing[0])
    opt = {k: (k if k in cols else None) for k in ("timestamp", "rating")}
    ctor = {"pandas": from_pandas, "polars": from_polars, "arrow": from_arrow}[kind]
    return ctor(x, "user_id", "item_id", like=like, **opt)
