"""SASRec training speed against RecBole 1.2.1, same GPU, same run, matched settings.

recstack side: the library's own fit (the trainer, the graphed or the plain step) on the
protocol's training sequences, validating on the validation item every epoch, exactly as
`recstack train` does; the test split is never read. Settings matched to the peer script
(`../shared/peers/peer_recbole_sasrec.py`): dim 64, 2 blocks, 2 heads, max_len 50, dropout 0.5,
full cross-entropy, batch 256, Adam lr 1e-3. For each variant one JSON line: the seconds of
every epoch (training, validation and their sum), training targets (next-item predictions)
per second.

RecBole side (`--recbole-epochs N`): the peer script, unchanged, run for N epochs in a
subprocess from a work directory holding the atomic file (`beauty_to_atomic.py`); its
``SEC_PER_EPOCH`` is fit seconds / epochs, validation included. Both sides see the same
training targets per epoch (RecBole as one prefix example per target, recstack as one
sequence with a target at every position), so seconds per epoch compare throughput directly.

    python benchmarks/bench_seq_speed.py --data s3rec:PATH/Beauty.txt --device cuda \\
        --variants graph,plain --epochs 20 --recbole-epochs 3 --peers ../shared/peers \\
        --out benchmarks/results/issue20/speed_h200.jsonl
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from recstack.models.registry import create_model
from recstack.workflow.experiment import ExperimentConfig, prepare

MATCHED = {"dim": 64, "n_blocks": 2, "n_heads": 2, "max_len": 50, "dropout": 0.5, "loss": "ce",
           "batch_size": 256, "lr": 1e-3, "use_attributes": False}


def machine(device: str) -> dict:
    out = {"device": device, "torch": torch.__version__, "python": platform.python_version()}
    if device.startswith("cuda"):
        out["gpu"] = torch.cuda.get_device_name(0)
    out["load_avg_1min"] = round(os.getloadavg()[0], 2)
    return out


def run_recstack(args: argparse.Namespace, variant: str) -> dict:
    t_start = time.perf_counter()
    cfg = ExperimentConfig(model=args.model, data=args.data, device=args.device, seed=0)
    _, sp, proto = prepare(cfg)
    matched = MATCHED if args.model in ("sasrec", "bsarec") else {}  # others: --set only
    params = {**matched, "epochs": args.epochs, "patience": 0, "progress": False, "seed": 0,
              "cuda_graph": "always" if variant == "graph" else "never", **args.sets}
    model = create_model(args.model, device=args.device, **params)
    model.fit(sp.train, valid=sp.valid)
    hist = model.train_result_.history
    n_targets = int(len(sp.train) - (sp.train.csr().getnnz(axis=1) > 0).sum())
    train_s = [r["seconds"] for r in hist]
    valid_s = [r.get("validation_seconds", 0.0) for r in hist]
    both = [a + b for a, b in zip(train_s, valid_s, strict=True)]
    steady = both[1:] if len(both) > 1 else both  # the first epoch holds the capture/warm-up
    return {
        "side": "recstack", "model": args.model, "variant": variant, "data": args.data,
        "protocol": proto.name, "params": params,
        "graph_plan": getattr(model, "graph_plan_", None) and model.graph_plan_.to_dict(),
        "epochs": len(hist), "train_targets_per_epoch": n_targets,
        "epoch_train_seconds": [round(x, 4) for x in train_s],
        "epoch_valid_seconds": [round(x, 4) for x in valid_s],
        "epoch_seconds_median": round(statistics.median(steady), 4),
        "first_epoch_seconds": round(both[0], 4),
        "targets_per_s": round(n_targets / statistics.median(steady), 1),
        "valid_ndcg@10": [round(r["valid_ndcg@10"], 5) for r in hist],
        "wall_seconds": round(time.perf_counter() - t_start, 2),
    }


def run_recbole(args: argparse.Namespace) -> dict:
    work = Path(args.recbole_dir)
    src = args.data.split(":", 1)[1]
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",
           "RB_DEVICE": "cuda" if args.device.startswith("cuda") else "cpu"}
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(Path(args.peers) / "beauty_to_atomic.py"), os.path.abspath(src),
                    str(work / "dataset"), "beauty"], check=True)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, os.path.abspath(Path(args.peers) / "peer_recbole_sasrec.py"),
                        str(args.recbole_epochs)], cwd=work, env=env, capture_output=True, text=True)
    out = p.stdout + p.stderr
    m = re.search(r"FIT_SECONDS (\S+) EPOCHS (\d+) SEC_PER_EPOCH (\S+)", out)
    if p.returncode != 0 or m is None:
        return {"side": "recbole-1.2.1", "error": out[-3000:]}
    return {"side": "recbole-1.2.1", "model": "SASRec", "epochs": int(m.group(2)),
            "fit_seconds": round(float(m.group(1)), 2),
            "sec_per_epoch_with_validation": round(float(m.group(3)), 3),
            "wall_seconds": round(time.perf_counter() - t, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--variants", default="graph,plain")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--set", action="append", default=[], dest="set_", metavar="KEY=VALUE")
    ap.add_argument("--recbole-epochs", type=int, default=0)
    ap.add_argument("--recbole-dir", default="/tmp/recbole_work")
    ap.add_argument("--peers", default="../shared/peers")
    ap.add_argument("--out")
    args = ap.parse_args()
    args.sets = {}
    for s in args.set_:
        k, v = s.split("=", 1)
        args.sets[k] = json.loads(v) if re.fullmatch(r"[-+.\deE]+|true|false", v) else v
    rows = []
    stamp = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), **machine(args.device)}
    for variant in [v for v in args.variants.split(",") if v]:
        rows.append(stamp | run_recstack(args, variant))
        print(json.dumps(rows[-1]), flush=True)
    if args.recbole_epochs:
        rows.append(stamp | run_recbole(args))
        print(json.dumps(rows[-1]), flush=True)
        rb = rows[-1].get("sec_per_epoch_with_validation")
        for r in rows:
            if r["side"] == "recstack" and rb:
                r["ratio_vs_recbole"] = round(rb / r["epoch_seconds_median"], 2)
                print(json.dumps({"variant": r["variant"], "ratio_vs_recbole": r["ratio_vs_recbole"]}))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
