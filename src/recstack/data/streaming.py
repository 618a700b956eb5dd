"""Out-of-core data preparation: k-core and leave-one-out split of files larger than memory.

`prepare_streaming` runs the same steps as `load` + `kcore` + `split_leave_one_out` +
`save_split`, but on Polars lazy queries executed by the streaming engine, so no step holds
the interactions in memory: only per-user and per-item tables (counts, last rows) are
materialised. The input is parsed once into a compact Parquet stage file (ids, timestamp, row
number); every later pass scans that file. Bad input is rejected as the in-memory readers reject
it (a `DataError` naming the file, the line, or data row for Parquet, and the field): a missing
or unconvertible id, timestamp or rating, rows that do not line up with lines (quoted line breaks),
broken gzip data. Timestamps are compared as numbers (text columns are converted). Then:

1. k-core: group-by counts of users and items over the rows still alive, repeated until no
   user or item is below its minimum (alive sets are applied with semi-joins);
2. vocabularies: the surviving raw ids, sorted (recstack's `Vocab` order), written as
   `user_vocab.parquet` / `item_vocab.parquet`: index i of an entity is its row in that file;
3. leave-one-out by time (ties: the later row is the later interaction): per-user max
   timestamp, then the max row among the rows at that time; again without the test rows for
   valid; users with 1 interaction stay in train, with 2 get no valid item;
4. the parts are written in one pass, with the raw ids plus their vocabulary indices, the
   timestamp, an optional rating (`rating_col`: the label a CTR task needs) and `row`, the
   input's data row.

The output directory is a recstack split (`load_split` reads it when it fits in memory, and
`recstack train --data split:DIR` trains on it) with the same parts a single-process `kcore` +
`split_leave_one_out` gives. Row order inside a part file follows the streaming engine;
`load_split` sorts each part by `row`, so the parts it returns are in the file's order (ties in
time keep that order in a user's sequence, as in memory).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from recstack.data.errors import DataError
from recstack.data.transforms import _SPLIT_FORMAT, _SPLIT_VERSION

_STREAM = {"engine": "streaming"}


def _n(x: int) -> str:
    return f"{x:,}"


def _lazy_source(path: Path, sep: str, has_header: bool,
                 strings: list[str] | None = None) -> pl.LazyFrame:
    """The file as a lazy frame (`strings`: CSV columns read as text instead of inferred)."""
    if path.suffix == ".parquet":
        return pl.scan_parquet(path)
    over = {c: pl.String for c in strings} if strings else None
    return pl.scan_csv(path, separator=sep, has_header=has_header, infer_schema_length=10_000,
                       schema_overrides=over)


def _unreadable(path: Path, exc: Exception) -> DataError:
    """A DataError for a file polars could not read (a broken gzip file is located)."""
    from recstack.data.readers._common import _first_line, _inflate, _is_gzip

    if isinstance(exc, pl.exceptions.NoDataError):
        return DataError("file is empty", path=str(path), line=1)
    if path.is_file() and _is_gzip(path):
        try:
            _inflate(path, keep=False)
        except DataError as e:
            return e
    return DataError(f"could not be read: {_first_line(exc)}", path=str(path))


def scan_interactions(path: str | Path, user_col: str = "user", item_col: str = "item",
                      time_col: str | None = "timestamp", sep: str = ",",
                      has_header: bool = True, strings: bool = False,
                      rating_col: str | None = None) -> pl.LazyFrame:
    """A lazy frame `user_id, item_id[, timestamp][, rating], row` over a CSV/TSV or Parquet file.

    `row` is the 0-based number among data rows (the tie-breaker of recstack's splits).
    Integer ids become Int64, anything else String (stripped in CSV); timestamps become Int64 (Float64
    when some are not integers, Datetime/Date stay). A missing id or timestamp (empty field,
    blank line) or one that does not convert is null here: `_check_stage` reports it.
    `strings`: read the CSV columns as text (when the inferred types fail further down).
    `rating_col`: a rating / label column, kept as Float64 (what a CTR task labels from).

    Raises:
        DataError: a missing column, or one whose type cannot hold ids / timestamps.
    """
    path = Path(path)
    roles = {"user": user_col, "item": item_col, "timestamp": time_col, "rating": rating_col}
    roles = {r: c for r, c in roles.items() if c is not None}
    try:
        lf = _lazy_source(path, sep, has_header, list(roles.values()) if strings else None)
        schema = lf.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as e:
        raise _unreadable(path, e) from None
    for col in roles.values():
        if col not in schema:
            raise DataError(f"no column '{col}' (columns: {list(schema)})", path=str(path),
                            line=None if path.suffix == ".parquet" or not has_header else 1, field=col)

    def text(col: str) -> pl.Expr:
        """Text, blank -> null; CSV fields are stripped (as the readers do), Parquet values not."""
        t = pl.col(col).cast(pl.String)
        if path.suffix != ".parquet":
            t = t.str.strip_chars()
        return pl.when(t.str.strip_chars() == "").then(None).otherwise(t)

    def ids(col: str, name: str) -> pl.Expr:
        dt = schema[col]
        if dt.is_integer():
            return pl.col(col).cast(pl.Int64, strict=False).alias(name)  # UInt64 overflow: null
        if not (dt.is_numeric() or dt == pl.String or isinstance(dt, (pl.Categorical, pl.Enum))):
            raise DataError(f"column type {dt} cannot hold ids (expected integers or text)",
                            path=str(path), field=col)
        return text(col).alias(name)

    cols = [ids(user_col, "user_id"), ids(item_col, "item_id")]
    if time_col is not None:
        dt = schema[time_col]
        if dt.is_integer():
            ts = pl.col(time_col).cast(pl.Int64, strict=False)
        elif dt.is_float():
            ts = pl.col(time_col).cast(pl.Float64)
        elif dt.is_temporal():
            ts = pl.col(time_col)
        elif dt == pl.String:  # numbers as text: compare them as numbers, never as strings
            t = text(time_col)
            ints = lf.select((t.cast(pl.Int64, strict=False).is_null() & t.is_not_null()).sum()
                             ).collect(**_STREAM).item() == 0
            ts = t.cast(pl.Int64 if ints else pl.Float64, strict=False)
        else:
            raise DataError(f"column type {dt} cannot hold timestamps (expected numbers)",
                            path=str(path), field=time_col)
        cols.append(ts.alias("timestamp"))
    if rating_col is not None:
        dt = schema[rating_col]
        if dt.is_numeric():
            r = pl.col(rating_col).cast(pl.Float64)
        elif dt == pl.String:
            r = text(rating_col).cast(pl.Float64, strict=False)
        else:
            raise DataError(f"column type {dt} cannot hold ratings (expected numbers)",
                            path=str(path), field=rating_col)
        cols.append(r.alias("rating"))
    return lf.with_row_index("row").select([*cols, pl.col("row").cast(pl.Int64)])


def _check_stage(stage: pl.LazyFrame, src: Path, roles: dict[str, str], sep: str,
                 has_header: bool) -> pl.LazyFrame:
    """`stage` without the rows of trailing blank lines, as the readers drop them.

    Raises:
        DataError: rows and lines of a text file do not line up (a quoted line break merged
            lines: rows would be lost); at the first row with a missing or unconvertible id or
            timestamp (file, line or data row for Parquet, field); no data rows.
    """
    from recstack.data.readers._common import _text_lines

    names = {"user_id": roles["user"], "item_id": roles["item"]}
    for role in ("timestamp", "rating"):
        if role in roles:
            names[role] = roles[role]
    bad = {c: pl.col(c).is_null() for c in names}
    schema = stage.collect_schema()
    for c in ("timestamp", "rating"):
        if c in names and schema[c].is_float():
            bad[c] = bad[c] | ~pl.col(c).is_finite()
    blank = pl.all_horizontal([pl.col(c).is_null() for c in names])
    found = stage.select(pl.len().alias("_n"), pl.col("row").filter(~blank).max().alias("_last"),
                         *[pl.col("row").filter(e).min().alias(c) for c, e in bad.items()]
                         ).collect(**_STREAM).row(0, named=True)
    n, last = found["_n"], found["_last"]
    parquet = src.suffix == ".parquet"
    if n == 0:
        raise DataError("no data rows", path=str(src))
    if not parquet:  # one pass over the bytes (cheap next to parsing)
        lines, blank_tail = _text_lines(src)
        tail = n - 1 - (last if last is not None else -1)  # all-empty rows at the end
        if tail and blank_tail >= tail:
            n -= tail  # blank lines at the end of a text file: not rows
        if n != lines - int(has_header) - blank_tail:
            raise DataError(f"{_n(n)} rows in {_n(lines - int(has_header) - blank_tail)} data lines: rows "
                            "and lines do not line up (quoted line breaks?)", path=str(src))
        if n == 0:
            raise DataError("no data rows", path=str(src))
    first = {c: r for c, r in found.items() if c in names and r is not None and r < n}
    if not first:
        return stage.filter(pl.col("row") < n) if n < found["_n"] else stage
    col, row = min(first.items(), key=lambda kv: kv[1])
    field = names[col]
    try:
        raw = (_lazy_source(src, sep, has_header, [field]).with_row_index("_r")
               .filter(pl.col("_r") == row).select(pl.col(field).cast(pl.String))
               .collect(**_STREAM).item())
        known = True
    except (pl.exceptions.PolarsError, OSError):  # e.g. invalid UTF-8 elsewhere in the file
        raw, known = None, False
    if not known:
        msg = "missing or invalid value"
    elif raw is None or not raw.strip():
        msg = "missing value (empty field)"
    elif col in ("timestamp", "rating"):
        msg = f"expected a finite number, got {raw!r}"
    else:
        msg = f"id {raw!r} does not fit in a signed 64-bit integer; use text ids"
    if parquet:
        raise DataError(f"data row {row + 1}: {msg}", path=str(src), field=field)
    # (a line number that assumes one row per line: no quoted line breaks before it)
    raise DataError(msg, path=str(src), line=row + 1 + int(has_header), field=field)


def _alive(stage: pl.LazyFrame, users: pl.DataFrame | None, items: pl.DataFrame | None) -> pl.LazyFrame:
    """Rows of `stage` whose user and item are in the alive tables (None = all alive)."""
    if users is not None:
        stage = stage.join(users.lazy(), on="user_id", how="semi")
    if items is not None:
        stage = stage.join(items.lazy(), on="item_id", how="semi")
    return stage


def _counts(rows: pl.LazyFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Interactions per user and per item (one streaming pass for both when Polars shares it)."""
    uc, ic = pl.collect_all([rows.group_by("user_id").len(), rows.group_by("item_id").len()], **_STREAM)
    return uc, ic


def _kcore(stage: pl.LazyFrame, user_k: int, item_k: int, max_rounds: int
           ) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Counts of the surviving users and items after the iterative k-core (k = 0: no filter)."""
    users = items = None
    uc, ic = _counts(stage)
    first = {"rows": int(uc["len"].sum()), "users": uc.height, "items": ic.height}
    rounds, converged = 0, True
    while user_k > 1 or item_k > 1:
        bad = int((uc["len"] < user_k).sum()) + int((ic["len"] < item_k).sum())
        if bad == 0:
            break
        if rounds == max_rounds:
            converged = False
            warnings.warn(f"streaming kcore did not converge in {max_rounds} rounds", RuntimeWarning,
                          stacklevel=3)
            break
        users = uc.filter(pl.col("len") >= user_k).select("user_id")
        items = ic.filter(pl.col("len") >= item_k).select("item_id")
        uc, ic = _counts(_alive(stage, users, items))
        rounds += 1
    return uc, ic, {"input": first, "rounds": rounds, "converged": converged}


def _last_rows(rows: pl.LazyFrame, has_time: bool, name: str) -> pl.DataFrame:
    """Per user, the row of the latest interaction by (timestamp, row)."""
    if not has_time:
        return rows.group_by("user_id").agg(pl.col("row").max().alias(name)).collect(**_STREAM)
    tmax = rows.group_by("user_id").agg(pl.col("timestamp").max().alias("_tmax"))
    return (rows.join(tmax, on="user_id").filter(pl.col("timestamp") == pl.col("_tmax"))
            .group_by("user_id").agg(pl.col("row").max().alias(name)).collect(**_STREAM))


def prepare_streaming(
    src: str | Path,
    out_dir: str | Path,
    *,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str | None = "timestamp",
    rating_col: str | None = None,
    sep: str = ",",
    has_header: bool = True,
    kcore: int = 0,
    item_kcore: int | None = None,
    valid: bool = True,
    max_rounds: int = 100,
    name: str = "data",
    keep_stage: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Leave-one-out split (after an optional k-core) of an interaction file of any size.

    Args:
        src: CSV/TSV (`sep`, `has_header`) or `.parquet` file with one interaction per row.
        out_dir: output directory: `train/valid/test.parquet` (`user_id`, `item_id`,
            `timestamp`, `rating` with `rating_col`, `row`: the input's data row, which
            `load_split` restores the file order by, plus `user`/`item` vocabulary indices),
            `user_vocab.parquet`,
            `item_vocab.parquet`, `split.json` (readable by `load_split`).
        user_col: column name of the user ids.
        item_col: column name of the item ids.
        time_col: column name of the timestamps; `time_col=None` splits by row order.
        rating_col: column name of a rating / label to keep (a CTR task needs one); None: none.
        kcore: minimum interactions per user (and per item unless `item_kcore`); 0 = no filter.
        valid: hold out a valid item per user (users with >= 3 interactions).
        max_rounds: k-core rounds before giving up (with a warning), as in `kcore`.
        name: data set name recorded in split.json.
        keep_stage: keep the intermediate `_stage.parquet` (parsed input) in `out_dir`.
        log: called with one line per finished stage.

    Returns:
        A summary: input and kept counts, part sizes, k-core rounds, seconds per stage.

    Raises:
        DataError: bad input (see the module docstring), or a k-core that removes every row.
    """
    say = log or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage_path = out / "_stage.parquet"
    secs: dict[str, float] = {}

    t0 = time.perf_counter()
    src = Path(src)
    roles = {"user": user_col, "item": item_col, **({"timestamp": time_col} if time_col else {}),
             **({"rating": rating_col} if rating_col else {})}
    # one file per attempt: a failed sink may still create its file after raising
    attempts = [out / "_stage.typed.parquet", out / "_stage.text.parquet"]
    try:
        for strings, part in zip((False, True), attempts, strict=True):
            try:  # typed read; text when a value defies the inferred type
                scan_interactions(src, user_col, item_col, time_col, sep, has_header, strings,
                                  rating_col).sink_parquet(part, compression="lz4", **_STREAM)
                part.replace(stage_path)
                break
            except (pl.exceptions.PolarsError, OSError) as e:
                if strings or src.suffix == ".parquet" or isinstance(e, OSError):
                    raise _unreadable(src, e) from None
        stage = _check_stage(pl.scan_parquet(stage_path), src, roles, sep, has_header)
    except DataError:
        for f in (stage_path, *attempts):
            f.unlink(missing_ok=True)
        raise
    finally:
        attempts[0].unlink(missing_ok=True)
    secs["parse"] = time.perf_counter() - t0
    has_time = time_col is not None
    say(f"parsed {src} into {stage_path.name} ({secs['parse']:.1f}s)")

    t0 = time.perf_counter()
    user_k, item_k = kcore, kcore if item_kcore is None else item_kcore
    uc, ic, kinfo = _kcore(stage, user_k, item_k, max_rounds)
    secs["kcore"] = time.perf_counter() - t0
    kept = int(uc["len"].sum())
    if kept == 0:
        stage_path.unlink()
        raise DataError(f"k-core(user>={user_k},item>={item_k}) removed all "
                        f"{_n(kinfo['input']['rows'])} interactions; lower kcore", path=str(src))
    lines = [f"read {_n(kinfo['input']['rows'])} interactions, {_n(kinfo['input']['users'])} users, "
             f"{_n(kinfo['input']['items'])} items from {Path(src).name} (streaming)"]
    if user_k > 1 or item_k > 1:
        lines.append(
            f"k-core(user>={user_k},item>={item_k}): {kinfo['rounds']} rounds, removed "
            f"{_n(kinfo['input']['rows'] - kept)} interactions; kept {_n(kept)} interactions, "
            f"{_n(uc.height)} users, {_n(ic.height)} items"
            + ("" if kinfo["converged"] else f"; NOT converged after max_rounds={max_rounds}"))
    say(lines[-1] + f" ({secs['kcore']:.1f}s)")

    # vocabularies: sorted raw ids; an entity's index is its position
    t0 = time.perf_counter()
    uvoc = uc.select("user_id").sort("user_id").with_row_index("user")
    ivoc = ic.select("item_id").sort("item_id").with_row_index("item")
    uvoc.select("user_id").write_parquet(out / "user_vocab.parquet")
    ivoc.select("item_id").write_parquet(out / "item_vocab.parquet")

    rows = _alive(stage, uc.select("user_id") if kinfo["rounds"] else None,
                  ic.select("item_id") if kinfo["rounds"] else None)
    counts = uc.rename({"len": "_n"})
    test = _last_rows(rows, has_time, "_test").join(counts, on="user_id").filter(pl.col("_n") >= 2)
    marks = test.select("user_id", "_test")
    if valid:
        rest = rows.join(test.lazy().select("user_id", pl.col("_test").alias("row")),
                         on=["user_id", "row"], how="anti")
        val = _last_rows(rest, has_time, "_valid").join(counts, on="user_id").filter(pl.col("_n") >= 3)
        marks = marks.join(val.select("user_id", "_valid"), on="user_id", how="left")
    else:
        marks = marks.with_columns(pl.lit(None, pl.Int64).alias("_valid"))
    secs["split"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fold = (pl.when(pl.col("row") == pl.col("_test")).then(pl.lit("test"))
            .when(pl.col("row") == pl.col("_valid")).then(pl.lit("valid")).otherwise(pl.lit("train")))
    keep = ["user_id", "item_id", *(["timestamp"] if has_time else []),
            *(["rating"] if rating_col else []), "row", "user", "item"]
    tagged = (rows.join(marks.lazy(), on="user_id", how="left")
              .join(uvoc.lazy().with_columns(pl.col("user").cast(pl.Int64)), on="user_id")
              .join(ivoc.lazy().with_columns(pl.col("item").cast(pl.Int64)), on="item_id")
              .with_columns(fold.alias("_fold")))
    parts = ["train", "valid", "test"] if valid else ["train", "test"]
    sinks = [tagged.filter(pl.col("_fold") == p).select(keep)
             .sink_parquet(out / f"{p}.parquet", compression_level=1, lazy=True) for p in parts]
    pl.collect_all(sinks, **_STREAM)
    secs["write"] = time.perf_counter() - t0
    sizes = {p: pl.scan_parquet(out / f"{p}.parquet").select(pl.len()).collect().item() for p in parts}

    n_test, n_valid = test.height, (marks["_valid"].is_not_null().sum() if valid else 0)
    one = int((uc["len"] == 1).sum())
    two = int((uc["len"] == 2).sum()) if valid else 0
    info = {"by": "timestamp" if has_time else "order", "valid": valid, "n_train": sizes["train"],
            "n_valid": sizes.get("valid", 0), "n_test": sizes["test"], "users_with_test": n_test,
            "users_with_valid": int(n_valid), "users_train_only": one, "users_without_valid": two,
            "users_without_interactions": 0, "streaming": True}
    lines.append(f"split leave-one-out(by={info['by']}, valid={valid}, streaming): train "
                 f"{_n(sizes['train'])} / " + (f"valid {_n(sizes['valid'])} / " if valid else "")
                 + f"test {_n(sizes['test'])} interactions; {_n(one)} users with a single "
                 "interaction kept in train only (no test)")
    meta = {"format": _SPLIT_FORMAT, "version": _SPLIT_VERSION, "protocol": "loo", "info": info,
            "log": lines, "logs": {p: lines for p in parts}, "name": name, "fmt": "csv",
            "parts": parts, "vocab_names": {"user": "user_id", "item": "item_id"}, "features": {}}
    (out / "split.json").write_text(json.dumps(meta, indent=2) + "\n")
    if not keep_stage:
        stage_path.unlink()
    say(lines[-1] + f" ({secs['split'] + secs['write']:.1f}s)")
    return {"out": str(out), "input_rows": kinfo["input"]["rows"], "rows": kept, "users": uc.height,
            "items": ic.height, **{p: sizes[p] for p in parts}, "kcore_rounds": kinfo["rounds"],
            "seconds": {k: round(v, 2) for k, v in secs.items()}}


def prepare_spec(spec: str, out_dir: str | Path, split: str = "loo", kcore: int = 0,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """`prepare_streaming` for a `csv:PATH[?user=..&item=..&timestamp=..&rating=..&sep=..&header=..]` or
    `parquet:PATH[?...]` spec (what `recstack data prepare --streaming` takes).

    Raises:
        ValueError: another format or split, or an unknown option.
    """
    from recstack.data.readers import parse_spec

    fmt, path, opts = parse_spec(spec)
    if fmt not in ("csv", "parquet") or path is None:
        raise ValueError(f"--streaming reads csv:PATH or parquet:PATH specs, got '{spec}'")
    if split != "loo":
        raise ValueError(f"--streaming supports the loo split only, got '{split}'")
    unknown = set(opts) - {"user", "item", "timestamp", "rating", "sep", "header"}
    if unknown:
        raise ValueError(f"--streaming: unsupported spec option(s) {sorted(unknown)}")
    ts = opts.get("timestamp", "timestamp")
    return prepare_streaming(
        path, out_dir, user_col=opts.get("user", "user"), item_col=opts.get("item", "item"),
        time_col=None if ts.lower() == "none" else ts, rating_col=opts.get("rating") or None, sep=opts.get("sep", "\t" if path.endswith(".tsv") else ","),
        has_header=opts.get("header", "true").lower() in ("1", "true", "yes"), kcore=kcore,
        name=Path(path).stem, log=log)
