"""recstack's full-ranking metrics against two independent libraries: ranx and torchmetrics.

One real model (EASE) scores every item for every test user of a per-user random split (20 %
test, so most users have more test items than K); the training items are excluded. Then:

* recstack: `evaluate_ranking` over those scores (exclusion, deterministic top-K, metrics);
* ranx: a `Run` of each user's top-K items in recstack's order and `Qrels` of the test items;
* torchmetrics: the retrieval metrics over the same ranking (``indexes`` = user).

Agreement is checked per user at every K, to 1e-6. Where a library defines a metric
differently, the script says so and checks recstack's value converted to that definition
(so the ranking and the arithmetic are still compared):

* MAP@K: recstack (RecBole's convention) divides the summed precisions at the hits by
  min(|T|, K); ranx by |T|; torchmetrics by the number of hits in the top K.
* torchmetrics zeroes the target of any item whose score is <= 0 before recall and MAP
  (``torch.where(preds > 0, target, 0)``) and averages DCG over tied scores: it is fed positive,
  rank-derived scores (2K - rank for the top K, then 1 for the other test items) for the
  agreement check; its timing below uses the model's raw scores, as a user would.

Timings (every run printed): recstack `evaluate_ranking` on the precomputed scores; ranx
building the Run/Qrels from the top-K and evaluating (its first call, which compiles numba
code, separately); torchmetrics (6 metrics x 3 K, 18 metric objects: its API has one K per
object) over the full score matrix (excluded items dropped), and over the short ranked input of
the agreement check. The scores themselves are computed once, outside every timing.

    python benchmarks/ecosystem/bench_metrics.py --data atomic:../shared/data/movielens-100k
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
from ranx import Qrels, Run
from ranx import evaluate as ranx_evaluate
from torchmetrics.retrieval import (
    RetrievalHitRate,
    RetrievalMAP,
    RetrievalMRR,
    RetrievalNormalizedDCG,
    RetrievalPrecision,
    RetrievalRecall,
)

from recstack.data.readers import load
from recstack.data.transforms import split
from recstack.evaluation import evaluate_ranking
from recstack.models import create_model

KS = (5, 10, 20)
RANX = {"recall": "recall", "precision": "precision", "ndcg": "ndcg", "mrr": "mrr", "hr": "hit_rate",
        "map": "map"}
TM = {"recall": RetrievalRecall, "precision": RetrievalPrecision, "ndcg": RetrievalNormalizedDCG,
      "mrr": RetrievalMRR, "hr": RetrievalHitRate, "map": RetrievalMAP}


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def timed(fn, repeats: int) -> tuple[list[float], object]:
    out, runs = None, []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        runs.append(round(time.perf_counter() - t0, 4))
    return runs, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="atomic:../shared/data/movielens-100k")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    data = load(args.data)
    sp_ = split(data, "ratio", valid_frac=0.0, test_frac=0.2, seed=0)
    train, test = sp_.train, sp_.test
    model = create_model("ease", l2=500.0, device="cpu").fit(train)
    test_csr, excl = test.csr(), train.csr()
    users = np.flatnonzero(np.diff(test_csr.indptr) > 0)
    n_items = test_csr.shape[1]
    with torch.no_grad():
        scores = model.score_all(torch.as_tensor(np.arange(test_csr.shape[0]))).float()
    full = scores.clone()  # what the scorer hands out: a fresh copy per call (evaluate may write)

    def recstack_eval():
        return evaluate_ranking(lambda u: full[u].clone(), test_csr, excl, ks=KS, device="cpu",
                                return_topk=True)

    rec_runs, res = timed(recstack_eval, args.repeats)
    top = res.topk  # [n_users, 20] in recstack's order (ties: its seeded rule)
    k_max = max(KS)
    n_test = np.diff(test_csr.indptr)[users]

    # ---- ranx: the same top-K lists, scores strictly decreasing with rank -------------------
    def ranx_eval():
        qrels = Qrels({str(u): {str(i): 1 for i in test_csr.indices[test_csr.indptr[u]:test_csr.indptr[u + 1]]}
                       for u in users})
        run = Run({str(u): {str(int(i)): float(k_max - r) for r, i in enumerate(top[row]) if i >= 0}
                   for row, u in enumerate(users)})
        names = [f"{RANX[m]}@{k}" for m in RANX for k in KS]
        ranx_evaluate(qrels, run, names, return_mean=False, make_comparable=True)
        # per-user values by query id (ranx orders queries by their string ids)
        return {n: np.array([run.scores[n][str(u)] for u in users]) for n in names}

    t0 = time.perf_counter()
    ranx_vals = ranx_eval()  # first call: numba compiles
    ranx_cold = round(time.perf_counter() - t0, 4)
    ranx_runs, ranx_vals = timed(ranx_eval, args.repeats)

    # ---- torchmetrics: rank-derived positive scores (agreement) ----------------------------
    def tm_inputs_ranked():
        idx, preds, target = [], [], []
        for row, u in enumerate(users):
            t_items = test_csr.indices[test_csr.indptr[u]:test_csr.indptr[u + 1]]
            ranked = [int(i) for i in top[row] if i >= 0]
            rest = np.setdiff1d(t_items, ranked)
            items = np.concatenate([np.asarray(ranked, dtype=np.int64), rest])
            p = np.concatenate([2.0 * k_max - np.arange(len(ranked)), np.ones(len(rest))])
            idx.append(np.full(len(items), row))
            preds.append(p)
            target.append(np.isin(items, t_items))
        return (torch.from_numpy(np.concatenate(preds)), torch.from_numpy(np.concatenate(target)),
                torch.from_numpy(np.concatenate(idx)))

    def tm_eval(preds, target, indexes):
        out = {}
        for m, cls in TM.items():
            for k in KS:
                metric = cls(top_k=k, aggregation=lambda x, dim: x)  # per query values
                metric.update(preds, target, indexes=indexes)
                out[f"{m}@{k}"] = metric.compute().double().numpy()
        return out

    tm_ranked_runs, tm_vals = timed(lambda: tm_eval(*tm_inputs_ranked()), args.repeats)

    # ---- torchmetrics on the raw full scores (timing, as a user would call it) -------------
    excl_users = excl[users].toarray().astype(bool)
    tgt_users = test_csr[users].toarray().astype(bool)

    def tm_full():
        s = full[torch.as_tensor(users)]
        keep = torch.from_numpy(~excl_users)
        idx = torch.arange(len(users)).unsqueeze(1).expand(-1, n_items)
        return tm_eval(s[keep], torch.from_numpy(tgt_users)[keep], idx[keep])

    tm_runs, tm_raw = timed(tm_full, max(1, args.repeats // 2))

    # ---- agreement -----------------------------------------------------------------------------
    agree = {}
    for m in RANX:
        for k in KS:
            key = f"{m}@{k}"
            mine = res.per_user[key]
            ideal = np.minimum(n_test, k)
            ranx_ref, tm_ref = mine, mine
            if m == "map":  # convert recstack's min(|T|, K) denominator to the others'
                ranx_ref = mine * ideal / n_test
                hits = np.array([np.isin(top[r, :k], test_csr.indices[test_csr.indptr[u]:test_csr.indptr[u + 1]]).sum()
                                 for r, u in enumerate(users)])
                tm_ref = np.where(hits > 0, mine * ideal / np.maximum(hits, 1), 0.0)
            rx = np.asarray(ranx_vals[f"{RANX[m]}@{k}"], dtype=np.float64)
            tm = tm_vals[key]
            agree[key] = {
                "recstack_mean": round(float(mine.mean()), 6),
                "ranx_mean": round(float(rx.mean()), 6),
                "torchmetrics_mean": round(float(tm.mean()), 6),
                "ranx_max_abs_diff": float(np.abs(rx - ranx_ref).max()),
                "torchmetrics_max_abs_diff": float(np.abs(tm - tm_ref).max()),
                "torchmetrics_raw_scores_mean": round(float(tm_raw[key].mean()), 6),
            }
    ok = all(v["ranx_max_abs_diff"] <= 1e-6 and v["torchmetrics_max_abs_diff"] <= 1e-6 for v in agree.values())
    row = {"bench": "ecosystem_metrics", "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()} {os.cpu_count()} cpus (shared)", "threads": args.threads,
           "versions": {p: version(p) for p in ("torch", "ranx", "torchmetrics", "numba")},
           "data": args.data, "model": "ease(l2=500)", "split": "ratio(test_frac=0.2, seed=0)",
           "users": int(len(users)), "items": int(n_items), "test_items_per_user_median": float(np.median(n_test)),
           "users_with_more_test_items_than_20": int((n_test > 20).sum()),
           "agree_all_1e-6": ok, "agreement": agree,
           "seconds": {"recstack_evaluate_ranking": rec_runs, "ranx_build_and_evaluate": ranx_runs,
                       "ranx_first_call_with_numba_compile": ranx_cold, "torchmetrics_full_scores": tm_runs,
                       "torchmetrics_topk_plus_test_items": tm_ranked_runs},
           "median": {"recstack": statistics.median(rec_runs), "ranx": statistics.median(ranx_runs),
                      "torchmetrics_full_scores": statistics.median(tm_runs),
                      "torchmetrics_topk_plus_test_items": statistics.median(tm_ranked_runs)},
           "loadavg_end": load_avg()}
    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
