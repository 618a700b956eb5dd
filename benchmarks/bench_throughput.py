"""Training throughput (samples/s) of MF and two-tower on Gowalla's train file.

One warm-up epoch, then `--epochs` timed epochs, for each batch size; prints JSON lines.
Usage: python benchmarks/bench_throughput.py --data lightgcn:../shared/data/gowalla --device cuda
"""

from __future__ import annotations

import argparse
import json

import torch

from recstack.data.readers import load
from recstack.data.transforms import split
from recstack.models import MF, TwoTower


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="lightgcn:../shared/data/gowalla")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batches", default="4096,65536")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--configs", default="", help="comma list of configs to run (default: all)")
    args = ap.parse_args()
    train = split(load(args.data), "given").train
    configs = {
        "mf_bpr": lambda bs: MF(dim=64, loss="bpr", n_negatives=1, normalize=False, batch_size=bs),
        "mf_softmax_256neg": lambda bs: MF(dim=64, loss="softmax", n_negatives=256, normalize=True,
                                           temperature=0.1, batch_size=bs),
        "two_tower_in_batch": lambda bs: TwoTower(dim=64, batch_size=bs),
        # 2,048 shared negatives per batch: no B x B logit matrix, so batch 65,536 fits
        "two_tower_sampled_2048neg": lambda bs: TwoTower(dim=64, loss="sampled", n_negatives=2048,
                                                         batch_size=bs),
    }
    chosen = args.configs.split(",") if args.configs else list(configs)
    for name in chosen:
        make = configs[name]
        for bs in map(int, args.batches.split(",")):
            model = make(bs)
            model.set_params(epochs=1 + args.epochs, device=args.device, progress=False, patience=0)
            try:
                model.fit(train)
            except torch.cuda.OutOfMemoryError as e:  # reported as a result, not hidden
                print(json.dumps({"config": name, "batch_size": bs, "error": f"out of memory: {str(e)[:160]}"}))
                del model
                torch.cuda.empty_cache()
                continue
            hist = model.train_result_.history[1:]  # drop the warm-up epoch
            secs = sum(h["seconds"] for h in hist) / len(hist)
            print(json.dumps({"config": name, "batch_size": bs, "samples_per_s": round(len(train) / secs),
                              "epoch_seconds": round(secs, 3), "device": str(model.device_),
                              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}))


if __name__ == "__main__":
    main()
