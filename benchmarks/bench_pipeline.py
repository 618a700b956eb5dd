"""Issue 6: does each pipeline stage add value? NDCG@10 of retrieval-only vs the full pipeline.

    python benchmarks/bench_pipeline.py --bundle BUNDLE --out benchmarks/results/issue6/pipeline_ml.json
    python benchmarks/bench_pipeline.py --bundle BUNDLE --add-ctr BUNDLE_CTR ...   # first train the CTR stages

With `--add-ctr OUT`, the coarse (FM) and fine (DIN) CTR rankers are trained into a copy of
BUNDLE at OUT (`recstack.workflow.export.add_ctr_rankers`: the same training `recstack export`
runs, reusing the bundle's other models), which is then evaluated. Ranking stages are compared
per ranker set (`--stages NAME=COARSE,FINE`, default: `ctr=coarse_ctr,fine_ctr` and
`blend=coarse,fine` where declared), each against the same retrieval.

BUNDLE must be exported with `holdout: true` (`recstack export --holdout`): its models were
fitted on the leave-one-out history (train + valid), and the held-out last item of every user
is the target here. Every variant is the same bundle with a different pipeline config (same
models, same index): one request per test user through `Pipeline.run`, as the service does.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import time

import numpy as np
import torch

from recstack.data.readers import load
from recstack.data.transforms import split, to_implicit
from recstack.evaluation.ranking import evaluate_ranking
from recstack.evaluation.significance import paired_test
from recstack.pipeline import PipelineConfig, build_pipeline, evaluate_pipeline
from recstack.serving.bundle import load_bundle
from recstack.workflow.experiment import standard_protocol

NEUTRAL_RERANK = {"filter_seen": True, "freshness_weight": 0.0, "mmr_lambda": 1.0, "category_cap": None}


def stage_sets(cfg: dict, given: list[str] | None) -> dict[str, tuple[str, str]]:
    """{set name: (coarse ranker, fine ranker)}: `NAME=COARSE,FINE` strings, or every default set
    whose rankers the config declares (its own stages first)."""
    if given:
        out = {}
        for g in given:
            name, _, pair = g.partition("=")
            coarse, _, fine = pair.partition(",")
            out[name] = (coarse, fine)
        return out
    own = (cfg["coarse"]["ranker"], cfg["fine"]["ranker"]) if cfg.get("coarse") and cfg.get("fine") else None
    out = {"config": own} if own else {}
    for name, pair in (("ctr", ("coarse_ctr", "fine_ctr")), ("blend", ("coarse", "fine"))):
        if all(r in cfg["rankers"] for r in pair) and pair != own:
            out[name] = pair
    return out


def variants(cfg: dict, sets: dict[str, tuple[str, str]]) -> dict[str, dict]:
    """Pipeline configs from retrieval-only to the full pipeline (each adds one thing), per
    ranker set."""
    ann = [s for s in cfg["sources"] if s["kind"] == "ann"]
    keep_c = (cfg.get("coarse") or {}).get("keep", 200)
    keep_f = (cfg.get("fine") or {}).get("keep", 50)
    out = {}
    v = copy.deepcopy(cfg) | {"sources": ann, "coarse": None, "fine": None, "rerank": NEUTRAL_RERANK}
    out["retrieval only: two-tower ANN"] = v
    out["retrieval only: all sources merged"] = copy.deepcopy(cfg) | {"coarse": None, "fine": None, "rerank": NEUTRAL_RERANK}
    for name, (coarse, fine) in sets.items():
        c, f = {"ranker": coarse, "keep": keep_c}, {"ranker": fine, "keep": keep_f}
        out[f"[{name}] + coarse ranker ({coarse})"] = copy.deepcopy(cfg) | {"coarse": c, "fine": None, "rerank": NEUTRAL_RERANK}
        out[f"[{name}] + fine ranker ({fine})"] = copy.deepcopy(cfg) | {"coarse": c, "fine": f, "rerank": NEUTRAL_RERANK}
        out[f"[{name}] full pipeline (+ re-ranking rules)"] = copy.deepcopy(cfg) | {"coarse": c, "fine": f}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--out", default="benchmarks/results/issue6/pipeline_ml.json")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", default=None, help="pipeline config (JSON / YAML) replacing the bundle's")
    ap.add_argument("--stages", action="append", default=None, metavar="NAME=COARSE,FINE",
                    help="ranker set to compare (repeatable; default: the config's, ctr, blend)")
    ap.add_argument("--add-ctr", default=None, metavar="OUT",
                    help="first train the CTR rankers into a copy of BUNDLE at OUT, then evaluate OUT")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="with --add-ctr: recipe overrides (ranker_task.history_len=30, fine_ctr.dim=8, ...)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ctr_seconds = None
    if args.add_ctr:
        from recstack.cli import parse_sets
        from recstack.workflow.export import add_ctr_rankers

        t0 = time.perf_counter()
        add_ctr_rankers(args.bundle, args.add_ctr, parse_sets(args.set), overwrite=True)
        ctr_seconds = round(time.perf_counter() - t0, 1)
        args.bundle = args.add_ctr
    b = load_bundle(args.bundle)
    recipe = b.manifest["info"]["recipe"]
    if not recipe.get("holdout"):
        raise SystemExit(f"{args.bundle} was not exported with holdout: its models saw the test items")
    data = load(recipe["data"])
    if recipe.get("implicit_threshold") is not None:
        data = to_implicit(data, recipe["implicit_threshold"])
    sp = split(data, standard_protocol(data).split)
    part = recipe.get("holdout_part", "test")
    if not np.array_equal(b.assets.catalog.ids, data.item_vocab.raw.astype(b.assets.catalog.ids.dtype)):
        raise SystemExit("the bundle's item ids differ from the data's")
    # target: the held-out item; known: what the models were fitted on (never ranked)
    test = (sp.test if part == "test" else sp.valid).csr()
    known = (sp.history("train+valid") if part == "test" else sp.train).csr()
    results = {}
    # the retrieval model alone, exact full-catalogue ranking (no index, no other stage)
    tt = b.assets.model("two_tower")
    res = evaluate_ranking(tt.score_all, test, known, ks=(args.k,), metrics=("ndcg", "hr", "recall"), device="cpu")
    key = f"ndcg@{args.k}"
    per_user = {}
    results["two-tower exact full ranking (no pipeline)"] = {k: round(v, 5) for k, v in res.summary().items()}
    print(f"{'two-tower exact full ranking':45s} ndcg@{args.k}={res.summary()[f'ndcg@{args.k}']:.4f}", flush=True)
    base_cfg = (PipelineConfig.load(args.config) if args.config else b.config).to_dict()
    sets = stage_sets(base_cfg, args.stages)
    for name, cfg in variants(base_cfg, sets).items():
        pipe = build_pipeline(PipelineConfig.from_dict(cfg), b.assets)
        r = evaluate_pipeline(pipe, test, ks=(args.k,), per_user=True)
        per_user[name] = r.pop("per_user")[key]
        results[name] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()}
        print(f"{name:60s} ndcg@{args.k}={r[f'ndcg@{args.k}']:.4f} hr@{args.k}={r[f'hr@{args.k}']:.4f} "
              f"total {r['ms.total']:.2f} ms/request", flush=True)
    # paired tests over the same users: does the full pipeline beat each retrieval-only variant?
    significance = {}
    for set_name in sets:
        full = per_user[f"[{set_name}] full pipeline (+ re-ranking rules)"]
        for name in per_user:
            if name.startswith("retrieval only") or (name.startswith("[") and "full pipeline" in name
                                                      and not name.startswith(f"[{set_name}]")):
                significance[f"[{set_name}] full pipeline vs {name}"] = {
                    m: paired_test(full, per_user[name], method=m) for m in ("t", "permutation")}
    for name, tests in significance.items():
        print(f"{name}: mean diff {tests['t']['mean_diff']:+.4f}, p(t) = {tests['t']['p_value']:.3g}, "
              f"p(permutation) = {tests['permutation']['p_value']:.3g}")
    out = {
        "bundle": str(b.path), "bundle_version": b.version, "data": recipe["data"], "target": part,
        "protocol": ("leave-one-out by time; target = each user's last item (test) with models fitted "
                     "on train+valid, or the second-to-last (valid) with models fitted on train; one "
                     "request per user, its known history = the fitted part, known items excluded"),
        "k": args.k, "stage_sets": sets, "ctr_training_seconds": ctr_seconds,
        "rankers_training": b.manifest["info"].get("rankers"), "results": results, "significance": significance, "pipeline": base_cfg, "recipe": recipe,
        "machine": {"cpus": os.cpu_count(), "torch_threads": args.threads, "python": platform.python_version(),
                    "torch": torch.__version__, "loadavg_1_5_15": os.getloadavg()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
