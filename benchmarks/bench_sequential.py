"""Sequential recommenders (GRU4Rec, Caser, SASRec, BERT4Rec) through `recstack train`'s code path.

For each model: `run_experiment` (load, leave-one-out, fit with early stopping on the validation
item, full-ranking test) exactly as `recstack train --model M --data D` runs it; then one JSON
line with HR/NDCG@{5,10,20}, the training time of every epoch (from the trainer's history,
validation excluded) and the machine, appended to `--out` and printed.

    python benchmarks/bench_sequential.py --data s3rec:../shared/data/amazon-beauty/Beauty.txt \\
        --models sasrec --out benchmarks/results/issue4/cpu_beauty.jsonl
    python benchmarks/bench_sequential.py --device cuda --max-epochs 2 ...   # epoch time only

`--set key=value` passes hyper-parameters to every model (as `recstack train --set`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

import torch

from recstack.cli import parse_sets
from recstack.evaluation.ranking import resolve_device
from recstack.workflow.experiment import ExperimentConfig, run_experiment

METRICS = ("hr@5", "hr@10", "hr@20", "ndcg@5", "ndcg@10", "ndcg@20")


def machine(device: str) -> dict:
    dev = resolve_device(device)
    out = {"device": str(dev), "torch": torch.__version__, "python": platform.python_version(),
           "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    if dev.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(dev)
    try:
        out["load_avg_1min"] = round(os.getloadavg()[0], 2)  # other processes sharing the CPU
    except OSError:
        pass
    return out


def run_one(model: str, args: argparse.Namespace, sets: dict) -> dict:
    params = {"progress": False, **sets}
    if args.max_epochs is not None:
        params["epochs"] = args.max_epochs
    if args.log_dir:  # the trainer appends one JSON line per epoch there (to watch a long run)
        params["log_path"] = str(Path(args.log_dir) / f"{model}.epochs.jsonl")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExperimentConfig(model=model, data=args.data, device=args.device, params=params,
                               seed=args.seed, out=tmp)
        res = run_experiment(cfg)
        hist_path = Path(tmp) / "history.json"
        history = json.loads(hist_path.read_text()) if hist_path.exists() else []
    epoch_s = [round(r["seconds"], 3) for r in history]
    return {
        "model": model, "data": args.data, "tag": args.tag,
        "date": datetime.date.today().isoformat(),
        **machine(args.device),
        "metrics": {k: res["metrics"][k] for k in METRICS if k in res["metrics"]},
        "epochs_run": len(history), "best_epoch": res.get("best_epoch"),
        "max_epochs": args.max_epochs,
        "epoch_seconds_median": round(statistics.median(epoch_s), 3) if epoch_s else None,
        "epoch_seconds_mean": round(statistics.mean(epoch_s), 3) if epoch_s else None,
        "epoch_seconds": epoch_s,
        "valid_ndcg@10": [round(r["valid_ndcg@10"], 5) for r in history if "valid_ndcg@10" in r],
        "train_seconds": res["train_seconds"], "eval_seconds": res["eval_seconds"],
        "users_evaluated": res["users_evaluated"], "protocol": res["protocol"],
        "params": res["params"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="data spec, e.g. s3rec:../shared/data/amazon-beauty/Beauty.txt")
    ap.add_argument("--models", nargs="+", default=["gru4rec", "caser", "sasrec", "bert4rec"])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--max-epochs", type=int, default=None, help="cap the epochs (e.g. 2 to time epochs)")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="key=value for every model")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tag", default="", help="free text stored with each result line")
    ap.add_argument("--out", default=None, help="JSON-lines file to append results to")
    ap.add_argument("--log-dir", default=None, help="write each model's per-epoch log here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sets = parse_sets(args.sets)
    for model in args.models:
        row = run_one(model, args, sets)
        line = json.dumps(row)
        print(line, flush=True)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            with open(args.out, "a") as f:
                f.write(line + "\n")


if __name__ == "__main__":
    main()
