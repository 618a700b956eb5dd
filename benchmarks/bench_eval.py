"""Benchmark full-catalogue evaluation on a Gowalla-shaped random problem.

Defaults mirror Gowalla (LightGCN split): 29,858 users x 40,981 items, 64-dim random
embeddings, ~810k excluded train interactions and ~217k test interactions, K=20.
Runs :func:`recstack.evaluation.evaluate_ranking` once to warm up, then times one run and
prints a single JSON line.

    python benchmarks/bench_eval.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import scipy.sparse as sp
import torch

from recstack.evaluation import embedding_scorer, evaluate_ranking


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

    def run():
        return evaluate_ranking(
            score_fn,
            test,
            exclude=train,
            ks=(args.k,),
            device=args.device,
            memory_budget_mb=args.memory_budget_mb,
        )

    run()  # warm-up: embeddings to device, kernels, allocator
    times = []
    for _ in range(args.repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        res = run()
        times.append(time.perf_counter() - t)
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
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
