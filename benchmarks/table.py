"""Format `recstack train` JSON result lines as a Markdown table (for docs/benchmarks.md).

Usage: python benchmarks/table.py results/*.json --metrics hr@5,hr@10,ndcg@10
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--metrics", default="hr@5,hr@10,hr@20,ndcg@5,ndcg@10,ndcg@20")
    args = ap.parse_args()
    metrics = args.metrics.split(",")
    print("| model | data | " + " | ".join(metrics) + " | train s | eval s | device |")
    print("|---" * (len(metrics) + 5) + "|")
    for f in args.files:
        text = Path(f).read_text().strip()
        if not text:
            continue
        r = json.loads(text.splitlines()[-1])
        vals = " | ".join(f"{r['metrics'].get(m, float('nan')):.4f}" for m in metrics)
        print(f"| {r['model']} | {r['data']} | {vals} | {r['train_seconds']:.1f} | {r['eval_seconds']:.2f} | {r['device']} |")


if __name__ == "__main__":
    main()
