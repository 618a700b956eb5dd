"""Out-of-core data preparation: k-core and leave-one-out split of files larger than memory.

`prepare_streaming` runs the same steps as `load` + `kcore` + `split_leave_one_out` +
`save_split`, but on Polars lazy queries executed by the streaming engine, so no step holds
the interactions in memory: only per-user and per-item tables (counts, last rows) are
materialised. The input is parsed once into a compact Parquet stage file (ids, timestamp, row
number); every later pass scans that file:

1. k-core: group-by counts of users and items over the rows still alive, repeated until no
   user or item is below its minimum (alive sets are applied with semi-joins);
2. vocabularies: the surviving raw ids, sorted (recstack's `Vocab` order), written as
   `user_vocab.parquet` / `item_vocab.parquet`: index i of an entity is its row in that file;
3. leave-one-out by time (ties: the later row is the later interaction): per-user max
   timestamp, then the max row among the rows at that time; again without the test rows for
   valid; users with 1 interaction stay in train, with 2 get no valid item;
4. the parts are written in one pass, with the raw ids plus their vocabulary indices.

The output directory is a recstack split (`load_split` reads it when it fits in memory) with the
same parts a single-process `kcore` + `split_leave_one_out` gives. Row order inside a part
follows the streaming engine (not guaranteed to be the file's order).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from recstack.data.transforms import _SPLIT_FORMAT, _SPLIT_VERSION

_STREAM = {"engine": "streaming"}


def _n(x: int) -> str:
    return f"{x:,}"


def scan_interactions(path: str | Path, user_col: str = "user", item_col: str = "item",
                      time_col: str | None = "timestamp", sep: str = ",",
                      has_header: bool = True) -> pl.LazyFrame:
    """A lazy frame `user_id, item_id[, timestamp], row` over a CSV/TSV or Parquet file.

    `row` is the 0-based line number among data rows (the tie-breaker of recstack's splits).
    Integer ids stay Int64, anything else becomes String; rows with a missing id are dropped.
    """
    path = Path(path)
    if path.suffix == ".parquet":
        lf = pl.scan_parquet(path)
    else:
        lf = pl.scan_csv(path, separator=sep, has_header=has_header, infer_schema_length=10_000)
    schema = lf.collect_schema()
    for col in (user_col, item_col, time_col):
        if col is not None and col not in schema:
            raise ValueError(f"{path}: no column '{col}' (columns: {list(schema)})")

    def ids(col: str, name: str) -> pl.Expr:
        dt = schema[col]
        return pl.col(col).cast(pl.Int64 if dt.is_integer() else pl.String).alias(name)

    cols = [ids(user_col, "user_id"), ids(item_col, "item_id")]
    if time_col is not None:
        cols.append(pl.col(time_col).alias("timestamp"))
    return (lf.with_row_index("row").select([*cols, pl.col("row").cast(pl.Int64)])
            .filter(pl.col("user_id").is_not_null() & pl.col("item_id").is_not_null()))


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
            `timestamp`, plus `user`/`item` vocabulary indices), `user_vocab.parquet`,
            `item_vocab.parquet`, `split.json` (readable by `load_split`).
        user_col, item_col, time_col: column names; `time_col=None` splits by row order.
        kcore: minimum interactions per user (and per item unless `item_kcore`); 0 = no filter.
        valid: hold out a valid item per user (users with >= 3 interactions).
        max_rounds: k-core rounds before giving up (with a warning), as in `kcore`.
        name: data set name recorded in split.json.
        keep_stage: keep the intermediate `_stage.parquet` (parsed input) in `out_dir`.
        log: called with one line per finished stage.

    Returns:
        A summary: input and kept counts, part sizes, k-core rounds, seconds per stage.
    """
    say = log or (lambda _msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stage_path = out / "_stage.parquet"
    secs: dict[str, float] = {}

    t0 = time.perf_counter()
    scan_interactions(src, user_col, item_col, time_col, sep, has_header).sink_parquet(
        stage_path, compression="lz4", **_STREAM)
    secs["parse"] = time.perf_counter() - t0
    stage = pl.scan_parquet(stage_path)
    has_time = time_col is not None
    say(f"parsed {src} into {stage_path.name} ({secs['parse']:.1f}s)")

    t0 = time.perf_counter()
    user_k, item_k = kcore, kcore if item_kcore is None else item_kcore
    uc, ic, kinfo = _kcore(stage, user_k, item_k, max_rounds)
    secs["kcore"] = time.perf_counter() - t0
    kept = int(uc["len"].sum())
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
    keep = ["user_id", "item_id", *(["timestamp"] if has_time else []), "user", "item"]
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
    """`prepare_streaming` for a `csv:PATH[?user=..&item=..&timestamp=..&sep=..&header=..]` or
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
    unknown = set(opts) - {"user", "item", "timestamp", "sep", "header"}
    if unknown:
        raise ValueError(f"--streaming: unsupported spec option(s) {sorted(unknown)}")
    ts = opts.get("timestamp", "timestamp")
    return prepare_streaming(
        path, out_dir, user_col=opts.get("user", "user"), item_col=opts.get("item", "item"),
        time_col=None if ts.lower() == "none" else ts, sep=opts.get("sep", "\t" if path.endswith(".tsv") else ","),
        has_header=opts.get("header", "true").lower() in ("1", "true", "yes"), kcore=kcore,
        name=Path(path).stem, log=log)
