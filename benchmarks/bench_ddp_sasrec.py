"""SASRec weak scaling under torchrun: the same work per rank on 1, 2, ... GPUs, through the
product (`SASRec.fit`, the shared Trainer's DDP, the distributed full-ranking evaluator).

A synthetic sequence set is generated identically on every rank: `--users-per-rank x world`
users, each with `--length` items in time order from `--items` items (Zipf-popular, and with
probability `--signal` the item after the previous one: a learnable next-item pattern), so the
data and the global batch (`--batch-per-rank x world`) grow with the world size while each
rank's share stays the same. Leave-one-out split; validation NDCG@10 per epoch, test metrics
once. Rank 0 prints one JSON line last: world size, interactions, steady-state training
samples/s of the job (the trainer's, after each epoch's first batches), seconds per
epoch, metrics, peak memory.

    python benchmarks/bench_ddp_sasrec.py --device cuda                                   # 1 GPU
    torchrun --nproc_per_node 2 benchmarks/bench_ddp_sasrec.py --device cuda              # 2 GPUs
    torchrun --nproc_per_node 2 benchmarks/bench_ddp_sasrec.py --device cuda --static --bf16-grads
    torchrun --nproc_per_node 2 benchmarks/bench_ddp_sasrec.py --device cpu --users-per-rank 300 \\
        --length 20 --items 200 --epochs 1                                                # gloo smoke test

Defaults: 250,000 users per rank x 50 items = 12.5M interactions per rank (25M on 2 GPUs).
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

from recstack.data import from_raw
from recstack.data.dataset import Interactions
from recstack.data.transforms import split
from recstack.distributed import evaluate_ranking_sharded, init_from_env, is_main, world_size
from recstack.models.sequential.sasrec import SASRec
from recstack.training.trainer import steady_samples_per_s


def sequences(users: int, length: int, items: int, signal: float, seed: int) -> Interactions:
    """`users` sequences of `length` items: Zipf-popular draws, or with probability `signal`
    the item after the previous one (vectorised over users, one column at a time)."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, items + 1) ** 0.9
    cdf = np.cumsum(zipf / zipf.sum())
    seq = np.empty((users, length), np.int64)
    seq[:, 0] = np.searchsorted(cdf, rng.random(users), side="right").clip(max=items - 1)
    for t in range(1, length):
        pop = np.searchsorted(cdf, rng.random(users), side="right").clip(max=items - 1)
        seq[:, t] = np.where(rng.random(users) < signal, (seq[:, t - 1] + 1) % items, pop)
    u = np.repeat(np.arange(users), length)
    ts = np.tile(np.arange(length), users)
    return from_raw(u, seq.reshape(-1), timestamp=ts, name="synthetic-sequences")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--users-per-rank", type=int, default=250_000)
    ap.add_argument("--length", type=int, default=50, help="items per user")
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--signal", type=float, default=0.5, help="share of next-item transitions")
    ap.add_argument("--batch-per-rank", type=int, default=256, help="sequence windows per rank and step")
    ap.add_argument("--max-len", type=int, default=50)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--static", action="store_true", help="ddp_find_unused=false (no per-step unused-parameter search)")
    ap.add_argument("--bf16-grads", action="store_true", help="all-reduce gradients in bf16 (CUDA/NCCL)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    device = init_from_env(args.device)
    world = world_size()
    t0 = time.perf_counter()
    data = sequences(args.users_per_rank * world, args.length, args.items, args.signal, args.seed)
    sp_ = split(data, "loo")
    gen_seconds = time.perf_counter() - t0
    model = SASRec(device=device, max_len=args.max_len, dim=args.dim, epochs=args.epochs, lr=args.lr,
                   batch_size=args.batch_per_rank * world, patience=0, plateau_factor=1.0,
                   monitor="ndcg@10", seed=args.seed, progress=is_main(), cuda_graph="never",
                   ddp_find_unused=not args.static, ddp_bf16_grads=args.bf16_grads)
    t0 = time.perf_counter()
    model.fit(sp_.train, valid=sp_.valid)
    fit_seconds = time.perf_counter() - t0
    exclude = (sp_.train.csr() + sp_.valid.csr()).tocsr()
    test = evaluate_ranking_sharded(model.score_all, sp_.test.csr(), exclude, ks=(10, 20), device=str(model.device_))
    hist = model.train_result_.history
    per_rank = steady_samples_per_s(hist)
    peak = (torch.cuda.max_memory_allocated() / 2**30 if str(model.device_).startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    out = {
        "bench": "ddp_sasrec", "world": world, "device": str(model.device_),
        "interactions": len(data), "interactions_per_rank": len(data) // world,
        "users": data.n_users, "items": data.n_items, "global_batch": model.train_config.batch_size,
        "static": args.static, "bf16_grads": args.bf16_grads,
        # the trainer counts every global batch it steps through (each rank trains its slice of
        # it), so its steady-state samples/s is the whole job's
        "train_samples_per_s_job": per_rank,
        "epoch_seconds": [round(h["seconds"], 2) for h in hist],
        "fit_seconds": round(fit_seconds, 2), "generate_seconds": round(gen_seconds, 2),
        "valid_ndcg@10": [round(h.get("valid_ndcg@10", float("nan")), 6) for h in hist],
        "test": {k: round(v, 6) for k, v in test.summary().items()},
        "peak_memory_gib_rank0": round(peak, 2),
    }
    if is_main():
        print(json.dumps(out))


if __name__ == "__main__":
    main()
