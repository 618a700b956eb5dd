"""Readers addressed by a spec string ``FORMAT:PATH``.

``load("csv:/data/r.csv?user=uid&item=iid&sep=;")`` parses the spec, picks the reader for FORMAT
and returns an :class:`~recstack.data.dataset.Interactions`. Formats:

========== =====================================================================================
embedded   MovieLens latest-small shipped inside the package (no path)
movielens  a MovieLens release directory (100K, 1M, 10M, 20M, 25M, 32M, latest), auto-detected,
           or a release name (``movielens:ml-1m``) which is downloaded and cached
atomic     RecBole atomic files ``<name>.inter`` (+ ``.user`` / ``.item``) in a directory
lightgcn   ``train.txt`` + ``test.txt``, one line per user: ``user item item ...``
s3rec      one line per user, items in time order (+ ``<stem>_item2attributes.json``)
sasrec     ``user item`` per line, in time order per user
csv        delimited file with a header; column mapping options
parquet    parquet file; column mapping options
========== =====================================================================================

Every reader parses with polars (vectorised). Bad input is never dropped silently: a
:class:`DataError` names the file, the 1-based line (counting the header line) and the field.
The happy path reads typed columns directly; only when that fails, or leaves nulls behind, the
file is read again as text to locate the first offending line (so errors cost time, data don't).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

import numpy as np
import polars as pl

from recstack.data.dataset import TEST, TRAIN, FeatureTable, Interactions, Vocab, _as_ids
from recstack.data.errors import DataError

__all__ = [
    "FORMATS",
    "load",
    "parse_spec",
    "embedded_path",
    "read_embedded",
    "read_movielens",
    "read_atomic",
    "read_lightgcn",
    "read_s3rec",
    "read_sasrec",
    "read_csv",
    "read_parquet",
]

# Rows read as text to guess column types before the typed read.
_SNIFF_ROWS = 1000
# Dense lookup tables for integer ids are used when the id range is at most this many slots.

# The 19 genres of MovieLens 100K, in flag order (used when u.genre is absent).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)

_Src = Path | bytes  # a file, or its contents re-encoded as UTF-8 (for latin-1 files)


# =============================================================================================
# spec strings
# =============================================================================================
def parse_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """Split ``FORMAT:PATH?key=value&key=value`` into (format, path or None, options).

    Option values stay strings here; `load` converts them to the reader's parameter types.
    """
    fmt, colon, rest = spec.partition(":")
    fmt = fmt.strip().lower()
    opts: dict[str, str] = {}
    path: str | None = rest if colon else None
    if path is not None and "?" in path:
        head, _, query = path.partition("?")
        if "=" in query:
            path = head
            for part in query.split("&"):
                if not part:
                    continue
                key, eq, value = part.partition("=")
                if not eq:
                    raise DataError(f"bad option '{part}' in spec '{spec}': expected key=value")
                opts[key.strip()] = value
    if path is not None and not path.strip():
        path = None
    return fmt, path, opts


def load(spec: str, **options) -> Interactions:
    """Read the data set named by `spec` (``FORMAT:PATH[?key=value&...]``).

    Keyword `options` are passed to the format's reader and override options given in the spec.
    Examples: ``load("embedded")``, ``load("lightgcn:data/gowalla")``,
    ``load("csv:/x/y.csv?user=uid&item=iid&rating=score&sep=;")``, ``load("movielens:ml-1m")``.
    """
    fmt, path, opts = parse_spec(spec)
    if fmt not in FORMATS:
        raise DataError(f"unknown format '{fmt}' in spec '{spec}'; known formats: {', '.join(FORMATS)}")
    reader = FORMATS[fmt]
    params = inspect.signature(reader).parameters
    merged: dict[str, object] = {}
    for key, value in {**opts, **options}.items():
        if key not in params or key == "path":
            accepted = [p for p in params if p != "path"]
            raise DataError(
                f"format '{fmt}' has no option '{key}'; accepted: {', '.join(accepted) or 'none'}"
            )
        default = params[key].default
        if isinstance(value, str) and isinstance(default, bool):
            value = _parse_bool(key, value)
        merged[key] = value
    if "path" in params:
        if path is None:
            raise DataError(f"format '{fmt}' needs a path: '{fmt}:PATH'")
        return reader(path, **merged)
    if path is not None:
        raise DataError(f"format '{fmt}' takes no path (got '{path}')")
    return reader(**merged)


def _parse_bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y", "on"):
        return True
    if v in ("0", "false", "no", "n", "off"):
        return False
    raise DataError(f"option '{key}': expected true/false, got '{value}'")


# =============================================================================================
# low-level helpers: files, lines, typed columns
# =============================================================================================
def _need(path: Path, what: str) -> Path:
    """`path` if it exists, else a DataError saying what was expected there."""
    if not path.exists():
        raise DataError(f"not found; expected {what} here", path=str(path))
    return path


def _need_file(path: Path, what: str) -> Path:
    _need(path, what)
    if not path.is_file():
        raise DataError(f"is not a file; expected {what}", path=str(path))
    return path


def _need_dir(path: Path, what: str) -> Path:
    _need(path, what)
    if not path.is_dir():
        raise DataError(f"is not a directory; expected a directory holding {what}", path=str(path))
    return path


def _source(path: Path, encoding: str) -> _Src:
    """The file itself for UTF-8; otherwise its text re-encoded as UTF-8 (small files only).

    encoding "auto" = UTF-8 when the bytes are valid UTF-8, else latin-1 (old MovieLens files).
    """
    if encoding == "utf-8":
        return path
    raw = path.read_bytes()
    if encoding == "auto":
        try:
            raw.decode("utf-8")
            return raw
        except UnicodeDecodeError:
            encoding = "latin-1"
    return raw.decode(encoding).encode("utf-8")


def _read_bytes(src: _Src) -> bytes:
    return src if isinstance(src, bytes) else src.read_bytes()


def _utf8_error(src: _Src, path: Path, exc: Exception) -> DataError:
    """Turn polars' invalid-UTF-8 error into one that names the line."""
    raw = _read_bytes(src)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        return DataError(f"invalid UTF-8 byte {raw[e.start:e.start + 1]!r}", path=str(path), line=line)
    return DataError(f"could not be read: {_first_line(exc)}", path=str(path))


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _read_lines(src: _Src, path: Path) -> pl.Series:
    """Physical lines as a String Series (blank lines are null; a trailing CR is removed)."""
    try:
        df = pl.read_csv(
            src, has_header=False, separator="\x1f", quote_char=None,
            schema={"line": pl.String}, truncate_ragged_lines=True,
        )
    except pl.exceptions.NoDataError:
        return pl.Series("line", [], pl.String)
    except pl.exceptions.ComputeError as e:
        if "utf-8" in str(e).lower() or "utf8" in str(e).lower():
            raise _utf8_error(src, path, e) from None
        raise DataError(f"could not be read: {_first_line(e)}", path=str(path)) from None
    return df["line"]


def _trailing_blank_lines(src: _Src) -> int:
    """How many blank lines end the file (a final newline alone does not count)."""
    if isinstance(src, bytes):
        tail = src[-65536:]
    else:
        with open(src, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read()
    body = tail.rstrip(b"\r\n\t ")
    return max(0, tail[len(body):].count(b"\n") - 1)


def _blank_lines(lines: pl.Series, path: Path, first: int) -> tuple[int, list[tuple[int, DataError]]]:
    """Blank-line policy shared by all text readers.

    Returns (end, errors): data lines are ``lines[first:end]`` (trailing blank lines dropped);
    a blank line in the middle is an error. Errors are (0-based line index, DataError).
    """
    blank = (lines.is_null() | (lines.str.strip_chars() == "")).to_numpy()
    nonblank = np.flatnonzero(~blank[first:]) + first
    if len(nonblank) == 0:
        return first, []
    end = int(nonblank[-1]) + 1
    errors = []
    mid = np.flatnonzero(blank[first:end])
    if len(mid):
        i = first + int(mid[0])
        errors.append((i, DataError("blank line in the middle of the data", path=str(path), line=i + 1)))
    return end, errors


def _raise_first(errors: list[tuple[int, DataError]]) -> None:
    """Raise the error on the earliest line (ties: the first one found)."""
    if errors:
        raise min(errors, key=lambda e: e[0])[1]


def _show(value: object) -> str:
    s = repr(value)
    return s if len(s) <= 60 else s[:57] + "..."


def _first_true(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if len(idx) else None


_KIND_TEXT = {
    "int": "an integer", "id": "an integer id", "float": "a finite number",
    "time": "a finite number", "float?": "a finite number",
}


def _cast_columns(
    df: pl.DataFrame,
    want: dict[str, str],
    path: Path,
    first_line: int | None,
    valid: np.ndarray | None = None,
    id_type: str = "auto",
) -> tuple[pl.DataFrame, list[tuple[int, DataError]]]:
    """Cast String columns by kind; collect (row, DataError) for each column's first bad value.

    Kinds: "int" (Int64), "id" (Int64 when every value is a canonical integer, else String; forced
    by `id_type` "int"/"str"), "float" (finite Float64), "time" (Int64, else finite Float64),
    "float?" (Float64, empty allowed -> null), "str" (stripped text, empty -> null).
    Row i of `df` is on line ``first_line + i`` (None: row numbers only, e.g. shifted by quotes).
    """
    valid = np.ones(df.height, bool) if valid is None else valid
    out: dict[str, pl.Series] = {}
    errors: list[tuple[int, DataError]] = []

    def err(col: str, mask: np.ndarray, msg: Callable[[object], str], raw: pl.Series) -> None:
        i = _first_true(mask & valid)
        if i is None:
            return
        line = None if first_line is None else first_line + i
        text = msg(raw[i]) if first_line is not None else f"data row {i + 1}: {msg(raw[i])}"
        errors.append((i, DataError(text, path=str(path), line=line, field=col)))

    for col, kind in want.items():
        raw = df[col]
        t = df.select(
            pl.when(pl.col(col).str.strip_chars() == "").then(None)
            .otherwise(pl.col(col).str.strip_chars()).alias(col)
        )[col]
        present = t.is_not_null().to_numpy()
        if kind in ("int", "id", "float", "time"):
            err(col, ~present, lambda v: "missing value (empty field)", raw)
        forced = {"id": id_type}.get(kind)
        if kind == "str" or forced == "str":
            out[col] = t
            continue
        if kind == "int" or forced == "int":
            c = t.cast(pl.Int64, strict=False)
            err(col, present & c.is_null().to_numpy(),
                lambda v, k=kind: f"expected {_KIND_TEXT[k]}, got {_show(v)}", raw)
            out[col] = c
            continue
        if kind in ("id", "time"):
            c = t.cast(pl.Int64, strict=False)
            ok = c.is_not_null()
            if kind == "id":
                ok = ok & (c.cast(pl.String) == t)  # "007" or "+7" must stay text to round-trip
            if not (present & ~ok.fill_null(False).to_numpy()).any():
                out[col] = c
                continue
            if kind == "id":
                out[col] = t
                continue
        f = t.cast(pl.Float64, strict=False)
        bad = f.is_null() | ~f.is_finite()
        err(col, present & bad.fill_null(True).to_numpy(),
            lambda v, k=kind: f"expected {_KIND_TEXT[k]}, got {_show(v)}", raw)
        out[col] = f
    return pl.DataFrame(out) if out else pl.DataFrame(), errors


def _guess_dtype(kind: str, sample: pl.Series, id_type: str) -> pl.DataType:
    """Column dtype for the fast typed read, guessed from the first rows."""
    if kind in ("float", "float?"):
        return pl.Float64()
    if kind == "str" or (kind == "id" and id_type == "str"):
        return pl.String()
    if kind == "int" or (kind == "id" and id_type == "int"):
        return pl.Int64()
    t = sample.str.strip_chars().drop_nulls()
    c = t.cast(pl.Int64, strict=False)
    ints = c.null_count() == 0 and (kind != "id" or bool((c.cast(pl.String) == t).all()))
    if ints:
        return pl.Int64()
    return pl.String() if kind == "id" else pl.Float64()


def _read_delim(
    path: Path,
    want: dict[str, str],
    *,
    sep: str,
    header: bool = True,
    names: list[str] | None = None,
    quote: str | None = '"',
    id_type: str = "auto",
    encoding: str = "utf-8",
    what: str = "a delimited text file",
) -> pl.DataFrame:
    """Read the columns `want` (name -> kind, see `_cast_columns`) of a delimited file, typed.

    With `header`, names come from the first line; else `names` gives every column. Fast path:
    one typed polars read (dtypes guessed from the first rows). If it fails or leaves nulls,
    `_diagnose` rereads the file as text and either raises at the first bad line or returns the
    correctly typed data (e.g. ids that turned out not to be integers after the sniffed rows).
    """
    _need_file(path, what)
    src = _source(path, encoding)
    kw = dict(separator=sep, quote_char=quote, has_header=header)
    cols = _columns(src, path, kw, header, names)
    missing = [c for c in want if c not in cols]
    if missing:
        raise DataError(
            f"column missing; the {'header' if header else 'format'} has: {', '.join(cols)}",
            path=str(path), line=1 if header else None, field=missing[0],
        )
    strings = {c: pl.String() for c in cols}
    try:
        sample = pl.read_csv(src, n_rows=_SNIFF_ROWS, schema=strings, **kw)
    except pl.exceptions.ComputeError:
        return _diagnose(src, path, want, cols, kw, id_type)
    if sample.height == 0:
        raise DataError("no data rows" + (" (only a header)" if header else " (empty file)"),
                        path=str(path), line=2 if header else 1)
    schema = dict(strings)
    for c, kind in want.items():
        schema[c] = _guess_dtype(kind, sample[c], id_type)
    # The last column is always read so that short rows (padded with nulls) are noticed.
    proj = [c for c in cols if c in want or c == cols[-1]]
    try:
        # (polars only projects by name when the file has a header)
        df = pl.read_csv(src, schema=schema, columns=proj if header else None, **kw)
        if not header:
            df = df.select(proj)
    except pl.exceptions.ComputeError:
        return _diagnose(src, path, want, cols, kw, id_type)
    checked = [c for c in proj if want.get(c, "x") in ("int", "id", "float", "time") or c not in want]
    floats = [c for c in want if want[c] in ("float", "time") and schema[c] == pl.Float64]
    df = _clean_typed(df, src, [pl.col(c).is_null() for c in checked]
                      + [~pl.col(c).is_finite() for c in floats])
    if df is None:
        return _diagnose(src, path, want, cols, kw, id_type)
    if df.height == 0:
        raise DataError("no data rows", path=str(path), line=2 if header else 1)
    return df.select(list(want))


def _clean_typed(df: pl.DataFrame, src: _Src, bad_exprs: list[pl.Expr]) -> pl.DataFrame | None:
    """`df` without the all-null rows that trailing blank lines produce, or None when any other
    row is flagged by `bad_exprs` (the caller then locates the problem line by line)."""
    bad = df.select(pl.any_horizontal(bad_exprs).fill_null(True).alias("bad"))["bad"]
    if not bad.any():
        return df
    k = _trailing_blank_lines(src)
    rows = bad.arg_true().to_numpy()
    tail_ok = (
        k > 0 and len(rows) <= k and rows[0] == df.height - len(rows)
        and df.tail(len(rows)).null_count().sum_horizontal()[0] == len(rows) * df.width
    )
    return df.head(df.height - len(rows)) if tail_ok else None


def _columns(src: _Src, path: Path, kw: dict, header: bool, names: list[str] | None) -> list[str]:
    """Column names (header line, or `names`)."""
    if not header:
        assert names is not None
        if _empty(src):
            raise DataError("file is empty", path=str(path), line=1)
        return list(names)
    try:
        head = pl.read_csv(src, n_rows=1, infer_schema=False, truncate_ragged_lines=True, **kw)
    except pl.exceptions.NoDataError:
        raise DataError("file is empty", path=str(path), line=1) from None
    except pl.exceptions.ComputeError as e:
        if "utf" in str(e).lower():
            raise _utf8_error(src, path, e) from None
        raise DataError(f"header could not be read: {_first_line(e)}", path=str(path), line=1) from None
    except pl.exceptions.DuplicateError as e:
        raise DataError(f"duplicate column name in header: {_first_line(e)}", path=str(path), line=1) from None
    cols = head.columns
    if not any(c.strip() for c in cols):
        raise DataError("header line is blank", path=str(path), line=1)
    return cols


def _empty(src: _Src) -> bool:
    if isinstance(src, bytes):
        return not src.strip()
    if src.stat().st_size > 4096:
        return False
    return not src.read_bytes().strip()


def _diagnose(src: _Src, path: Path, want: dict[str, str], cols: list[str], kw: dict,
              id_type: str) -> pl.DataFrame:
    """Slow path: read as text, raise at the first bad line, or return typed data."""
    sep, quote, header = kw["separator"], kw["quote_char"], kw["has_header"]
    lines = _read_lines(src, path)
    first = 1 if header else 0
    end, errors = _blank_lines(lines, path, first)
    if end == first:
        raise DataError("no data rows", path=str(path), line=first + 1)
    body = lines.slice(first, end - first)
    stripped = body.str.replace_all('"[^"]*"', "") if quote else body
    counts = (stripped.str.count_matches(sep, literal=True) + 1).fill_null(len(cols)).to_numpy()
    ragged = counts != len(cols)
    i = _first_true(ragged)
    if i is not None:
        m = int(counts[i])
        field = cols[m] if m < len(cols) else f"#{len(cols) + 1} (unexpected)"
        errors.append((first + i, DataError(
            f"expected {len(cols)} fields ({', '.join(cols)}), found {m}: {_show(body[i])}",
            path=str(path), line=first + i + 1, field=field)))
    try:
        df = pl.read_csv(src, schema={c: pl.String for c in cols}, truncate_ragged_lines=True, **kw)
    except pl.exceptions.ComputeError as e:
        _raise_first(errors)
        raise DataError(f"could not be parsed: {_first_line(e)}", path=str(path)) from None
    n = end - first
    aligned = df.height >= n and df.slice(n).null_count().sum_horizontal()[0] == (df.height - n) * len(cols)
    if aligned:
        df = df.head(n)
        blank = (body.is_null() | (body.str.strip_chars() == "")).to_numpy()
        valid = ~ragged & ~blank
    else:  # a quoted field spans lines: rows no longer map to lines
        valid = ~df.select(pl.all_horizontal(pl.all().is_null())).to_series().to_numpy()
    typed, cast_errors = _cast_columns(
        df.select(list(want)), want, path, first + 1 if aligned else None, valid, id_type
    )
    errors += [(first + i, e) for i, e in cast_errors]
    _raise_first(errors)
    if not aligned:
        raise DataError("rows and lines do not line up (quoted line breaks?)", path=str(path))
    return typed


def _split_lines(lines: pl.Series, sep: str, names: list[str], path: Path, first: int,
                 end: int) -> tuple[pl.DataFrame, list[tuple[int, DataError]]]:
    """Split data lines on a (multi-char) separator into String columns `names`."""
    body = lines.slice(first, end - first)
    parts = body.str.split(sep)
    counts = parts.list.len().fill_null(0).to_numpy()
    errors = []
    i = _first_true(counts != len(names))
    if i is not None:
        m = int(counts[i])
        field = names[m] if m < len(names) else f"#{len(names) + 1} (unexpected)"
        errors.append((first + i, DataError(
            f"expected {len(names)} fields separated by '{sep}' ({', '.join(names)}), found {m}: "
            f"{_show(body[i])}", path=str(path), line=first + i + 1, field=field)))
    df = pl.DataFrame({n: parts.list.get(k, null_on_oob=True) for k, n in enumerate(names)})
    return df, errors


def _read_sep_lines(path: Path, sep: str, names: list[str], want: dict[str, str], *,
                    encoding: str = "utf-8", what: str) -> pl.DataFrame:
    """Headerless file with a multi-character separator (MovieLens ``::``)."""
    _need_file(path, what)
    src = _source(path, encoding)
    if len(sep) > 1 and len(set(sep)) == 1:
        # Fast path: split on the single character; the parts between its repeats must be empty.
        gaps = len(sep) - 1
        fast = [x for k, n in enumerate(names)
                for x in ([n] if k == 0 else [*(f"_gap{k}_{j}" for j in range(gaps)), n])]
        dtypes = {"int": pl.Int64(), "float": pl.Float64()}
        schema = {c: dtypes.get(want.get(c, ""), pl.String()) for c in fast}
        try:
            df = pl.read_csv(src, separator=sep[0], has_header=False, quote_char=None, schema=schema)
        except pl.exceptions.ComputeError:
            df = None
        if df is not None:
            gap_cols = [c for c in fast if c.startswith("_gap")]
            required = [c for c in names if want.get(c) in ("int", "float")] + [names[-1]]
            df = _clean_typed(df, src, [pl.col(c).is_not_null() for c in gap_cols]
                              + [pl.col(c).is_null() for c in required]
                              + [~pl.col(c).is_finite() for c in names if want.get(c) == "float"])
        if df is not None and df.height:
            return df.select([pl.col(c).str.strip_chars() if want[c] == "str" else pl.col(c)
                              for c in want])
    lines = _read_lines(src, path)
    end, errors = _blank_lines(lines, path, 0)
    if end == 0:
        raise DataError("file is empty", path=str(path), line=1)
    df, split_errors = _split_lines(lines, sep, names, path, 0, end)
    errors += split_errors
    valid = np.ones(df.height, bool)
    for i, _ in errors:
        valid[i] = False  # already reported; don't report the same line's fields as well
    typed, cast_errors = _cast_columns(df.select(list(want)), want, path, 1, valid)
    _raise_first(errors + cast_errors)
    return typed


# =============================================================================================
# encoding ids, building Interactions and feature tables
# =============================================================================================
def _build(
    users: pl.Series,
    items: pl.Series,
    *,
    name: str,
    fmt: str,
    rating: pl.Series | None = None,
    timestamp: pl.Series | None = None,
    weight: pl.Series | None = None,
    fold: np.ndarray | None = None,
    all_users: pl.Series | None = None,
    log: list[str] | None = None,
) -> Interactions:
    """Encode ids and assemble an `Interactions` (same dtypes as `from_raw`)."""
    # the user vocabulary may also hold users without interactions (lightgcn)
    uv = Vocab.fit(users if all_users is None else all_users, "user_id")
    iv = Vocab.fit(items, "item_id")

    def arr(x: pl.Series | None, dtype) -> np.ndarray | None:
        return None if x is None else x.to_numpy().astype(dtype, copy=False)

    ts = None
    if timestamp is not None:
        ts = arr(timestamp, np.int64 if timestamp.dtype.is_integer() else np.float64)
    return Interactions(
        user=uv.encode(users, strict=False),
        item=iv.encode(items, strict=False),
        user_vocab=uv,
        item_vocab=iv,
        rating=arr(rating, np.float32),
        timestamp=ts,
        weight=arr(weight, np.float32),
        fold=None if fold is None else np.asarray(fold, np.int8),
        name=name,
        fmt=fmt,
        log=list(log or []),
    )


def _rows_for(vocab: Vocab, ids: pl.Series, path: Path, first_line: int, field: str) -> np.ndarray:
    """row_of[j] = row of the feature file that describes entity j, or -1 (no row).

    Rows for entities absent from the interactions are dropped (by design); an id listed twice
    is an error.
    """
    ids = _as_ids(ids)
    dup = ~ids.is_first_distinct().to_numpy() & ids.is_not_null().to_numpy()
    i = _first_true(dup)
    if i is not None:
        first = _first_true((ids == ids[i]).fill_null(False).to_numpy())
        raise DataError(f"duplicate id {_show(ids[i])} (first on line {first_line + first})",
                        path=str(path), line=first_line + i, field=field)
    pos = vocab.encode(ids, strict=False)
    keep = pos >= 0
    row_of = np.full(len(vocab), -1, np.int64)
    row_of[pos[keep]] = np.flatnonzero(keep)
    return row_of


def _gather(s: pl.Series, row_of: np.ndarray) -> pl.Series:
    """s[row_of] with null where row_of == -1."""
    ext = pl.concat([s, pl.Series(s.name, [None], dtype=s.dtype)])
    return ext.gather(np.where(row_of < 0, len(s), row_of))


def _categorical(s: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(codes, vocabulary) with code -1 for null."""
    s = _as_ids(s)
    voc = Vocab.fit(s.drop_nulls(), "value")
    return voc.encode(s, strict=False), voc.raw


def _multihot(lists: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offsets, value codes, vocabulary) from a List column; null rows are empty; each row's
    values are de-duplicated (a multi-hot row is a set), keeping first-seen order."""
    lists = lists.list.eval(pl.element().drop_nulls().unique(maintain_order=True))
    lens = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    offsets = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    flat = lists.explode().drop_nulls()
    voc = Vocab.fit(flat, "value")
    return offsets, voc.encode(flat, strict=False), voc.raw


def _numeric(s: pl.Series) -> np.ndarray:
    return s.cast(pl.Float32).fill_null(float("nan")).to_numpy().astype(np.float32)


def _text(s: pl.Series) -> np.ndarray:
    return np.asarray(s.cast(pl.String).fill_null("").to_list(), dtype=object)


_YEAR = r"\((\d{4})(?:\s*[-\u2013]\s*(?:\d{4})?)?\)\s*$"  # "(1995)", "(2006-2007)", "(2007-)"


def _movie_features(title: pl.Series, genres: pl.Series) -> FeatureTable:
    """title (text), year (from "(1995)" ending the title; NaN if absent), genres (multihot)."""
    title = title.str.strip_chars()
    year = title.str.extract(_YEAR, 1).cast(pl.Float32)
    glist = genres.str.split("|").list.eval(
        pl.element().filter((pl.element() != "(no genres listed)") & (pl.element() != ""))
    )
    return FeatureTable(
        n=len(title),
        text={"title": _text(title)},
        numeric={"year": _numeric(year)},
        multihot={"genres": _multihot(glist)},
    )


# =============================================================================================
# embedded / movielens
# =============================================================================================
def embedded_path() -> Path:
    """Directory of the MovieLens latest-small copy shipped with the package."""
    return Path(str(files("recstack").joinpath("data", "embedded", "ml-latest-small")))


def read_embedded() -> Interactions:
    """MovieLens latest-small (100,004 ratings, 671 users, 9,066 rated movies) with item
    features title / year / genres; movies without ratings are not items."""
    return _read_ml_csv(embedded_path(), name="ml-latest-small", fmt="embedded")


def _read_ml_csv(d: Path, *, name: str, fmt: str) -> Interactions:
    """ratings.csv + movies.csv (MovieLens 20M, 25M, 32M, latest, latest-small)."""
    r = _read_delim(
        d / "ratings.csv",
        {"userId": "int", "movieId": "int", "rating": "float", "timestamp": "int"},
        sep=",", what="MovieLens ratings.csv (userId,movieId,rating,timestamp)",
    )
    out = _build(r["userId"], r["movieId"], rating=r["rating"], timestamp=r["timestamp"],
                 name=name, fmt=fmt, log=[f"read {r.height} ratings from {d / 'ratings.csv'}"])
    movies = d / "movies.csv"
    if movies.exists():
        m = _read_delim(movies, {"movieId": "int", "title": "str", "genres": "str"}, sep=",",
                        what="MovieLens movies.csv (movieId,title,genres)")
        row_of = _rows_for(out.item_vocab, m["movieId"], movies, 2, "movieId")
        out.item_features = _movie_features(_gather(m["title"], row_of), _gather(m["genres"], row_of))
    return out


def read_movielens(path: str | Path, cache_dir: str | Path | None = None) -> Interactions:
    """A MovieLens release directory, release auto-detected; or a release name.

    - 100K: ``u.data`` (+ ``u.item``, ``u.user``, ``u.genre``); user features age (numeric),
      gender / occupation / zip (categorical); item features title, year, genres.
    - 1M / 10M: ``ratings.dat`` with ``::`` separators (+ ``movies.dat``; 1M: ``users.dat`` with
      gender / age / occupation / zip, all categorical since 1M codes age and occupation).
    - 20M / 25M / 32M / latest: ``ratings.csv`` + ``movies.csv``.

    If `path` is not a directory but a release name such as ``ml-1m``, the release is downloaded
    (or taken from the cache, see `recstack.data.download.download_movielens`).
    """
    d = Path(path)
    if not d.exists():
        from recstack.data.download import MOVIELENS_RELEASES, download_movielens

        if str(path) in MOVIELENS_RELEASES:
            d = download_movielens(str(path), Path(cache_dir) if cache_dir else None)
        else:
            raise DataError(
                "not found; expected a MovieLens directory (with u.data, ratings.dat or "
                f"ratings.csv) or a release name ({', '.join(MOVIELENS_RELEASES)})", path=str(d))
    _need_dir(d, "a MovieLens release (u.data, ratings.dat or ratings.csv)")
    marker = ("u.data", "ratings.dat", "ratings.csv")
    if not any((d / f).exists() for f in marker):
        # a zip extracted one level too high: descend into its single sub-directory
        subs = [p for p in d.iterdir() if p.is_dir()]
        if len(subs) == 1 and any((subs[0] / f).exists() for f in marker):
            d = subs[0]
    name = d.name
    if (d / "u.data").exists():
        return _read_ml100k(d, name)
    if (d / "ratings.dat").exists():
        return _read_ml_dat(d, name)
    if (d / "ratings.csv").exists():
        return _read_ml_csv(d, name=name, fmt="movielens")
    raise DataError(
        "no MovieLens release found: expected u.data (100K), ratings.dat (1M/10M) or "
        "ratings.csv (20M/25M/32M/latest) in this directory", path=str(d))


def _read_ml100k(d: Path, name: str) -> Interactions:
    r = _read_delim(
        d / "u.data", {"user": "int", "item": "int", "rating": "float", "timestamp": "int"},
        sep="\t", header=False, names=["user", "item", "rating", "timestamp"], quote=None,
        what="MovieLens 100K u.data (user item rating timestamp, tab-separated)",
    )
    out = _build(r["user"], r["item"], rating=r["rating"], timestamp=r["timestamp"], name=name,
                 fmt="movielens", log=[f"read {r.height} ratings from {d / 'u.data'}"])
    genres = list(ML100K_GENRES)
    if (d / "u.genre").exists():
        g = _read_delim(d / "u.genre", {"genre": "str", "index": "int"}, sep="|", header=False,
                        names=["genre", "index"], quote=None, encoding="auto")
        genres = g.sort("index")["genre"].to_list()
    item_path = d / "u.item"
    if item_path.exists():
        flags = [f"g{k}" for k in range(len(genres))]
        names = ["item", "title", "release_date", "video_release_date", "url", *flags]
        want = {"item": "int", "title": "str", "release_date": "str", **dict.fromkeys(flags, "int")}
        m = _read_delim(item_path, want, sep="|", header=False, names=names, quote=None,
                        encoding="auto", what="MovieLens 100K u.item")
        bad = m.select(pl.any_horizontal([~pl.col(f).is_in([0, 1]) for f in flags]))
        i = _first_true(bad.to_series().to_numpy())
        if i is not None:
            f = next(f for f in flags if m[f][i] not in (0, 1))
            raise DataError(f"genre flag must be 0 or 1, got {m[f][i]}", path=str(item_path),
                            line=i + 1, field=genres[flags.index(f)])
        glist = m.select(
            pl.concat_list([pl.when(pl.col(f) == 1).then(pl.lit(g)) for f, g in zip(flags, genres, strict=True)])
            .list.drop_nulls().alias("g")
        )["g"]
        row_of = _rows_for(out.item_vocab, m["item"], item_path, 1, "item")
        title = _gather(m["title"], row_of)
        year = title.str.strip_chars().str.extract(_YEAR, 1).fill_null(
            _gather(m["release_date"], row_of).str.extract(r"(\d{4})\s*$", 1)
        )
        out.item_features = FeatureTable(
            n=out.n_items,
            text={"title": _text(title)},
            numeric={"year": _numeric(year.cast(pl.Float32))},
            multihot={"genres": _multihot(_gather(glist, row_of))},
        )
    user_path = d / "u.user"
    if user_path.exists():
        u = _read_delim(user_path, {"user": "int", "age": "float", "gender": "str",
                                    "occupation": "str", "zip": "str"},
                        sep="|", header=False, names=["user", "age", "gender", "occupation", "zip"],
                        quote=None, encoding="auto", what="MovieLens 100K u.user")
        row_of = _rows_for(out.user_vocab, u["user"], user_path, 1, "user")
        out.user_features = FeatureTable(
            n=out.n_users,
            numeric={"age": _numeric(_gather(u["age"], row_of))},
            categorical={c: _categorical(_gather(u[c], row_of)) for c in ("gender", "occupation", "zip")},
        )
    return out


def _read_ml_dat(d: Path, name: str) -> Interactions:
    """1M / 10M: ``::``-separated ratings.dat, movies.dat, users.dat (1M)."""
    r = _read_sep_lines(
        d / "ratings.dat", "::", ["user", "item", "rating", "timestamp"],
        {"user": "int", "item": "int", "rating": "float", "timestamp": "int"},
        what="MovieLens ratings.dat (user::item::rating::timestamp)",
    )
    out = _build(r["user"], r["item"], rating=r["rating"], timestamp=r["timestamp"], name=name,
                 fmt="movielens", log=[f"read {r.height} ratings from {d / 'ratings.dat'}"])
    movies = d / "movies.dat"
    if movies.exists():
        m = _read_sep_lines(movies, "::", ["item", "title", "genres"],
                            {"item": "int", "title": "str", "genres": "str"}, encoding="auto",
                            what="MovieLens movies.dat")
        row_of = _rows_for(out.item_vocab, m["item"], movies, 1, "item")
        out.item_features = _movie_features(_gather(m["title"], row_of), _gather(m["genres"], row_of))
    users = d / "users.dat"
    if users.exists():
        cols = ["user", "gender", "age", "occupation", "zip"]
        u = _read_sep_lines(users, "::", cols, {"user": "int", **dict.fromkeys(cols[1:], "str")},
                            encoding="auto", what="MovieLens users.dat")
        row_of = _rows_for(out.user_vocab, u["user"], users, 1, "user")
        out.user_features = FeatureTable(
            n=out.n_users, categorical={c: _categorical(_gather(u[c], row_of)) for c in cols[1:]}
        )
    return out


# =============================================================================================
# RecBole atomic files
# =============================================================================================
_ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def _atomic_header(path: Path) -> dict[str, tuple[str, str]]:
    """{plain name: (header column, type)} of an atomic file."""
    cols = _columns(path, path, dict(separator="\t", quote_char=None, has_header=True), True, None)
    out = {}
    for c in cols:
        name, colon, typ = c.rpartition(":")
        if not colon or typ not in _ATOMIC_TYPES:
            raise DataError(f"header column must be name:type with type in {', '.join(_ATOMIC_TYPES)}",
                            path=str(path), line=1, field=c)
        out[name] = (c, typ)
    return out


def read_atomic(
    path: str | Path,
    user: str = "user_id",
    item: str = "item_id",
    rating: str = "rating",
    timestamp: str = "timestamp",
    id_type: str = "auto",
) -> Interactions:
    """RecBole atomic files: ``<name>.inter`` (+ ``<name>.user``, ``<name>.item``).

    `path` is the directory (holding exactly one ``.inter``) or the ``.inter`` file. Tab-separated
    with typed headers (``name:token|token_seq|float|float_seq``). Features: token -> categorical,
    float -> numeric, token_seq -> multihot (space-separated), or text when the column name
    contains "title"; float_seq columns are skipped (no feature type for them; logged).
    Ids that are all canonical integers become ints (`id_type` "str" keeps them as text).
    Feature rows of entities without interactions are dropped; entities without a feature row
    get missing values (-1 / NaN / empty).
    """
    if id_type not in ("auto", "int", "str"):
        raise DataError(f"id_type must be auto, int or str, got {id_type!r}")
    p = Path(path)
    if p.is_dir():
        inters = sorted(p.glob("*.inter"))
        if len(inters) != 1:
            found = ", ".join(x.name for x in inters) or "none"
            raise DataError(f"expected exactly one <name>.inter file in this directory, found: {found}"
                            " (give the .inter file itself to choose)", path=str(p))
        inter = inters[0]
    else:
        inter = _need_file(p if p.suffix == ".inter" else p.with_suffix(".inter"),
                           "a RecBole atomic <name>.inter file (or a directory holding one)")
    stem = inter.stem
    head = _atomic_header(inter)
    for role, col in (("user", user), ("item", item)):
        if col not in head:
            raise DataError(f"no {role} column '{col}'; columns: {', '.join(h for h, _ in head.values())}",
                            path=str(inter), line=1, field=col)
    want = {head[user][0]: "id", head[item][0]: "id"}
    if rating in head:
        want[head[rating][0]] = "float"
    if timestamp in head:
        want[head[timestamp][0]] = "time"
    df = _read_delim(inter, want, sep="\t", quote=None, id_type=id_type,
                     what="a RecBole atomic .inter file")
    ignored = [h for h, _ in head.values() if h not in want]
    log = [f"read {df.height} interactions from {inter}"]
    if ignored:
        log.append(f"ignored .inter columns: {', '.join(ignored)}")
    out = _build(
        df[head[user][0]], df[head[item][0]],
        rating=df[head[rating][0]] if rating in head else None,
        timestamp=df[head[timestamp][0]] if timestamp in head else None,
        name=stem, fmt="atomic", log=log,
    )
    for kind, col, vocab in (("user", user, out.user_vocab), ("item", item, out.item_vocab)):
        fpath = inter.with_name(f"{stem}.{kind}")
        if fpath.exists():
            table, skipped = _atomic_features(fpath, col, vocab)
            setattr(out, f"{kind}_features", table)
            if skipped:
                out.log.append(f"skipped float_seq columns of {fpath.name}: {', '.join(skipped)}")
    return out


def _atomic_features(path: Path, id_col: str, vocab: Vocab) -> tuple[FeatureTable, list[str]]:
    head = _atomic_header(path)
    if id_col not in head:
        raise DataError(f"no id column '{id_col}'", path=str(path), line=1, field=id_col)
    idh = head[id_col][0]
    want = {idh: "id"}
    for name, (h, typ) in head.items():
        if name != id_col:
            want[h] = "float?" if typ == "float" else "str"
    df = _read_delim(path, want, sep="\t", quote=None, id_type="str", what="a RecBole atomic feature file")
    row_of = _rows_for(vocab, df[idh], path, 2, idh)
    table = FeatureTable(n=len(vocab))
    skipped = []
    for name, (h, typ) in head.items():
        if name == id_col:
            continue
        s = _gather(df[h], row_of)
        if typ == "float":
            table.numeric[name] = _numeric(s)
        elif typ == "token":
            table.categorical[name] = _categorical(s)
        elif typ == "token_seq" and "title" in name.lower():
            table.text[name] = _text(s)
        elif typ == "token_seq":
            tokens = s.str.split(" ").list.eval(pl.element().filter(pl.element() != ""))
            table.multihot[name] = _multihot(tokens)
        else:
            skipped.append(h)
    return table, skipped


# =============================================================================================
# one-user-per-line formats
# =============================================================================================
def _user_lines(path: Path, what: str, allow_empty_users: bool, min_id: int
                ) -> tuple[pl.DataFrame, pl.Series]:
    """Parse ``user item item ...`` lines.

    Returns (pairs, users): pairs has columns row (0-based line index), pos (position among
    the line's items), user, item; users holds every line's user id (also item-less ones).
    """
    _need_file(path, what)
    lines = _read_lines(path, path)
    end, errors = _blank_lines(lines, path, 0)
    if end == 0:
        raise DataError("file is empty", path=str(path), line=1)
    body = lines.head(end).fill_null("")
    tok = body.str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")
    lens = tok.list.len().to_numpy().astype(np.int64)
    flat = tok.explode()
    starts = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=starts[1:])
    row = np.repeat(np.arange(len(lens)), lens)
    pos = np.arange(len(flat)) - starts[row]  # 0 = the user id, k = k-th item
    vals = flat.cast(pl.Int64, strict=False)
    bad = (vals.is_null() | (vals < min_id)).fill_null(True).to_numpy() & (flat != "").fill_null(False).to_numpy()
    i = _first_true(bad)
    if i is not None:
        field = "user" if pos[i] == 0 else f"item {pos[i]}"
        base = "a non-negative integer" if min_id == 0 else f"an integer >= {min_id}"
        errors.append((int(row[i]), DataError(f"expected {base}, got {_show(flat[i])}",
                                              path=str(path), line=int(row[i]) + 1, field=field)))
    _raise_first(errors)  # ids must parse before users can be compared
    v = vals.to_numpy()
    users = pl.Series("user", v[starts[:-1]])
    if not allow_empty_users:
        i = _first_true(lens == 1)
        if i is not None:
            errors.append((i, DataError("user has no items", path=str(path), line=i + 1, field="item 1")))
    dup = ~users.is_first_distinct().to_numpy()
    i = _first_true(dup)
    if i is not None:
        j = _first_true((users == users[i]).to_numpy())
        errors.append((i, DataError(f"user {users[i]} appears again (first on line {j + 1})",
                                    path=str(path), line=i + 1, field="user")))
    _raise_first(errors)
    is_item = pos > 0
    pairs = pl.DataFrame({
        "row": row[is_item], "pos": pos[is_item] - 1,
        "user": np.repeat(v[starts[:-1]], lens - 1), "item": v[is_item],
    })
    return pairs, users


def read_lightgcn(path: str | Path) -> Interactions:
    """LightGCN/NGCF split: ``train.txt`` and ``test.txt`` in `path`, one line per user
    (``user item item ...``, 0-based ints). `fold` is TRAIN / TEST; no timestamp. A line with
    only a user id is a user without items (kept in the user vocabulary)."""
    d = _need_dir(Path(path), "train.txt and test.txt (LightGCN format)")
    parts, users, folds = [], [], []
    for fname, fold in (("train.txt", TRAIN), ("test.txt", TEST)):
        pairs, u = _user_lines(d / fname, f"LightGCN {fname} (one line per user: user item item ...)",
                               allow_empty_users=True, min_id=0)
        parts.append(pairs)
        users.append(u)
        folds.append(np.full(pairs.height, fold, np.int8))
    df = pl.concat(parts)
    return _build(df["user"], df["item"], fold=np.concatenate(folds), all_users=pl.concat(users),
                  name=d.name, fmt="lightgcn",
                  log=[f"read {parts[0].height} train and {parts[1].height} test interactions from {d}"])


def read_s3rec(path: str | Path) -> Interactions:
    """S3-Rec sequences: one line per user, ``user item item ...`` in time order (1-based ids).

    timestamp = position in the user's sequence (0, 1, 2, ...). If ``<stem>_item2attributes.json``
    lies beside the file, items get the multihot feature ``attributes``.
    """
    p = Path(path)
    pairs, _ = _user_lines(p, "an S3-Rec sequence file (one line per user: user item item ...)",
                           allow_empty_users=False, min_id=1)
    out = _build(pairs["user"], pairs["item"], timestamp=pairs["pos"], name=p.stem, fmt="s3rec",
                 log=[f"read {pairs.height} interactions from {p}"])
    attr = p.with_name(f"{p.stem}_item2attributes.json")
    if attr.exists():
        out.item_features = FeatureTable(n=out.n_items, multihot={"attributes": _item_attributes(attr, out.item_vocab)})
    return out


def _item_attributes(path: Path, vocab: Vocab) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg}", path=str(path), line=e.lineno) from None
    if not isinstance(obj, dict):
        raise DataError("expected a JSON object mapping item id -> list of attribute ids", path=str(path))
    keys = pl.Series("item", list(obj.keys()), dtype=pl.String)
    ids = keys.cast(pl.Int64, strict=False)
    i = _first_true(ids.is_null().to_numpy())
    if i is not None:
        raise DataError(f"item id must be an integer, got {_show(keys[i])}", path=str(path), field=keys[i])
    try:
        vals = pl.Series("attributes", list(obj.values()), dtype=pl.List(pl.Int64), strict=True)
    except (TypeError, pl.exceptions.PolarsError):
        vals = None
    if vals is None or vals.null_count():
        # error path only: find the offending entry
        for k, v in obj.items():
            if not isinstance(v, list) or not all(isinstance(a, int) and not isinstance(a, bool) for a in v):
                raise DataError(f"expected a list of integer attribute ids, got {_show(v)}",
                                path=str(path), field=k) from None
    row_of = _rows_for(vocab, ids, path, 1, "item")
    return _multihot(_gather(vals, row_of))


def read_sasrec(path: str | Path) -> Interactions:
    """SASRec: ``user item`` per line (space-separated), in time order per user;
    timestamp = position within the user's rows (0, 1, 2, ...)."""
    p = Path(path)
    df = _read_delim(p, {"user": "int", "item": "int"}, sep=" ", header=False, names=["user", "item"],
                     quote=None, what="a SASRec file (user item per line)")
    ts = df.select(pl.int_range(pl.len()).over("user").alias("t"))["t"]
    return _build(df["user"], df["item"], timestamp=ts, name=p.stem, fmt="sasrec",
                  log=[f"read {df.height} interactions from {p}"])


# =============================================================================================
# csv / parquet
# =============================================================================================
_DEFAULT_NAMES = {
    "user": ("user", "userid", "user_id", "uid"),
    "item": ("item", "itemid", "item_id", "movieid", "iid"),
    "rating": ("rating", "score"),
    "timestamp": ("timestamp", "ts", "time"),
    "weight": ("weight",),
}
_OFF = ("", "none", "false", "no")


def _resolve_columns(cols: list[str], given: dict[str, object], header: bool, path: Path
                     ) -> dict[str, str]:
    """Role (user/item/rating/timestamp/weight) -> column name, from options or defaults."""
    out: dict[str, str] = {}
    lower = {c.strip().lower(): c for c in reversed(cols)}
    for role, value in given.items():
        if value is False or (isinstance(value, str) and value.strip().lower() in _OFF):
            continue  # explicitly switched off
        if value is None:
            if header:
                found = next((lower[n] for n in _DEFAULT_NAMES[role] if n in lower), None)
            else:  # headerless: user, item, rating, timestamp by position
                k = ("user", "item", "rating", "timestamp").index(role) if role != "weight" else 99
                found = cols[k] if k < len(cols) else None
            if found is None and role in ("user", "item"):
                raise DataError(
                    f"no {role} column found (tried {', '.join(_DEFAULT_NAMES[role])}); pass "
                    f"{role}=<column>; columns: {', '.join(cols)}", path=str(path), line=1, field=role)
            if found is not None:
                out[role] = found
            continue
        name = str(value)
        if name in cols:
            out[role] = name
        elif name.isdigit() and int(name) < len(cols):
            out[role] = cols[int(name)]  # 0-based position
        else:
            raise DataError(f"column '{name}' (for {role}) not found; columns: {', '.join(cols)}",
                            path=str(path), line=1 if header else None, field=name)
    if len(set(out.values())) < len(out):
        raise DataError(f"the same column is used for two roles: {out}", path=str(path), line=1)
    return out


def _sep(sep: str) -> str:
    named = {"tab": "\t", "\\t": "\t", "space": " ", "comma": ",", "semicolon": ";", "pipe": "|"}
    s = named.get(sep.lower(), sep) if len(sep) != 1 else sep
    if len(s) != 1:
        raise DataError(f"sep must be a single character (or tab/space/comma/semicolon/pipe), got {sep!r}")
    return s


def read_csv(
    path: str | Path,
    user: str | None = None,
    item: str | None = None,
    rating: str | None = None,
    timestamp: str | None = None,
    weight: str | None = None,
    sep: str = ",",
    header: bool = True,
    id_type: str = "auto",
) -> Interactions:
    """A delimited interaction file.

    Column options name the columns (or give 0-based positions); by default the first of
    user/userId/user_id/uid, item/itemId/item_id/movieId/iid, rating/score,
    timestamp/ts/time, weight is used (case-insensitive). Pass ``rating="none"`` to ignore a
    column. Without a header, columns are taken by position: user, item, rating, timestamp.
    `id_type`: "auto" (integers when the first rows' ids look like canonical integers, else
    text), "int" or "str". Ratings / timestamps / weights must be numeric.
    """
    p = Path(path)
    _need_file(p, "a delimited interaction file")
    if id_type not in ("auto", "int", "str"):
        raise DataError(f"id_type must be auto, int or str, got {id_type!r}")
    s = _sep(sep)
    kw = dict(separator=s, quote_char='"', has_header=header)
    if header:
        cols = _columns(p, p, kw, True, None)
    else:
        first = _read_lines(p, p).drop_nulls().head(1)
        if not len(first):
            raise DataError("file is empty", path=str(p), line=1)
        cols = [f"column_{k + 1}" for k in range(first.str.count_matches(s, literal=True)[0] + 1)]
    roles = _resolve_columns(cols, {"user": user, "item": item, "rating": rating,
                                    "timestamp": timestamp, "weight": weight}, header, p)
    kinds = {"user": "id", "item": "id", "rating": "float", "timestamp": "time", "weight": "float"}
    want = {roles[r]: kinds[r] for r in roles}
    df = _read_delim(p, want, sep=s, header=header, names=None if header else cols, id_type=id_type,
                     what="a delimited interaction file")
    log = [f"read {df.height} rows from {p} (columns {roles})"]
    log += [f"{r} ids are not all canonical integers: kept as text" for r in ("user", "item")
            if id_type == "auto" and df[roles[r]].dtype == pl.String]
    return _build(
        df[roles["user"]], df[roles["item"]],
        rating=df[roles["rating"]] if "rating" in roles else None,
        timestamp=df[roles["timestamp"]] if "timestamp" in roles else None,
        weight=df[roles["weight"]] if "weight" in roles else None,
        name=p.stem, fmt="csv", log=log,
    )


def read_parquet(
    path: str | Path,
    user: str | None = None,
    item: str | None = None,
    rating: str | None = None,
    timestamp: str | None = None,
    weight: str | None = None,
    id_type: str = "auto",
) -> Interactions:
    """A parquet interaction file; column options as in `read_csv`. Integer id columns stay ints
    (`id_type` "str" makes them text), text ids stay text; null values are errors."""
    p = _need_file(Path(path), "a parquet interaction file")
    try:
        schema = pl.read_parquet_schema(p)
    except Exception as e:  # polars raises several types for non-parquet input
        raise DataError(f"not a readable parquet file: {_first_line(e)}", path=str(p)) from None
    cols = list(schema)
    roles = _resolve_columns(cols, {"user": user, "item": item, "rating": rating,
                                    "timestamp": timestamp, "weight": weight}, True, p)
    df = pl.read_parquet(p, columns=list(dict.fromkeys(roles.values())))
    if df.height == 0:
        raise DataError("no rows", path=str(p))
    typed = {}
    for role, col in roles.items():
        s = df[col]
        i = _first_true(s.is_null().to_numpy())
        if i is not None:
            raise DataError(f"row {i + 1}: missing value", path=str(p), field=col)
        if role in ("user", "item"):
            if id_type == "str":
                s = s.cast(pl.String)
            elif s.dtype.is_float():
                c = s.cast(pl.Int64, strict=False)
                j = _first_true((c.is_null() | (c.cast(pl.Float64) != s)).to_numpy())
                if j is not None:
                    raise DataError(f"row {j + 1}: id {_show(s[j])} is not an integer", path=str(p), field=col)
                s = c
            elif id_type == "int" and not s.dtype.is_integer():
                c = s.cast(pl.String).str.strip_chars().cast(pl.Int64, strict=False)
                j = _first_true(c.is_null().to_numpy())
                if j is not None:
                    raise DataError(f"row {j + 1}: expected an integer id, got {_show(s[j])}",
                                    path=str(p), field=col)
                s = c
            typed[role] = _as_ids(s)
            continue
        if not s.dtype.is_numeric():
            c = s.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
            j = _first_true(c.is_null().to_numpy())
            if j is not None:
                raise DataError(f"row {j + 1}: expected a number, got {_show(s[j])}", path=str(p), field=col)
            s = c
        if s.dtype.is_float():
            j = _first_true((~s.is_finite()).to_numpy())
            if j is not None:
                raise DataError(f"row {j + 1}: expected a finite number, got {s[j]}", path=str(p), field=col)
        typed[role] = s
    return _build(typed["user"], typed["item"], rating=typed.get("rating"),
                  timestamp=typed.get("timestamp"), weight=typed.get("weight"),
                  name=p.stem, fmt="parquet", log=[f"read {df.height} rows from {p} (columns {roles})"])


FORMATS: dict[str, Callable[..., Interactions]] = {
    "embedded": read_embedded,
    "movielens": read_movielens,
    "atomic": read_atomic,
    "lightgcn": read_lightgcn,
    "s3rec": read_s3rec,
    "sasrec": read_sasrec,
    "csv": read_csv,
    "parquet": read_parquet,
}
