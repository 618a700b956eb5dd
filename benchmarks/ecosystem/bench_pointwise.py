"""recstack's hand-written AUC / group AUC / log loss against torchmetrics on the same scores.

Scores of a CTR-like problem (labels drawn from the sigmoid of a score, scores rounded to 3
decimals so that ties occur, as with bf16 or quantised scores), rows grouped by user:

* AUC: `recstack.evaluation.auc` (Mann-Whitney U from average ranks, ties count 1/2) vs
  ``torchmetrics.functional.classification.binary_auroc`` (exact: ``thresholds=None``);
* group AUC: `recstack.evaluation.group_auc` (impression-weighted mean over users with both
  classes) vs torchmetrics' ``RetrievalAUROC`` per user (``indexes`` = user), weighted the same
  way here (torchmetrics averages the users unweighted);
* log loss: `recstack.evaluation.logloss` vs ``torch.nn.functional.binary_cross_entropy``.

Every run is printed, with the absolute differences.

    python benchmarks/ecosystem/bench_pointwise.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from importlib.metadata import version

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.retrieval import RetrievalAUROC

from recstack.evaluation import auc, group_auc, logloss


def timed(fn, repeats: int) -> tuple[list[float], float]:
    runs, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        runs.append(round(time.perf_counter() - t0, 4))
    return runs, float(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    logit = rng.normal(size=args.rows)
    y = (rng.random(args.rows) < 1 / (1 + np.exp(-(logit - 1.5)))).astype(np.float64)
    p = np.round(1 / (1 + np.exp(-(logit + rng.normal(scale=1.0, size=args.rows) - 1.5))), 3)
    p = np.clip(p, 1e-3, 1 - 1e-3)
    g = rng.integers(0, args.users, args.rows)
    pt, yt, gt = torch.from_numpy(p), torch.from_numpy(y).long(), torch.from_numpy(g)

    def tm_gauc() -> float:
        m = RetrievalAUROC(aggregation=lambda x, dim: x)
        m.update(pt, yt.bool(), indexes=gt)
        per = m.compute().double().numpy()  # one value per user, users in ascending order
        users = np.unique(g)
        sizes = np.bincount(g)[users]
        pos = np.bincount(g, weights=y)[users]
        both = (pos > 0) & (pos < sizes)
        return float((per[both] * sizes[both]).sum() / sizes[both].sum())

    res = {}
    for name, mine, theirs in (
        ("auc", lambda: auc(y, p), lambda: binary_auroc(pt, yt, thresholds=None)),
        ("group_auc", lambda: group_auc(y, p, g), tm_gauc),
        ("logloss", lambda: logloss(y, p), lambda: F.binary_cross_entropy(pt, yt.double())),
    ):
        mine(), theirs()  # warm-up
        r_runs, r_val = timed(mine, args.repeats)
        t_runs, t_val = timed(theirs, args.repeats)
        res[name] = {"recstack": r_val, "torch_or_torchmetrics": t_val, "abs_diff": abs(r_val - t_val),
                     "seconds_recstack": r_runs, "seconds_other": t_runs,
                     "median_ratio_other_over_recstack": round(statistics.median(t_runs)
                                                               / max(statistics.median(r_runs), 1e-9), 2)}
    row = {"bench": "ecosystem_pointwise", "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()} {os.cpu_count()} cpus (shared)", "threads": args.threads,
           "versions": {k: version(k) for k in ("torch", "torchmetrics", "scipy", "numpy")},
           "rows": args.rows, "users": args.users, "positives": int(y.sum()),
           "distinct_scores": int(len(np.unique(p))), "results": res,
           "loadavg_end": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
