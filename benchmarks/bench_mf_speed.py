"""Issue 21: seconds per training epoch of recstack's BPR-MF (and LightGCN) against RecBole 1.2.1's
BPR in the same run, on the same GPU, with the same settings: Gowalla's train.txt, batch 2,048,
dim 64, one uniform negative per positive (excluding the user's items), Adam, BPR loss.

recstack side: the product's `MF` / `LightGCN` fitted through the Python API on all of train.txt
(no validation), `--epochs` epochs; the epoch time is the trainer's own per-epoch `seconds`
(training only, as RecBole's `_train_epoch`), the median after the first epoch (which includes
the CUDA graph's capture). Variants: `graph` (the default on CUDA: the epoch as replays of CUDA graphs, recstack.models.pair_step) and `plain`
(`cuda_graph=never`). RecBole side: `../shared/peers/peer_recbole_epoch_time.py GOWALLA BPR N`,
unchanged, in a subprocess (its epochs cover its own 98% split: the ratio is taken per
interaction, i.e. on throughput).

    python benchmarks/bench_mf_speed.py --data ../shared/data/gowalla --device cuda \\
        --models mf,lightgcn --variants graph,plain --epochs 6 --recbole-epochs 3 \\
        --peers ../shared/peers --out benchmarks/results/issue21/mf_speed.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from recstack.data.readers import load
from recstack.data.transforms import split
from recstack.models import MF, LightGCN

SETTINGS = {"dim": 64, "loss": "bpr", "n_negatives": 1, "normalize": False, "batch_size": 2048, "lr": 1e-3,
            "reg": 0.0, "progress": False, "plateau_factor": 1.0, "patience": 0}


def run_recstack(data, model: str, variant: str, epochs: int, device: str) -> dict:
    cls = {"mf": MF, "lightgcn": LightGCN}[model]
    kw = SETTINGS | {"epochs": epochs, "device": device, "cuda_graph": "never" if variant == "plain" else "auto"}
    m = cls(**kw)
    t = time.perf_counter()
    m.fit(data)
    wall = time.perf_counter() - t
    secs = [h["seconds"] for h in m.train_result_.history]
    med = statistics.median(secs[1:]) if len(secs) > 1 else secs[0]
    plan = getattr(m, "step_plan_", None)
    return {"side": "recstack", "model": model, "variant": variant, "interactions": len(data),
            "epoch_seconds": [round(s, 4) for s in secs], "epoch_seconds_median": round(med, 4),
            "interactions_per_s": round(len(data) / med), "fit_wall_s": round(wall, 2),
            "step": plan.to_dict() if plan else None}


def run_recbole(gowalla: str, peers: str, epochs: int, work: str) -> dict:
    Path(work).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1", "RB_DEVICE": "cuda"}
    p = subprocess.run([sys.executable, os.path.abspath(Path(peers) / "peer_recbole_epoch_time.py"),
                        os.path.abspath(gowalla), "BPR", str(epochs)], cwd=work, env=env,
                       capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode or not lines:
        return {"side": "recbole-1.2.1", "error": (p.stdout + p.stderr)[-3000:]}
    r = json.loads(lines[-1])
    secs = r["sec_per_epoch"]
    med = statistics.median(secs[1:]) if len(secs) > 1 else secs[0]
    return {"side": "recbole-1.2.1", "model": "BPR", "interactions": r["interactions"], "epoch_seconds": secs,
            "epoch_seconds_median": med, "interactions_per_s": round(r["interactions"] / med)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the Gowalla folder (train.txt, test.txt)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="mf,lightgcn")
    ap.add_argument("--variants", default="graph,plain")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--recbole-epochs", type=int, default=0)
    ap.add_argument("--peers", default="../shared/peers")
    ap.add_argument("--recbole-dir", default="/tmp/recbole_bpr")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    train = split(load(f"lightgcn:{args.data}"), "given").train  # train.txt
    stamp = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
             "torch": torch.__version__, "settings": SETTINGS}
    rows = []
    for model in args.models.split(","):
        for variant in args.variants.split(","):
            rows.append(stamp | run_recstack(train, model, variant, args.epochs, args.device))
            print(json.dumps(rows[-1]), flush=True)
    if args.recbole_epochs:
        rows.append(stamp | run_recbole(args.data, args.peers, args.recbole_epochs, args.recbole_dir))
        print(json.dumps(rows[-1]), flush=True)
        rb = rows[-1].get("interactions_per_s")
        if rb:
            for r in rows[:-1]:
                r["throughput_vs_recbole"] = round(r["interactions_per_s"] / rb, 2)
                print(json.dumps({k: r[k] for k in ("model", "variant", "epoch_seconds_median",
                                                    "throughput_vs_recbole")}), flush=True)
    if args.out:
        with open(args.out, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
