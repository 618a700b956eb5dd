"""The cost of recstack's own training loop against a bare loop and PyTorch Lightning.

The same MF (its module, its loss with sampled negatives, Adam) on the same examples, for a few
epochs, three ways:

* ``bare``: the least a loop can do: shuffled tensor slices, loss, backward, step;
* ``recstack``: `recstack.training.Trainer.fit` (no validation, no checkpoint, no progress bar:
  what is left is its bookkeeping: loss accumulation, throughput clock, history, logging);
* ``lightning_slices``: `lightning.Trainer.fit` over an iterable that yields the same tensor
  slices (Lightning's own loop overhead, without a DataLoader's cost);
* ``lightning_dataloader``: `lightning.Trainer.fit` over ``DataLoader(TensorDataset, sampler=
  BatchSampler(RandomSampler))``, the fastest DataLoader recipe of `bench_batching.py`.

Lightning runs with its logger, checkpointing, progress bar, model summary and sanity check off.
Seconds per epoch are measured inside each loop (epoch start to end) and, separately, the wall
time of the whole ``fit`` call (set-up included). Every run is printed.

    python benchmarks/ecosystem/bench_trainer.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from importlib.metadata import version

import torch
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from recstack.data.readers import load
from recstack.models import create_model
from recstack.training.trainer import TrainConfig, Trainer


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Slices:
    """An iterable of shuffled tensor slices (what recstack's trainer cuts), re-shuffled per pass."""

    def __init__(self, examples: dict[str, torch.Tensor], bs: int, gen: torch.Generator) -> None:
        self.examples, self.bs, self.gen = examples, bs, gen
        self.n = len(next(iter(examples.values())))

    def __len__(self) -> int:
        return -(-self.n // self.bs)

    def __iter__(self):
        perm = torch.randperm(self.n, generator=self.gen)
        for s in range(0, self.n, self.bs):
            idx = perm[s : s + self.bs]
            yield {k: v[idx] for k, v in self.examples.items()}


def run_bare(model, examples, epochs, bs, gen) -> list[float]:
    opt = torch.optim.Adam(model.module_.parameters(), lr=1e-3)
    out = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for batch in Slices(examples, bs, gen):
            loss = model._loss(batch, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out.append(time.perf_counter() - t0)
    return out


def run_recstack(model, examples, epochs, bs, gen) -> list[float]:
    cfg = TrainConfig(epochs=epochs, batch_size=bs, lr=1e-3, progress=False, plateau_factor=1.0)
    res = Trainer(cfg).fit(model.module_, model._loss, examples, None, torch.device("cpu"))
    return [h["seconds"] for h in res.history]


def run_lightning(model, examples, epochs, bs, gen, loader: str) -> list[float]:
    import lightning as L

    times: list[float] = []

    class Timer(L.Callback):
        def on_train_epoch_start(self, trainer, module) -> None:
            self.t0 = time.perf_counter()

        def on_train_epoch_end(self, trainer, module) -> None:
            times.append(time.perf_counter() - self.t0)

    class MFModule(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = model.module_

        def training_step(self, batch, batch_idx):
            if isinstance(batch, list | tuple):
                batch = dict(zip(examples, batch, strict=True))
            return model._loss(batch, gen)

        def configure_optimizers(self):
            return torch.optim.Adam(self.net.parameters(), lr=1e-3)

    if loader == "slices":
        data = Slices(examples, bs, gen)
    else:
        ds = TensorDataset(*examples.values())
        data = DataLoader(ds, sampler=BatchSampler(RandomSampler(ds, generator=gen), bs, drop_last=False),
                          batch_size=None)
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[Timer()])
    trainer.fit(MFModule(), train_dataloaders=data)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="embedded")
    ap.add_argument("--batch-size", type=int, default=1024, help="MF's default")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--negatives", type=int, default=256, help="MF n_negatives (its default: 256)")
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for name in ("lightning", "lightning.pytorch", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)

    data = load(args.data)
    model = create_model("mf", device="cpu", epochs=1, progress=False, n_negatives=args.negatives)
    model.fit(data)
    examples = model._examples(data)
    gen = torch.Generator().manual_seed(0)
    methods = {
        "bare": lambda: run_bare(model, examples, args.epochs, args.batch_size, gen),
        "recstack": lambda: run_recstack(model, examples, args.epochs, args.batch_size, gen),
        "lightning_slices": lambda: run_lightning(model, examples, args.epochs, args.batch_size, gen, "slices"),
        "lightning_dataloader": lambda: run_lightning(model, examples, args.epochs, args.batch_size, gen, "dl"),
    }
    epoch_s: dict[str, list[float]] = {m: [] for m in methods}
    fit_s: dict[str, list[float]] = {m: [] for m in methods}
    for m in methods:  # warm-up (imports, first-call costs), untimed
        methods[m]()
    names = list(methods)
    for r in range(args.repeats):
        for m in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            per_epoch = methods[m]()
            fit_s[m].append(round(time.perf_counter() - t0, 4))
            epoch_s[m].extend(round(x, 4) for x in per_epoch)
    row = {"bench": "ecosystem_trainer", "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "machine": f"{platform.machine()} {os.cpu_count()} cpus (shared)", "threads": args.threads,
           "versions": {p: version(p) for p in ("torch", "lightning")}, "data": args.data,
           "examples": len(examples["user"]), "batch_size": args.batch_size, "n_negatives": args.negatives, "epochs_per_fit": args.epochs,
           "seconds_per_epoch": epoch_s, "seconds_per_fit": fit_s,
           "median_epoch": {m: round(statistics.median(v), 4) for m, v in epoch_s.items()},
           "median_epoch_vs_bare": {m: round(statistics.median(v) / statistics.median(epoch_s["bare"]), 3)
                                    for m, v in epoch_s.items()},
           "loadavg_end": load_avg()}
    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
