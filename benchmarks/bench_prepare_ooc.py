"""Out-of-core preparation of a generated interaction CSV: time and peak memory.

Acceptance bar: a 100-million-row file prepared (parse, 5-core, leave-one-out split, Parquet
parts + vocabularies) within 8 GiB of RAM. The CSV (`user,item,timestamp`; log-normal user
activity, Zipf item popularity, sparse raw ids) is generated chunk by chunk, so generation
needs little memory too; it is not timed. Preparation runs in a child process so its peak
resident memory (`ru_maxrss`) is its own:

    python3 benchmarks/bench_prepare_ooc.py --rows 100000000 --users 2000000 --items 500000

Prints one JSON line last (rows, seconds per stage, peak RSS of the preparation). The files are
deleted afterwards unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def generate_csv(path: Path, rows: int, users: int, items: int, seed: int, chunk: int) -> None:
    """Append `rows` interactions in chunks of `chunk` rows (memory ~ chunk, not rows)."""
    import polars as pl

    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, users)
    user_cdf = np.cumsum(activity / activity.sum())
    pop = 1.0 / np.arange(1, items + 1) ** 0.9
    item_cdf = np.cumsum(pop / pop.sum())
    user_raw = np.sort(rng.choice(50 * users, users, replace=False)) + 1  # sparse raw ids
    item_raw = rng.permutation(np.arange(items, dtype=np.int64) * 7 + 100_000)
    with open(path, "wb") as f:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            u = np.minimum(np.searchsorted(user_cdf, rng.random(n), side="right"), users - 1)
            i = np.minimum(np.searchsorted(item_cdf, rng.random(n), side="right"), items - 1)
            t = rng.integers(1_500_000_000, 1_700_000_000, n)
            pl.DataFrame({"user": user_raw[u], "item": item_raw[i], "timestamp": t}).write_csv(
                f, include_header=start == 0)


def prepare_child(args: argparse.Namespace) -> None:
    """The measured process: prepare, then print a JSON line with its own peak RSS."""
    from recstack.data.streaming import prepare_streaming

    t0 = time.perf_counter()
    summary = prepare_streaming(args.path, args.out, kcore=args.kcore,
                                log=lambda m: print(m, file=sys.stderr, flush=True))
    summary["total_seconds"] = round(time.perf_counter() - t0, 2)
    summary["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    print(json.dumps(summary))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=200_000)
    ap.add_argument("--kcore", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=5_000_000, help="generation chunk (rows)")
    ap.add_argument("--threads", type=int, default=None, help="POLARS_MAX_THREADS for the preparation")
    ap.add_argument("--path", type=Path, default=None, help="CSV to use / create (default: temp dir)")
    ap.add_argument("--out", type=Path, default=None, help="output directory (default: temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the CSV and the output")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        prepare_child(args)
        return

    tmp = Path(tempfile.mkdtemp(prefix="recstack-ooc-"))
    args.path = args.path or tmp / f"interactions_{args.rows}.csv"
    args.out = args.out or tmp / "prepared"
    gen_s = None
    if not args.path.exists():
        t0 = time.perf_counter()
        generate_csv(args.path, args.rows, args.users, args.items, args.seed, args.chunk)
        gen_s = round(time.perf_counter() - t0, 1)
    env = dict(os.environ)
    if args.threads:
        env["POLARS_MAX_THREADS"] = str(args.threads)
    cmd = [sys.executable, __file__, "--child", "--path", str(args.path), "--out", str(args.out),
           "--kcore", str(args.kcore)]
    res = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
    result = json.loads(res.stdout.strip().splitlines()[-1])
    out_bytes = sum(p.stat().st_size for p in Path(args.out).glob("*.parquet"))
    result |= {"csv_gib": round(args.path.stat().st_size / 2**30, 2), "generate_seconds": gen_s,
               "output_gib": round(out_bytes / 2**30, 2), "cpus": os.cpu_count(),
               "polars_max_threads": env.get("POLARS_MAX_THREADS"),
               "within_8_gib": result["peak_rss_gib"] <= 8.0}
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)  # a --path / --out the caller named is kept
    print(json.dumps(result))


if __name__ == "__main__":
    main()
