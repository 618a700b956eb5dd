"""Graph-filter CF (GF-CF, BSPM) and EASE on a given-split data set (Gowalla), hyper-parameters
chosen on a holdout of the TRAINING data, never on test.

1. 5% of each user's training interactions are held out (the same inner split the neural
   models early-stop on; `--holdout-frac` changes it); every grid point is fitted on the other 95% and scored on it.
   With `--cv-folds K` it is K-fold cross-validation instead: each user's training interactions
   are dealt into K folds (`split_kfold`), every point is scored on each fold (fitted on the
   rest) and the mean NDCG@20 selects.
2. The best point by the holdout's NDCG@20 is refitted on all training data and evaluated once
   on the test set (full ranking, train items excluded).
Prints one JSON line per grid point and per final result.
Usage: python benchmarks/bench_graph_filter.py --data lightgcn:../shared/data/gowalla --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from recstack.data.readers import load
from recstack.data.transforms import split, split_kfold
from recstack.evaluation import evaluate_ranking
from recstack.experiment import evaluate, standard_protocol
from recstack.models import BSPM, EASE, Blend


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="lightgcn:../shared/data/gowalla")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--ranks", default="256,448")
    ap.add_argument("--betas", default="0.1,0.2,0.3")
    ap.add_argument("--sharpen-times", default="0,1.5,2.5,3.5")
    ap.add_argument("--combine", default="mean,last")
    ap.add_argument("--sharpen-steps", default="1")
    ap.add_argument("--solvers", default="rk4", help="comma list of sharpening solvers: rk4,euler")
    ap.add_argument("--power-iters", type=int, default=10)
    ap.add_argument("--ease-l2", default="", help="comma list of EASE l2 values to tune too")
    ap.add_argument("--blend-weights", default="",
                    help="comma list of EASE weights for a BSPM + EASE blend (both at their selected settings)")
    ap.add_argument("--holdout-frac", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout-seeds", default="",
                    help="comma list of seeds: one holdout per seed, BSPM's grid chosen by the mean NDCG@20")
    ap.add_argument("--cv-folds", type=int, default=0,
                    help="K-fold cross-validation on the training data instead of random holdouts")
    ap.add_argument("--also-test", default="",
                    help="JSON dict of BSPM params to score on test as well, labelled as given "
                         "(e.g. the paper authors' published setting); never used for selection")
    args = ap.parse_args()
    data = load(args.data)
    sp, proto = split(data, "given"), standard_protocol(data)
    seeds = [int(x) for x in args.holdout_seeds.split(",")] if args.holdout_seeds else [args.seed]
    if args.cv_folds:
        inners = split_kfold(sp.train, args.cv_folds, seed=args.seed)
        seeds = list(range(args.cv_folds))  # fold numbers, in the log lines
    else:
        inners = [split(sp.train, "ratio", valid_frac=0.0, test_frac=args.holdout_frac, seed=s) for s in seeds]
    inner = inners[0]  # EASE and the blend are tuned on the first holdout
    keys = ("recall@20", "ndcg@20")

    def holdout_score(model, fold=None) -> dict[str, float]:
        fold = inner if fold is None else fold
        r = evaluate_ranking(model.score_all, fold.test.csr(), fold.train.csr(), ks=(20,),
                             device=str(model.device_), progress=False)
        return {k: round(float(v), 5) for k, v in r.summary().items() if k in keys}

    def final(model, params: dict, label: str) -> None:
        t0 = time.perf_counter()
        model.set_params(**params).fit(sp.train)
        sync(model.device_)
        fit_s = time.perf_counter() - t0
        res = evaluate(model, sp, proto, progress=False)
        m = res.summary()
        emit(stage="test", model=label, params=params, fit_seconds=round(fit_s, 2),
             eval_seconds=round(float(res.seconds), 2), device=str(model.device_),
             **{k: round(float(m[k]), 4) for k in ("recall@20", "ndcg@20", "recall@10", "ndcg@10")})

    # every grid point is scored on each holdout (its own 95% fit); the mean NDCG@20 selects
    scores: dict[str, list[float]] = {}
    grid_params: dict[str, dict] = {}
    for seed, fold in zip(seeds, inners, strict=True):
        for rank in [int(x) for x in args.ranks.split(",")]:
            model = BSPM(rank=rank, power_iters=args.power_iters, device=args.device, seed=args.seed)
            t0 = time.perf_counter()
            model.fit(fold.train)
            sync(model.device_)
            emit(stage="holdout_fit", holdout_seed=seed, rank=rank, fit_seconds=round(time.perf_counter() - t0, 2))
            grid = itertools.product([float(b) for b in args.betas.split(",")],
                                     [float(t) for t in args.sharpen_times.split(",")], args.combine.split(","),
                                     [int(k) for k in args.sharpen_steps.split(",")], args.solvers.split(","))
            for beta, ts, comb, ks, solver in grid:
                if ts == 0 and (comb == "mean" or ks > 1 or solver != "rk4"):
                    continue  # no sharpened states to average or split into steps
                params = dict(rank=rank, beta=beta, sharpen_time=ts, combine=comb, sharpen_steps=ks,
                              power_iters=args.power_iters, sharpen_solver=solver)
                model.set_params(**params)  # scoring reads these; the basis depends on rank only
                t0 = time.perf_counter()
                sc = holdout_score(model, fold)
                emit(stage="holdout", holdout_seed=seed, params=params,
                     seconds=round(time.perf_counter() - t0, 2), **sc)
                key = json.dumps(params, sort_keys=True)
                scores.setdefault(key, []).append(sc["ndcg@20"])
                grid_params[key] = params
            del model
    best_key = max(scores, key=lambda k: sum(scores[k]) / len(scores[k]))
    best: tuple[float, dict] = (round(sum(scores[best_key]) / len(scores[best_key]), 5), grid_params[best_key])
    emit(stage="selected", model="bspm", params=best[1], holdout_ndcg20=best[0], holdout_seeds=seeds,
         cv_folds=args.cv_folds)
    final(BSPM(device=args.device, seed=args.seed), best[1], "bspm")
    if args.also_test:
        given = {"power_iters": args.power_iters, **json.loads(args.also_test)}
        final(BSPM(device=args.device, seed=args.seed), given, "bspm_given_params")

    if args.ease_l2:
        best_e: tuple[float, dict] = (-1.0, {})
        for l2 in [float(x) for x in args.ease_l2.split(",")]:
            m = EASE(l2=l2, max_items=100_000, device=args.device).fit(inner.train)
            s = holdout_score(m)
            emit(stage="holdout", model="ease", params={"l2": l2}, **s)
            if s["ndcg@20"] > best_e[0]:
                best_e = (s["ndcg@20"], {"l2": l2})
            del m
        emit(stage="selected", model="ease", params=best_e[1], holdout_ndcg20=best_e[0])
        final(EASE(max_items=100_000, device=args.device), best_e[1], "ease")

        if args.blend_weights:
            members = [{"model": "bspm", "params": best[1]},
                       {"model": "ease", "params": {**best_e[1], "max_items": 100_000}}]
            blend = Blend(members=members, weights=[1.0, 0.0], device=args.device).fit(inner.train)
            best_b: tuple[float, dict] = (-1.0, {})
            for w in [float(x) for x in args.blend_weights.split(",")]:
                blend.set_params(weights=[1.0, w])
                s = holdout_score(blend)
                emit(stage="holdout", model="blend", params={"ease_weight": w}, **s)
                if s["ndcg@20"] > best_b[0]:
                    best_b = (s["ndcg@20"], {"members": members, "weights": [1.0, w]})
            del blend
            emit(stage="selected", model="blend", params=best_b[1], holdout_ndcg20=best_b[0])
            final(Blend(device=args.device), best_b[1], "blend")


if __name__ == "__main__":
    main()
