"""csv (delimited file with a header, or headerless) and parquet, with column mapping options."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recstack.data.dataset import Interactions, _as_ids
from recstack.data.errors import DataError
from recstack.data.readers._common import (
    _build,
    _columns,
    _first_line,
    _first_true,
    _need_file,
    _read_delim,
    _read_lines,
    _show,
    _source,
)

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


_INT64_MAX = 2**63 - 1


def _check_parquet_dtype(dtype: pl.DataType, role: str, path: Path, col: str) -> None:
    """DataError unless `dtype` can hold `role`: numbers or text (ids also categories)."""
    ok = dtype.is_numeric() or dtype == pl.String
    if role in ("user", "item"):
        ok = ok or isinstance(dtype, (pl.Categorical, pl.Enum))
    if not ok:
        want = "integer or text ids" if role in ("user", "item") else "numbers"
        raise DataError(f"column type {dtype} cannot hold {role} values (expected {want})",
                        path=str(path), field=col)


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
    src = _source(p, "utf-8")  # gzip files are decompressed once, here
    if header:
        cols = _columns(src, p, kw, True, None)
    else:
        first = _read_lines(src, p).drop_nulls().head(1)
        if not len(first):
            raise DataError("file is empty", path=str(p), line=1)
        cols = [f"column_{k + 1}" for k in range(first.str.count_matches(s, literal=True)[0] + 1)]
    roles = _resolve_columns(cols, {"user": user, "item": item, "rating": rating,
                                    "timestamp": timestamp, "weight": weight}, header, p)
    kinds = {"user": "id", "item": "id", "rating": "float", "timestamp": "time", "weight": "float"}
    want = {roles[r]: kinds[r] for r in roles}
    df = _read_delim(p, want, sep=s, header=header, names=None if header else cols, id_type=id_type,
                     what="a delimited interaction file", src=src)
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
    for role, col in roles.items():
        _check_parquet_dtype(schema[col], role, p, col)
    try:
        df = pl.read_parquet(p, columns=list(dict.fromkeys(roles.values())))
    except Exception as e:  # truncated / corrupt pages: several polars exception types
        raise DataError(f"not a readable parquet file: {_first_line(e)}", path=str(p)) from None
    if df.height == 0:
        raise DataError("no rows", path=str(p))
    typed = {}
    for role, col in roles.items():
        s = df[col]
        i = _first_true(s.is_null().to_numpy())
        if i is not None:
            raise DataError(f"row {i + 1}: missing value", path=str(p), field=col)
        if s.dtype == pl.UInt64 and not (role in ("user", "item") and id_type == "str"):
            j = _first_true((s > _INT64_MAX).to_numpy())
            if j is not None:
                raise DataError(f"row {j + 1}: {s[j]} does not fit in a signed 64-bit integer (UInt64 "
                                "column)" + ("; pass id_type=str to read the ids as text"
                                             if role in ("user", "item") else ""), path=str(p), field=col)
        if role in ("user", "item"):
            if s.dtype == pl.String:
                j = _first_true((s.str.strip_chars() == "").to_numpy())
                if j is not None:
                    raise DataError(f"row {j + 1}: missing value (empty id)", path=str(p), field=col)
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

