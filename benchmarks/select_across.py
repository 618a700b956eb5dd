"""One set of defaults for several data sets: choose the grid point with the highest mean, over
the data sets, of its validation metric relative to the best point on that data set.

Reads the `recstack tune --no-test --log FILE` logs of one grid run on each data set (the
"validation" lines: every candidate's parameters and validation figures); never reads a test
figure. Prints one JSON line per point (its relative scores and their mean) and the choice.

    python benchmarks/select_across.py --metric ndcg@20 beauty.jsonl lastfm.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", help="one tune log per data set")
    ap.add_argument("--metric", default="ndcg@20")
    args = ap.parse_args()
    per_set: list[dict[str, float]] = []
    for log in args.logs:
        rows = [json.loads(line) for line in Path(log).read_text().splitlines() if line.strip()]
        if any(r.get("stage") == "test" for r in rows):
            raise SystemExit(f"{log}: has a test line; choose from --no-test runs only")
        vals = {json.dumps(r["params"], sort_keys=True): float(r["valid"][args.metric])
                for r in rows if r.get("stage") == "validation"}
        if not vals:
            raise SystemExit(f"{log}: no validation lines")
        per_set.append(vals)
    common = set.intersection(*(set(v) for v in per_set))
    if not common:
        raise SystemExit("no grid point was run on every data set")
    table = []
    for key in sorted(common):
        rel = [v[key] / max(v.values()) for v in per_set]
        table.append({"params": json.loads(key), "valid": [round(v[key], 6) for v in per_set],
                      "relative": [round(r, 4) for r in rel], "mean_relative": round(sum(rel) / len(rel), 4)})
    table.sort(key=lambda r: -r["mean_relative"])
    for row in table:
        print(json.dumps(row))
    print(json.dumps({"selected_on": "validation", "metric": args.metric, "data_sets": args.logs,
                      "rule": "max mean over data sets of (validation metric / best on that data set)",
                      "selected": table[0]}))


if __name__ == "__main__":
    main()
