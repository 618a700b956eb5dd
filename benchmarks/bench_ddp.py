"""Data-parallel training throughput and metrics, 1 process vs torchrun; sharded-table capacity.

Dense mode (default): MF (sampled softmax, 256 negatives) trained by the shared Trainer on a
generated planted-cluster data set (or `--data SPEC`), leave-one-out split, early-stopping
metric on valid and full-ranking test metrics, both computed exactly across ranks. Throughput
is training samples per second over the timed epochs (the first `--warmup` epochs and all
validation time excluded), for the whole job.

    python3 benchmarks/bench_ddp.py --device cuda                              # 1 GPU
    torchrun --nproc_per_node 2 benchmarks/bench_ddp.py --device cuda          # 2 GPUs

Sharded mode: `ShardedMF` whose user table has `--table-rows` rows, row-sharded over the ranks
(BPR, row-wise sparse SGD, no optimiser state), on random (user, item) pairs; prints the table's size, each rank's
share and peak memory, and throughput:

    torchrun --nproc_per_node 2 benchmarks/bench_ddp.py --device cuda --sharded --table-rows 600000000

Rank 0 prints one JSON line last. On CPU (gloo) use tiny sizes, e.g.
`torchrun --nproc_per_node 2 benchmarks/bench_ddp.py --device cpu --users 2000 --items 500 --rows 50000`.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch
import torch.distributed as dist

from recstack.data import from_raw
from recstack.data.dataset import Interactions
from recstack.distributed import (
    ShardedMF,
    evaluate_ranking_sharded,
    init_from_env,
    is_main,
    world_size,
)
from recstack.training.trainer import TrainConfig, Trainer


def planted(users: int, items: int, rows: int, clusters: int, seed: int) -> Interactions:
    """Users in `clusters` groups; each group draws Zipf-popular items from its own item block
    (90%) or anywhere (10%): learnable structure, so the metrics say something."""
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, rows)
    block = max(1, items // clusters)
    zipf = 1.0 / np.arange(1, block + 1) ** 0.8
    in_block = np.searchsorted(np.cumsum(zipf / zipf.sum()), rng.random(rows), side="right")
    own = (u % clusters) * block + np.minimum(in_block, block - 1)
    i = np.where(rng.random(rows) < 0.9, own, rng.integers(0, items, rows)) % items
    # one row per (user, item): a repeated pair would be a known, excluded test item
    _, first = np.unique(u * items + i, return_index=True)
    keep = np.sort(first)
    return from_raw(u[keep], i[keep], timestamp=keep, name="planted")


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)


def gather_floats(values: list[float], device: torch.device) -> list[list[float]]:
    """Every rank's `values` (one small tensor collective; no pickled objects)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if world_size() == 1:
        return [t.tolist()]
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t)
    return [p.tolist() for p in parts]


def device_info(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"device": "cpu"}
    return {"device": torch.cuda.get_device_name(device),
            "device_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)}


def run_dense(args: argparse.Namespace, device: torch.device) -> dict:
    from recstack.data.readers import load
    from recstack.data.transforms import split
    from recstack.models import MF

    data = load(args.data) if args.data else planted(args.users, args.items, args.rows, args.clusters, args.seed)
    sp = split(data, "given" if data.fmt == "lightgcn" else "loo")
    model = MF(dim=args.dim, loss="softmax", n_negatives=args.negatives, batch_size=args.batch_size,
               lr=args.lr, epochs=args.warmup + args.epochs, patience=0, plateau_factor=1.0,
               device=str(device), progress=False, monitor="recall@20", seed=args.seed,
               ddp_find_unused=not args.static, ddp_bf16_grads=args.bf16_grads)
    valid = sp.valid if sp.valid is not None else sp.test
    model.fit(sp.train, valid=valid)
    timed = model.train_result_.history[args.warmup:]
    secs = sum(h["seconds"] for h in timed)
    known = sp.history("train+valid") if sp.valid is not None else sp.train
    test = evaluate_ranking_sharded(model.score_all, sp.test.csr(), known.csr(), ks=(10, 20),
                                    metrics=("recall", "ndcg"), device=str(device))
    mem = gather_floats([peak_memory_gib(device)], device)
    return {
        "mode": "dense", "data": args.data or f"planted({args.users},{args.items},{args.rows})",
        "train_rows": len(sp.train), "batch_size": args.batch_size,
        "per_rank_batch": args.batch_size // world_size(), "epochs_timed": len(timed),
        "ddp_find_unused": not args.static, "ddp_bf16_grads": args.bf16_grads,
        "samples_per_s": round(len(sp.train) * len(timed) / secs),
        "epoch_seconds": [round(h["seconds"], 3) for h in timed],
        "valid_recall@20_by_epoch": [round(h["valid_recall@20"], 6) for h in model.train_result_.history],
        "test": {k: round(v, 6) for k, v in test.summary().items()},
        "peak_memory_gib_per_rank": [round(m[0], 3) for m in mem],
    }


def run_sharded(args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    model = ShardedMF(args.table_rows, args.items, dim=args.dim, sparse=True, device=device)
    init_s = time.perf_counter() - t0
    g = torch.Generator(device=device).manual_seed(args.seed)  # same examples on every rank
    n = args.steps * args.batch_size
    user = torch.randint(args.table_rows, (n,), device=device, generator=g)
    # each user prefers one item (90%): epoch 2 revisits the pairs, so the loss must fall
    noise = torch.randint(args.items, (n,), device=device, generator=g)
    keep = torch.rand(n, device=device, generator=g) < 0.9
    ex = {"user": user, "item": torch.where(keep, (user * 7919) % args.items, noise)}
    cfg = TrainConfig(epochs=2, batch_size=args.batch_size, lr=args.lr, progress=False,
                      seed=args.seed, amp=False, plateau_factor=1.0)
    res = Trainer(cfg).fit(model, model.loss, ex, device=device,
                           make_optimizer=lambda m, c: torch.optim.SGD(list(m.parameters()), lr=c.lr))
    secs = res.history[1]["seconds"]  # epoch 1 is the warm-up
    row_bytes = args.dim * 4
    local_rows = model.user.stop - model.user.start
    mem = gather_floats([peak_memory_gib(device), local_rows * row_bytes / 2**30], device)
    table_gib = args.table_rows * row_bytes / 2**30
    info = device_info(device)
    return {
        "mode": "sharded", "table_rows": args.table_rows, "dim": args.dim, "items": args.items,
        "user_table_gib": round(table_gib, 2),
        "user_table_exceeds_one_device": bool(info.get("device_memory_gib", float("inf")) < table_gib),
        "local_table_gib_per_rank": [round(m[1], 2) for m in mem],
        "peak_memory_gib_per_rank": [round(m[0], 2) for m in mem],
        "batch_size": args.batch_size, "steps": args.steps, "init_seconds": round(init_s, 2),
        "samples_per_s": round(n / secs), "loss": [round(h["loss"], 5) for h in res.history],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=None, help="data spec (default: generated planted clusters)")
    ap.add_argument("--users", type=int, default=200_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--rows", type=int, default=10_000_000, help="generated interactions")
    ap.add_argument("--clusters", type=int, default=100)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--negatives", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8192, help="global batch (split over ranks)")
    ap.add_argument("--lr", type=float, default=None, help="default: 1e-3 (Adam); sharded (SGD): the batch size")
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs")
    ap.add_argument("--warmup", type=int, default=1, help="untimed first epochs")
    ap.add_argument("--sharded", action="store_true", help="row-sharded table capacity mode")
    ap.add_argument("--table-rows", type=int, default=1_000_000, help="sharded user-table rows")
    ap.add_argument("--steps", type=int, default=200, help="sharded mode: steps per epoch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--static", action="store_true",
                    help="dense mode: DDP without the per-step search for unused parameters")
    ap.add_argument("--bf16-grads", action="store_true", help="dense mode: all-reduce gradients in bf16")
    args = ap.parse_args()

    dev_str = init_from_env(args.device)
    device = torch.device(dev_str if dev_str != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    if args.lr is None:
        # sparse SGD on a batch-mean loss: each row's gradient is ~1/batch, so scale the step
        args.lr = float(args.batch_size) if args.sharded else 1e-3
    out = run_sharded(args, device) if args.sharded else run_dense(args, device)
    out |= {"world_size": world_size(), "backend": dist.get_backend() if dist.is_initialized() else None,
            "torch": torch.__version__, **device_info(device)}
    if is_main():
        print(json.dumps(out))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
