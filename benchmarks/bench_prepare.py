"""Benchmark data preparation: read + encode + k-core + leave-one-out split of a large CSV.

Acceptance bar: a generated 20-million-row CSV in <= 30 s on 2 cores.

Generates ``user,item,rating,timestamp`` (all ints; power-law item popularity, log-normal user
activity, sparse raw ids) under a temp dir unless it already exists (generation is not timed),
then times each stage and prints one JSON line last:

    python benchmarks/bench_prepare.py --rows 20000000 --users 1000000 --items 200000 --keep

Reading uses ``recstack.data.readers.load("csv:PATH")`` when that module exists
(``--reader auto``, the default); ``--reader polars`` uses ``pl.read_csv`` + ``from_raw``
instead. ``--profile-encode`` additionally times `Vocab.fit` / `Vocab.encode` on the raw columns
and ``--save DIR`` times `save_split` (neither counted in the total).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from recstack.data.dataset import Vocab, from_raw
from recstack.data.transforms import kcore, save_split, split_leave_one_out

SCHEMA = {"user": pl.Int64, "item": pl.Int64, "rating": pl.Int64, "timestamp": pl.Int64}


def generate_csv(path: Path, rows: int, users: int, items: int, seed: int) -> None:
    """Write a synthetic interaction CSV (vectorised; ~15 s for 20M rows)."""
    rng = np.random.default_rng(seed)
    # items: Zipf-like popularity p(rank) ~ rank^-0.9, ranks scattered over sparse raw ids
    pop = 1.0 / np.arange(1, items + 1) ** 0.9
    item_rank = np.searchsorted(np.cumsum(pop / pop.sum()), rng.random(rows), side="right")
    item_ids = rng.choice(10 * items, items, replace=False)
    item = item_ids[np.minimum(item_rank, items - 1)]
    # users: log-normal activity, so k-core has something to remove
    act = rng.lognormal(0.0, 1.0, users)
    user_rank = np.searchsorted(np.cumsum(act / act.sum()), rng.random(rows), side="right")
    user_ids = rng.choice(10 * users, users, replace=False)
    user = user_ids[np.minimum(user_rank, users - 1)]
    df = pl.DataFrame({
        "user": user,
        "item": item,
        "rating": rng.integers(1, 6, rows),
        "timestamp": rng.integers(1_000_000_000, 1_700_000_000, rows),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    df.write_csv(tmp)
    tmp.replace(path)  # never leave a half-written CSV behind for the next run to reuse


def _have_loader() -> bool:
    try:
        from recstack.data.readers import load  # noqa: F401
    except ImportError:
        return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", action="store_true", help="keep the generated CSV for later runs")
    ap.add_argument("--csv", type=Path, default=None, help="CSV path (default: under the temp dir)")
    ap.add_argument("--reader", choices=("auto", "load", "polars"), default="auto")
    ap.add_argument("--profile-encode", action="store_true")
    ap.add_argument("--save", type=Path, default=None,
                    help="also time save_split to this directory (not part of the total)")
    args = ap.parse_args()

    path = args.csv or Path(tempfile.gettempdir()) / "recstack-bench" / (
        f"prepare_r{args.rows}_u{args.users}_i{args.items}_s{args.seed}.csv")
    generated = False
    if not path.exists():
        t = time.perf_counter()
        generate_csv(path, args.rows, args.users, args.items, args.seed)
        generated = True
        print(f"generated {path} in {time.perf_counter() - t:.1f} s (not timed)", flush=True)

    reader = args.reader
    if reader == "auto":
        reader = "load" if _have_loader() else "polars"
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    if reader == "load":
        from recstack.data.readers import load

        data = load(f"csv:{path}")
        times["read_encode"] = time.perf_counter() - t0
    else:
        df = pl.read_csv(path, schema=SCHEMA)
        times["read"] = time.perf_counter() - t0
        t = time.perf_counter()
        data = from_raw(df["user"], df["item"], rating=df["rating"], timestamp=df["timestamp"],
                        name=path.stem)
        times["encode"] = time.perf_counter() - t
        times["read_encode"] = time.perf_counter() - t0
        del df
    print(f"read+encode ({reader}): {times['read_encode']:.2f} s, {len(data):,} rows", flush=True)

    t = time.perf_counter()
    core = kcore(data, 5, 5)
    times["kcore"] = time.perf_counter() - t
    print(f"kcore: {times['kcore']:.2f} s  {core.log[-1]}", flush=True)

    t = time.perf_counter()
    sp = split_leave_one_out(core)
    times["loo"] = time.perf_counter() - t
    print(f"loo: {times['loo']:.2f} s  {sp.test.log[-1]}", flush=True)
    total = time.perf_counter() - t0

    extra = {}
    if args.save is not None:
        t = time.perf_counter()
        save_split(sp, args.save)
        extra["save_split_s"] = round(time.perf_counter() - t, 3)
    if args.profile_encode:  # where from_raw spends its time (not part of the total)
        df = pl.read_csv(path, schema=SCHEMA, columns=["user", "item"])
        for col in ("user", "item"):
            t = time.perf_counter()
            v = Vocab.fit(df[col])
            extra[f"vocab_fit_{col}"] = round(time.perf_counter() - t, 3)
            t = time.perf_counter()
            v.encode(df[col])
            extra[f"vocab_encode_{col}"] = round(time.perf_counter() - t, 3)

    if generated and not args.keep:
        path.unlink()
    print(json.dumps({
        "bench": "prepare", "rows": len(data), "users": data.n_users, "items": data.n_items,
        "reader": reader, "cores": os.cpu_count(),
        **{f"{k}_s": round(v, 3) for k, v in times.items()},
        "total_s": round(total, 3), "pass": total <= 30.0,
        "kcore_rows": len(core), "kcore_users": core.n_users, "kcore_items": core.n_items,
        "train": len(sp.train), "valid": len(sp.valid), "test": len(sp.test), **extra,
    }))


if __name__ == "__main__":
    main()
