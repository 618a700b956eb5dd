"""The quickstart pipeline's offline NDCG@10 on a quickstart bundle, through `Pipeline.run` and
through `Pipeline.run_batch` (issue 22): the quickstart's data and split (embedded MovieLens
latest-small, leave-one-out by time), every test user, one request each.

    python benchmarks/probe_issue22_ndcg.py BUNDLE [--batch-sizes 1,8,32]
"""

from __future__ import annotations

import argparse
import json

import torch

from recstack.data.readers import load
from recstack.data.transforms import split
from recstack.pipeline import evaluate_pipeline
from recstack.serving.bundle import load_bundle
from recstack.workflow.experiment import standard_protocol


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--batch-sizes", default="1,8,32")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = load("embedded")
    test = split(data, standard_protocol(data).split).test.csr()
    b = load_bundle(args.bundle, verify=False)
    for bs in [int(x) for x in args.batch_sizes.split(",")]:
        m = evaluate_pipeline(b.pipeline, test, ks=(10, 20), batch_size=bs)
        print(json.dumps({"batch_size": bs, "ndcg@10": round(m["ndcg@10"], 4), "hr@10": round(m["hr@10"], 4),
                          "ndcg@20": round(m["ndcg@20"], 4), "users": m.get("users")}))


if __name__ == "__main__":
    main()
