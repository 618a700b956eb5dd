"""Benchmark full-catalogue evaluation on a Gowalla-shaped random problem.

Defaults mirror Gowalla (LightGCN split): 29,858 users x 40,981 items, 64-dim random
embeddings, ~810k excluded train interactions and ~217k test interactions, K=20.
Runs :func:`recstack.evaluation.evaluate_ranking` once to warm up, then times one run and
prints a single JSON line.

    python benchmarks/bench_eval.py --device cpu
    python benchmarks/bench_eval.py --device cuda --compare-ties --repeats 11

`--compare-ties` times, in the same process and in rotating order (so that drift of the machine
hits all alike), the default tie rule ("random": a seeded hash of user and item), the old rule
("index": lower item index first) in today's code, and the implementation before the change
("legacy", copied below from git 6876c74), and reports each median and the ratios. Random
embeddings have no ties, so all three must give identical metrics (checked).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.sparse as sp
import torch

from recstack.evaluation import embedding_scorer, evaluate_ranking
from recstack.evaluation import ranking as ranking_mod


def random_split(
    n_users: int, n_items: int, n_train: int, n_test: int, rng: np.random.Generator
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Disjoint random train/test interaction matrices with about the requested sizes."""
    total = n_train + n_test
    # Oversample slightly so that deduplication still leaves ~total distinct pairs.
    draw = int(total * 1.05) + 16
    keys = rng.integers(0, n_users, draw, dtype=np.int64) * n_items + rng.integers(
        0, n_items, draw, dtype=np.int64
    )
    keys = np.unique(keys)
    keys = rng.permutation(keys)[:total]

    def to_csr(k: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix(
            (np.ones(k.size, dtype=np.float32), (k // n_items, k % n_items)),
            shape=(n_users, n_items),
        )
        m.sort_indices()
        return m

    return to_csr(keys[:n_train]), to_csr(keys[n_train:])


# ---- the implementation before issue 17 (git 6876c74), kept here only to time it -------------
_FIXUP_ELEMENTS = 1 << 22


def legacy_topk(scores: torch.Tensor, k: int, **_ignored) -> tuple[torch.Tensor, torch.Tensor]:
    """`recstack.evaluation.topk` as it was before the tie rule changed: lower index first,
    and the chosen set always re-sorted (index sort, then a stable sort by score)."""
    b, n = scores.shape
    k = min(int(k), n)
    kk = min(k + 1, n)
    vals, idx = torch.topk(scores, kk, dim=1, largest=True, sorted=True)
    if kk > k:
        boundary_tie = vals[:, k - 1] == vals[:, k]
        vals, idx = vals[:, :k], idx[:, :k]
        rows = boundary_tie.nonzero().squeeze(1)
        if rows.numel():
            idx = idx.clone()
            idx[rows] = _legacy_fix(scores, rows, vals[rows, k - 1], k)
    idx, _ = idx.sort(dim=1)
    vals = scores.gather(1, idx)
    vals, order = vals.sort(dim=1, descending=True, stable=True)
    idx = idx.gather(1, order)
    return vals, idx


def _legacy_fix(scores: torch.Tensor, rows: torch.Tensor, kth: torch.Tensor, k: int) -> torch.Tensor:
    n = scores.shape[1]
    key_dtype = torch.int32 if n < 2**31 - 2 else torch.int64
    tie_rank = torch.arange(n - 1, -1, -1, device=scores.device, dtype=key_dtype)
    above = torch.tensor(n, device=scores.device, dtype=key_dtype)
    below = torch.tensor(-1, device=scores.device, dtype=key_dtype)
    out = []
    step = max(1, _FIXUP_ELEMENTS // n)
    for start in range(0, rows.numel(), step):
        r = rows[start : start + step]
        sub = scores[r]
        t = kth[start : start + step].unsqueeze(1)
        key = torch.where(sub > t, above, torch.where(sub == t, tie_rank, below))
        out.append(torch.topk(key, k, dim=1).indices)
    return torch.cat(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--users", type=int, default=29_858)
    p.add_argument("--items", type=int, default=40_981)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-per-user", type=float, default=810_128 / 29_858)
    p.add_argument("--test-per-user", type=float, default=217_242 / 29_858)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--memory-budget-mb", type=int, default=512)
    p.add_argument("--repeats", type=int, default=1, help="timed runs; the best is reported")
    p.add_argument("--ties", default="random", choices=["random", "index"])
    p.add_argument("--compare-ties", action="store_true",
                   help="time both tie rules, alternating, and report medians and their ratio")
    args = p.parse_args()

    rng = np.random.default_rng(args.seed)
    train, test = random_split(
        args.users,
        args.items,
        int(args.train_per_user * args.users),
        int(args.test_per_user * args.users),
        rng,
    )
    gen = torch.Generator().manual_seed(args.seed)
    user_emb = torch.randn(args.users, args.dim, generator=gen)
    item_emb = torch.randn(args.items, args.dim, generator=gen)
    score_fn = embedding_scorer(user_emb, item_emb)

    def run(ties: str = args.ties):
        return evaluate_ranking(
            score_fn,
            test,
            exclude=train,
            ks=(args.k,),
            device=args.device,
            memory_budget_mb=args.memory_budget_mb,
            ties=ties,
        )

    def timed(ties: str):
        """ties: "random", "index", or "legacy" (the pre-issue-17 implementation, index rule)."""
        current = ranking_mod.topk
        if ties == "legacy":
            ranking_mod.topk = legacy_topk
        try:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t = time.perf_counter()
            res = run("index" if ties == "legacy" else ties)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return time.perf_counter() - t, res
        finally:
            ranking_mod.topk = current

    if args.compare_ties:
        rules = ("random", "index", "legacy")
        for rule in rules:  # warm-up of every path
            timed(rule)
        times_by: dict[str, list[float]] = {rule: [] for rule in rules}
        results = {}
        for r in range(args.repeats):
            for rule in rules[r % 3:] + rules[: r % 3]:  # rotate the order
                t, results[rule] = timed(rule)
                times_by[rule].append(t)
        med = {rule: float(np.median(v)) for rule, v in times_by.items()}
        same = all(np.array_equal(results["random"].per_user[k], results[other].per_user[k])
                   for k in results["random"].per_user for other in ("index", "legacy"))
        dev = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        print(json.dumps({
            "bench": "eval_tie_rules", "device": dev,
            "device_name": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu",
            "users": int(len(results["random"])), "items": args.items, "k": args.k,
            "repeats": args.repeats,
            **{f"median_seconds_{rule}": round(med[rule], 5) for rule in rules},
            "ratio_random_over_index": round(med["random"] / med["index"], 4),
            "ratio_random_over_legacy": round(med["random"] / med["legacy"], 4),
            **{f"times_{rule}": [round(t, 5) for t in times_by[rule]] for rule in rules},
            "metrics_identical": bool(same),
        }))
        return

    run()  # warm-up: embeddings to device, kernels, allocator
    times = []
    for _ in range(args.repeats):
        t, res = timed(args.ties)
        times.append(t)
    dev = (
        str(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        if args.device == "auto"
        else args.device
    )
    out = {
        "seconds": round(min(times), 4),
        "device": dev,
        "device_name": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(),
        "users": int(len(res)),
        "items": args.items,
        "dim": args.dim,
        "k": args.k,
        "train_nnz": int(train.nnz),
        "test_nnz": int(test.nnz),
        f"ndcg@{args.k}": round(res.summary()[f"ndcg@{args.k}"], 6),
        "ties": res.ties,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
