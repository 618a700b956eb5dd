"""DLRM's fast training path against the plain one, through the product (`DLRM.fit`): the same
synthetic Criteo-shaped task, the same hyper-parameters, each path with several seeds.

Reports per run the steady-state training samples/s (the trainer's, after each epoch's first
batches) and the validation AUC / LogLoss of the best epoch; the seeds give the noise the paths'
difference is judged against. The test rows are never read.

    python benchmarks/bench_dlrm_paths.py --device cuda --rows 4000000 --seeds 0,1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from recstack.features.pipeline import FeaturePipeline
from recstack.models.registry import create_model
from recstack.training.trainer import steady_samples_per_s
from recstack.workflow.ctr import synthetic_criteo_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--rows", type=int, default=4_000_000)
    ap.add_argument("--max-cardinality", type=int, default=1_000_000)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=65536)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--paths", default="auto,never", help="fast_path values to run")
    ap.add_argument("--out", default="benchmarks/results/issue19/dlrm_paths.jsonl")
    args = ap.parse_args()

    t0 = time.perf_counter()
    task = synthetic_criteo_task(f"synthetic-criteo:{args.rows}?max_cardinality={args.max_cardinality}")
    pipe = FeaturePipeline(task.features).fit(task.train, where="training frame")
    print(f"task: {task.info} in {time.perf_counter() - t0:.1f}s", flush=True)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    for seed in [int(s) for s in args.seeds.split(",")]:
        for mode in args.paths.split(","):
            # bench_dlrm.py's model (Kaggle MLPs, dim 128, no dropout, Adam 1e-3, Adagrad 0.05)
            m = create_model("dlrm", device=args.device, sparse=True, batch_size=args.batch, dim=args.dim,
                             bottom=(512, 256), top=(512, 256), dropout=0.0, init_std=0.01, lr=1e-3,
                             embedding_lr=0.05, epochs=args.epochs, patience=0, progress=False, seed=seed,
                             fast_path=mode)
            t1 = time.perf_counter()
            m.fit(task.train, task.valid, features=pipe)
            fit_s = time.perf_counter() - t1
            v = m.evaluate(task.valid, where="validation frame")
            tr = m.train_result_
            row = {"bench": "dlrm_paths", "device": device_name, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "rows": task.info, "fast_path": m.fast_path_.to_dict(), "mode": mode, "seed": seed,
                   "batch": args.batch, "dim": args.dim, "epochs": args.epochs, "best_epoch": tr.best_epoch,
                   "valid_auc": round(float(v["auc"]), 6), "valid_logloss": round(float(v["logloss"]), 6),
                   "train_samples_per_s": steady_samples_per_s(tr.history),
                   "epoch_samples_per_s": [round(h["samples_per_s"]) for h in tr.history],
                   "fit_seconds": round(fit_s, 2)}
            print(json.dumps(row), flush=True)
            if args.out:
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
            del m
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
