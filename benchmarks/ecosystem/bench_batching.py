"""Batching one epoch of a real model's examples: recstack's tensor slicing vs torch's DataLoader.

recstack's `Trainer` keeps a model's training examples as aligned tensors and cuts each batch
with one index of a shuffled permutation (``{k: v[perm[s:e]]}``). The ecosystem's way is
`torch.utils.data.DataLoader`; this script times, for the examples of MF (one (user, item) pair
per interaction) on a real data set:

* ``slice``: recstack's way, exactly as `Trainer._epoch` cuts batches;
* ``dataloader``: ``DataLoader(TensorDataset(...), batch_size=B, shuffle=True)``, the textbook
  recipe (one ``__getitem__`` per example, then ``default_collate`` stacks them);
* ``batchsampler``: ``DataLoader(TensorDataset(...), sampler=BatchSampler(RandomSampler(...), B),
  batch_size=None)``: one ``__getitem__`` per batch with a list of indices;
* ``dataloader_w2`` (``--workers``): the textbook recipe with ``num_workers=2`` worker processes.

Two modes: ``batches`` (only make every batch of the epoch) and ``train`` (MF's own loss,
backward and Adam step on every batch, as a real epoch). Methods run in rotating order, so a
change of load on the (shared) machine hits all of them alike; every run is printed.

    python benchmarks/ecosystem/bench_batching.py                     # embedded ML latest-small
    python benchmarks/ecosystem/bench_batching.py --data atomic:../shared/data/movielens-100k
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from recstack.data.readers import load
from recstack.models import create_model


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def slice_batches(examples: dict[str, torch.Tensor], bs: int, gen: torch.Generator):
    n = len(next(iter(examples.values())))
    perm = torch.randperm(n, generator=gen)
    for s in range(0, n, bs):
        idx = perm[s : s + bs]
        yield {k: v[idx] for k, v in examples.items()}


def loader_batches(examples: dict[str, torch.Tensor], bs: int, gen: torch.Generator, kind: str):
    keys = list(examples)
    ds = TensorDataset(*examples.values())
    if kind == "dataloader":
        dl = DataLoader(ds, batch_size=bs, shuffle=True, generator=gen)
    elif kind == "dataloader_w2":
        dl = DataLoader(ds, batch_size=bs, shuffle=True, generator=gen, num_workers=2)
    else:  # batchsampler
        dl = DataLoader(ds, sampler=BatchSampler(RandomSampler(ds, generator=gen), bs, drop_last=False),
                        batch_size=None)
    for cols in dl:
        yield dict(zip(keys, cols, strict=True))


def epoch(method: str, mode: str, examples, bs, model, opt, gen) -> tuple[float, int]:
    batches = (slice_batches(examples, bs, gen) if method == "slice"
               else loader_batches(examples, bs, gen, method))
    t0 = time.perf_counter()
    n = 0
    for batch in batches:
        n += 1
        if mode == "train":
            loss = model._loss(batch, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="embedded")
    ap.add_argument("--batch-size", type=int, default=1024, help="MF's default")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default="batches,train")
    ap.add_argument("--workers", action="store_true", help="also time num_workers=2")
    ap.add_argument("--negatives", type=int, default=256, help="MF n_negatives (its default: 256)")
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    data = load(args.data)
    model = create_model("mf", device="cpu", epochs=1, progress=False, n_negatives=args.negatives)
    model.fit(data)  # sets up the module, the sampler and the seen items, as a real fit does
    examples = model._examples(data)
    opt = torch.optim.Adam(model.module_.parameters(), lr=1e-3)
    methods = ["slice", "dataloader", "batchsampler"] + (["dataloader_w2"] if args.workers else [])
    head = {"bench": "ecosystem_batching", "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()} {os.cpu_count()} cpus (shared)", "torch": torch.__version__,
            "threads": args.threads, "data": args.data, "examples": len(examples["user"]),
            "batch_size": args.batch_size, "n_negatives": args.negatives, "loadavg_start": load_avg()}
    lines = [head]
    print(json.dumps(head), flush=True)
    for mode in args.modes.split(","):
        gen = torch.Generator().manual_seed(0)
        for m in methods:  # warm-up: one untimed epoch each
            epoch(m, mode, examples, args.batch_size, model, opt, gen)
        runs: dict[str, list[float]] = {m: [] for m in methods}
        for r in range(args.repeats):
            order = methods[r % len(methods):] + methods[: r % len(methods)]
            for m in order:
                sec, n_b = epoch(m, mode, examples, args.batch_size, model, opt, gen)
                runs[m].append(round(sec, 4))
                print(json.dumps({"mode": mode, "method": m, "seconds": round(sec, 4),
                                  "loadavg": load_avg()}), flush=True)
        row = {"mode": mode, "batches_per_epoch": n_b, "seconds_per_epoch": runs,
               "median": {m: round(statistics.median(v), 4) for m, v in runs.items()},
               "vs_slice": {m: round(statistics.median(v) / statistics.median(runs["slice"]), 2)
                            for m, v in runs.items()},
               "loadavg_end": load_avg()}
        lines.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.writelines(json.dumps(x) + "\n" for x in lines)


if __name__ == "__main__":
    main()
