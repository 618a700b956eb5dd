"""iALS on the CPU, side by side with implicit's AlternatingLeastSquares (issue 21).

Both run in one process on the same data, split and evaluation: recstack's protocol for the
data (Gowalla: the LightGCN split, full ranking, the user's train items excluded, recstack's
`evaluate_ranking` for both models' factors), the same thread count (torch intra-op threads for
recstack, implicit's OpenMP threads for implicit, BLAS held to one thread inside implicit's fit
as its docs advise), alternating which library runs first.

Settings are given in Hu et al.'s parameters (confidence 1 + alpha on an observed pair);
implicit takes the confidence itself, so it gets ``alpha = 1 + alpha`` (checked against its
exact solver: the same least-squares solutions). implicit has no frequency-scaled
regularisation; its points of a grid with ``reg_scaling: frequency`` are skipped.

Fixed setting (speed and quality; unscaled regularisation for both unless ``--set
reg_scaling=frequency``), each run printed as one JSON line:

    python benchmarks/bench_ials_gowalla.py --data lightgcn:../shared/data/gowalla --repeats 3

Validation search (every point of each library's grid fitted on 80% of each user's training
interactions and scored on the other 20%, seed 0, as `recstack tune` holds out; each library's
best NDCG@20 point then fitted on all of train and scored on test once):

    python benchmarks/bench_ials_gowalla.py --grid benchmarks/grids/ials.yaml \
        --log benchmarks/results/issue21/gowalla_ials_search_cpu.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from recstack.data.transforms import split
from recstack.evaluation import evaluate_ranking
from recstack.workflow.config import ExperimentConfig
from recstack.workflow.experiment import prepare
from recstack.workflow.tuning import grid_points

KS = (20,)


def _load() -> tuple[float, float, float]:
    return tuple(round(x, 2) for x in os.getloadavg())


def fit_recstack(train: sp.csr_matrix, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    """recstack IALS fitted on `train` -> (user factors, item factors, fit seconds)."""
    from recstack.models.ials import IALS

    t0 = time.perf_counter()
    model = IALS(device="cpu", **IALS.check_params(params)).fit(train)
    fit_s = time.perf_counter() - t0
    return model.user_factors_.numpy(), model.item_factors_.numpy(), fit_s


def fit_implicit(train: sp.csr_matrix, params: dict[str, Any], threads: int
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """implicit's ALS (CG solver) fitted on `train` with the same settings -> as fit_recstack."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    model = AlternatingLeastSquares(
        factors=params["factors"], regularization=params["regularization"], alpha=1.0 + params["alpha"],
        iterations=params["iterations"], use_cg=True, num_threads=threads, random_state=params.get("seed", 0))
    with threadpool_limits(1, "blas"):
        t0 = time.perf_counter()
        model.fit(train, show_progress=False)
        fit_s = time.perf_counter() - t0
    return np.asarray(model.user_factors), np.asarray(model.item_factors), fit_s


def evaluate(user_f: np.ndarray, item_f: np.ndarray, target: sp.csr_matrix, exclude: sp.csr_matrix,
             proto) -> tuple[dict[str, float], float]:
    """Full ranking of every item with recstack's evaluation -> ({recall@20, ndcg@20}, seconds)."""
    u, v = torch.from_numpy(np.ascontiguousarray(user_f)), torch.from_numpy(np.ascontiguousarray(item_f))
    res = evaluate_ranking(lambda users: u[users] @ v.T, target, exclude=exclude, ks=KS, device="cpu",
                           ties=proto.ties, tie_seed=proto.tie_seed)
    s = res.summary()
    return {k: round(float(s[k]), 4) for k in ("recall@20", "ndcg@20")}, float(res.seconds)


def run_one(lib: str, params: dict[str, Any], train: sp.csr_matrix, target: sp.csr_matrix, proto,
            threads: int, stage: str) -> dict[str, Any]:
    load_before = _load()
    if lib == "recstack":
        user_f, item_f, fit_s = fit_recstack(train, params)
        shown = dict(params)
    else:
        user_f, item_f, fit_s = fit_implicit(train, params, threads)
        shown = {"factors": params["factors"], "regularization": params["regularization"],
                 "alpha": 1.0 + params["alpha"], "iterations": params["iterations"], "use_cg": True,
                 "cg_steps": 3, "random_state": params.get("seed", 0)}
    metrics, eval_s = evaluate(user_f, item_f, target, train if proto.exclude_history else None, proto)
    return {"stage": stage, "library": lib, "params": shown, **metrics, "fit_seconds": round(fit_s, 2),
            "eval_seconds": round(eval_s, 2), "threads": threads,
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "load_before": load_before, "load_after": _load(), "cpu": platform.processor() or platform.machine(),
            "versions": _versions(lib)}


def _versions(lib: str) -> dict[str, str]:
    if lib == "implicit":
        import implicit

        return {"implicit": implicit.__version__}
    import recstack

    return {"recstack": recstack.__version__, "torch": torch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="lightgcn:../shared/data/gowalla")
    ap.add_argument("--factors", type=int, default=64)
    ap.add_argument("--regularization", type=float, default=0.05)
    ap.add_argument("--alpha", type=float, default=19.0, help="Hu et al.'s alpha (implicit gets 1 + alpha)")
    ap.add_argument("--iterations", type=int, default=15)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="further recstack IALS hyper-parameters (fixed mode)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--only", choices=["recstack", "implicit"], default=None)
    ap.add_argument("--grid", default=None, help="YAML: {recstack: grid, implicit: grid} searched on validation")
    ap.add_argument("--no-test", action="store_true", help="with --grid: stop after the choice")
    ap.add_argument("--log", default=None, help="append every JSON line to this file too")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    _, parts, proto = prepare(ExperimentConfig(model="ials", data=args.data))
    train, test = parts.train.csr(), parts.test.csr()
    libs = [args.only] if args.only else ["recstack", "implicit"]
    sink = open(args.log, "a") if args.log else None  # noqa: SIM115 (closed below)

    def emit(row: dict[str, Any]) -> None:
        line = json.dumps(row)
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")
            sink.flush()

    try:
        if args.grid is None:
            # unscaled regularisation (as implicit's) unless --set reg_scaling=... says otherwise
            params = {"factors": args.factors, "regularization": args.regularization, "alpha": args.alpha,
                      "iterations": args.iterations, "reg_scaling": "none"}
            for kv in args.set:
                key, _, value = kv.partition("=")
                params[key] = value
            for rep in range(args.repeats):
                for lib in (libs if rep % 2 == 0 else libs[::-1]):
                    emit({**run_one(lib, params, train, test, proto, args.threads, "test"), "repeat": rep,
                          "data": args.data, "protocol": proto.name})
            return
        import yaml

        grids = yaml.safe_load(open(args.grid))
        inner = split(parts.train, "ratio", valid_frac=0.0, test_frac=0.2, seed=0)  # as `recstack tune`
        fit_part, valid = inner.train.csr(), inner.test.csr()
        chosen = {}
        for lib in libs:
            best = None
            for i, point in enumerate(grid_points(grids[lib])):
                if lib == "implicit" and point.get("reg_scaling", "none") != "none":
                    continue
                row = run_one(lib, point, fit_part, valid, proto, args.threads, "validation")
                emit({**row, "point": i, "validation": "20% of each user's train held out (seed 0)"})
                if best is None or row["ndcg@20"] > best[0]:
                    best = (row["ndcg@20"], point)
            chosen[lib] = best[1]
            emit({"stage": "selected", "library": lib, "params": best[1], "valid_ndcg@20": best[0],
                  "selected_on": "validation", "metric": "ndcg@20"})
        if not args.no_test:
            for lib in libs:
                emit({**run_one(lib, chosen[lib], train, test, proto, args.threads, "test"),
                      "data": args.data, "protocol": proto.name, "selected_on": "validation"})
    finally:
        if sink:
            sink.close()


if __name__ == "__main__":
    main()
