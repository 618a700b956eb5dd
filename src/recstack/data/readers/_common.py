"""Shared by every reader: validation and error reporting in one place.

File checks (`_need_file`, `_need_dir`), reading bytes and lines, invalid UTF-8, the blank-line
policy, typed columns (`_cast_columns`), delimited reading with its slow diagnosing path
(`_read_delim`, `_read_sep_lines`), the "one user per line" parser used by lightgcn and s3rec
(`_user_lines`), encoding ids into an `Interactions` (`_build`) and the feature-table helpers.

Bad input is never dropped silently: a :class:`DataError` names the file, the 1-based line
(counting the header line) and the field. The happy path reads typed columns directly; only when
that fails, or leaves nulls behind, the file is read again as text to locate the first offending
line (so errors cost time, data don't).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from recstack.data.dataset import Interactions, Vocab, _as_ids
from recstack.data.errors import DataError

# Rows read as text to guess column types before the typed read.
_SNIFF_ROWS = 1000
# Dense lookup tables for integer ids are used when the id range is at most this many slots.

_Src = Path | bytes  # a file, or its contents re-encoded as UTF-8 (for latin-1 files)


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


_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 24  # compressed bytes decompressed per step


def _is_gzip(path: Path) -> bool:
    """Whether `path` is a file starting with the gzip magic bytes."""
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _inflate(path: Path, keep: bool) -> tuple[bytes, int, bytes]:
    """Decompress a gzip file (several members allowed) in chunks.

    Returns (the contents when `keep` else b"", number of line breaks, the last 64 KiB).

    Raises:
        DataError: truncated or corrupt gzip data, naming the file and the line it breaks on.
    """
    out: list[bytes] = []
    size = lines = 0
    tail = b""

    def take(b: bytes) -> None:
        nonlocal size, lines, tail
        size, lines, tail = size + len(b), lines + b.count(b"\n"), (tail + b)[-65536:]
        if keep:
            out.append(b)

    def fail(what: str) -> DataError:
        return DataError(f"{what} after {size:,} decompressed bytes", path=str(path), line=lines + 1)

    d, fed = zlib.decompressobj(31), False
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            while chunk:
                fed = True
                try:
                    take(d.decompress(chunk))
                except zlib.error as e:
                    raise fail(f"corrupt gzip data ({e})") from None
                chunk = b""
                if d.eof:  # a member ended; what follows must be another member
                    chunk, d, fed = d.unused_data, zlib.decompressobj(31), False
    if fed and not d.eof:
        take(d.flush())
        raise fail("truncated gzip file: the compressed data ends")
    return b"".join(out), lines, tail


def _gunzip(path: Path) -> bytes:
    """The decompressed contents of a gzip file (DataError when truncated or corrupt)."""
    return _inflate(path, True)[0]


def _text_lines(path: Path) -> tuple[int, int]:
    """(lines, blank lines at the end) of a text file, gzip or not, in constant memory."""
    if _is_gzip(path):
        _, breaks, tail = _inflate(path, False)
        return breaks + int(bool(tail) and not tail.endswith(b"\n")), _trailing_blank_lines(tail)
    return _n_lines(path), _trailing_blank_lines(path)


def _source(path: Path, encoding: str) -> _Src:
    """The file itself for plain UTF-8; otherwise its text as UTF-8 bytes (gzip files are
    decompressed here, so that line numbers and checks refer to the text).

    encoding "auto" = UTF-8 when the bytes are valid UTF-8, else latin-1 (old MovieLens files).
    """
    gz = _is_gzip(path)
    if encoding == "utf-8" and not gz:
        return path
    raw = _gunzip(path) if gz else path.read_bytes()
    if encoding == "utf-8":
        return raw
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
    except OSError as e:  # e.g. broken compressed data polars decompresses itself
        raise DataError(f"could not be read: {_first_line(e)}", path=str(path)) from None
    return df["line"]


def _n_lines(src: _Src) -> int:
    """Lines in the file (a last line without a line break counts)."""
    if isinstance(src, bytes):
        return src.count(b"\n") + int(bool(src) and not src.endswith(b"\n"))
    n, last = 0, b""
    with open(src, "rb") as f:
        while chunk := f.read(_CHUNK):
            n, last = n + chunk.count(b"\n"), chunk
    return n + int(bool(last) and not last.endswith(b"\n"))


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
    src: _Src | None = None,
) -> pl.DataFrame:
    """Read the columns `want` (name -> kind, see `_cast_columns`) of a delimited file, typed.

    With `header`, names come from the first line; else `names` gives every column. Fast path:
    one typed polars read (dtypes guessed from the first rows). If it fails or leaves nulls,
    `_diagnose` rereads the file as text and either raises at the first bad line or returns the
    correctly typed data (e.g. ids that turned out not to be integers after the sniffed rows).
    `src`: the file's contents when the caller already has them (`_source`).
    """
    if src is None:
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
    texts = [c for c in want if want[c] in ("id", "str") and schema[c] == pl.String]
    df = df.with_columns([pl.col(c).str.strip_chars() for c in texts])  # as `_cast_columns` does
    df = _clean_typed(df, src, [pl.col(c).is_null() for c in checked]
                      + [~pl.col(c).is_finite() for c in floats]
                      + [pl.col(c) == "" for c in texts if want[c] == "id"])  # blank id
    if df is None:
        return _diagnose(src, path, want, cols, kw, id_type)
    if quote is not None and df.height != _n_lines(src) - int(header) - _trailing_blank_lines(src):
        return _diagnose(src, path, want, cols, kw, id_type)  # a quoted line break merged lines
    if df.height == 0:
        raise DataError("no data rows", path=str(path), line=2 if header else 1)
    return df.select([pl.when(pl.col(c) == "").then(None).otherwise(pl.col(c)).alias(c)
                      if c in texts else pl.col(c) for c in want])


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
    except OSError as e:  # e.g. broken compressed data polars decompresses itself
        raise DataError(f"could not be read: {_first_line(e)}", path=str(path)) from None
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
    lines = _read_lines(_source(path, "utf-8"), path)
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

