"""`recstack quickstart`: the baselines on the embedded MovieLens data, compared side by side.

Prepares the embedded data (every rating is an interaction; leave-one-out by time), fits each
baseline, evaluates full-ranking accuracy and beyond-accuracy metrics, and shows example
recommendations with movie titles. Writes `results.json` and each model's files into `out`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from recstack.data.readers import load
from recstack.data.transforms import split
from recstack.evaluation import coverage, gini, novelty
from recstack.experiment import evaluate, standard_protocol
from recstack.models import EASE, ItemKNN, MostPopular
from recstack.models.base import Recommender, resolve_device
from recstack.progress import console, step

KS = (5, 10, 20)


def _titles(data, items: np.ndarray) -> list[str]:
    feats = data.item_features
    if feats is not None and "title" in feats.text:
        return [str(t) for t in feats.text["title"][items]]
    return [str(r) for r in data.item_vocab.decode(items)]


def run_quickstart(out: Path = Path("recstack-out/quickstart"), device: str = "auto",
                   n_examples: int = 3) -> dict[str, Any]:
    """Run the quickstart and return its summary (also written to `out/results.json`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with step("loading the embedded MovieLens latest-small") as s:
        data = load("embedded")
        s["done"] = f"embedded MovieLens: {len(data):,} ratings, {data.n_users:,} users, {data.n_items:,} movies"
    proto = standard_protocol(data)
    with step("leave-one-out split by time"):
        sp = split(data, proto.split)
    fit_data = sp.history("train+valid")
    item_pop = fit_data.item_counts()

    candidates: list[Recommender] = [
        MostPopular(device=device), ItemKNN(device=device), EASE(device=device)
    ]
    results: dict[str, Any] = {}
    fitted: dict[str, Recommender] = {}
    for model in candidates:
        with step(f"fitting {model.name}"):
            t0 = time.perf_counter()
            model.fit(fit_data)
            fit_s = time.perf_counter() - t0
        res = evaluate(model, sp, proto, KS, progress=False, return_topk=True)
        recs = res.topk[:, : max(KS)]
        metrics = {k: float(v) for k, v in res.summary().items()}
        metrics["coverage@20"] = float(coverage(recs, data.n_items))
        metrics["gini@20"] = float(gini(recs, data.n_items))
        metrics["novelty@20"] = float(novelty(recs, item_pop, data.n_users))
        results[model.name] = {"metrics": metrics, "train_seconds": fit_s, "eval_seconds": float(res.seconds)}
        fitted[model.name] = model
        model.save(out / "models" / model.name)

    table = Table(title=f"Baselines on MovieLens latest-small ({proto.description})")
    cols = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "coverage@20", "novelty@20"]
    table.add_column("model")
    for c in cols:
        table.add_column(c, justify="right")
    table.add_column("fit s", justify="right")
    for name, r in results.items():
        table.add_row(name, *[f"{r['metrics'][c]:.4f}" for c in cols], f"{r['train_seconds']:.1f}")
    console.print(table)

    # Example recommendations: a few users, their latest movies, and the best model's top 5.
    best = max(results, key=lambda n: results[n]["metrics"]["ndcg@10"])
    rng = np.random.default_rng(0)
    test_users = np.unique(sp.test.user)
    examples = []
    for u in rng.choice(test_users, size=min(n_examples, len(test_users)), replace=False):
        hist = fit_data.subset(fit_data.user == u)
        order = np.argsort(hist.timestamp, kind="stable")[-3:]
        recs, _ = fitted[best].recommend(np.array([u]), k=5)
        target = sp.test.item[sp.test.user == u]
        examples.append({
            "user": str(data.user_vocab.decode(u)),
            "recent": _titles(data, hist.item[order]),
            "recommended": _titles(data, recs[0]),
            "held_out": _titles(data, target),
        })
    ex_table = Table(title=f"Example recommendations ({best})")
    for c in ("user", "recently watched", "top 5 recommended", "held-out next movie"):
        ex_table.add_column(c)
    for e in examples:
        ex_table.add_row(e["user"], "\n".join(e["recent"]), "\n".join(e["recommended"]), "\n".join(e["held_out"]))
    console.print(ex_table)

    summary = {
        "data": "embedded (MovieLens latest-small)",
        "protocol": proto.description,
        "device": str(resolve_device(device)),
        "best_model": best,
        "models": results,
        "examples": examples,
        "out": str(out),
    }
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    console.print(f"Results written to [bold]{out}/results.json[/bold]; models in {out}/models/")
    console.print("Next: [bold]recstack train --model ease --data embedded[/bold]")
    return summary
