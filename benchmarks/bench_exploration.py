"""Exploration of new items in a simulated click environment built from a trained model.

Environment: EASE is fitted on all of the embedded MovieLens data; 200 items with between 5 and
50 ratings play "new items" the policies know nothing about. When user u sees item i, the click
probability is sigmoid(a * z_ui + b), where z_ui is EASE's score standardised over the new
items for that user (a = 1.5, b = logit(0.05): a 5% base rate, personalised).
Each round a random user arrives; the re-ranker fills its 2 exploration slots (k = 10,
max_share = 0.2) from the 200 new items; clicks are drawn and fed back.
Policies: no exploration (greedy on observed rate), epsilon-greedy (0.1), Thompson sampling
(Beta(1, 9) prior by default: a 10% click rate before any feedback).
Prints JSON lines and writes a plot of cumulative clicks and of the share of impressions going
to the truly best 10% of new items.
Usage: python benchmarks/bench_exploration.py --rounds 20000 --plot docs/figures/exploration.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from recstack.data.readers import load
from recstack.models import EASE
from recstack.pipeline.exploration import EpsilonGreedy, NoExploration, ThompsonSampling


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--plot", default="docs/figures/exploration.png")
    ap.add_argument("--prior", default="1,9", help="Thompson's Beta prior a,b (1,9: a 10%% prior click rate)")
    args = ap.parse_args()
    data = load("embedded")
    counts = data.item_counts()
    rng = np.random.default_rng(0)
    new = np.sort(rng.choice(np.flatnonzero((counts >= 5) & (counts <= 50)), 200, replace=False))
    model = EASE(device="cpu").fit(data)
    s = model.score_all(torch.arange(data.n_users))[:, new].double().numpy()
    z = (s - s.mean(1, keepdims=True)) / (s.std(1, keepdims=True) + 1e-12)
    p = 1 / (1 + np.exp(-(1.5 * z + np.log(0.05 / 0.95))))  # [users, new items]
    best = np.argsort(-p.mean(0))[: len(new) // 10]  # the truly best 10% (by mean click rate)

    curves: dict[str, np.ndarray] = {}
    best_share: dict[str, np.ndarray] = {}
    for name, cls, kw in (("no exploration", NoExploration, {}), ("epsilon-greedy", EpsilonGreedy, {"epsilon": 0.1}),
                          ("Thompson sampling", ThompsonSampling,
                           {"prior_a": float(args.prior.split(",")[0]), "prior_b": float(args.prior.split(",")[1])})):
        clicks_runs, share_runs = [], []
        for seed in range(args.seeds):
            env = np.random.default_rng(100 + seed)
            pol = cls(n_items=len(new), max_share=0.2, seed=seed, **kw)
            users = env.integers(0, data.n_users, args.rounds)
            clicks = np.zeros(args.rounds)
            on_best = np.zeros(args.rounds)
            ranked = np.empty(0, np.int64)
            cands = np.arange(len(new))
            for t, u in enumerate(users):
                slate = pol.rerank(ranked, cands, k=10, request_id=t)
                c = env.random(len(slate)) < p[u, slate]
                pol.update(slate, c)
                clicks[t] = c.sum()
                on_best[t] = np.isin(slate, best).mean()
            clicks_runs.append(np.cumsum(clicks))
            share_runs.append(np.convolve(on_best, np.ones(500) / 500, mode="valid"))
        curves[name] = np.mean(clicks_runs, 0)
        best_share[name] = np.mean(share_runs, 0)
        print(json.dumps({"policy": name, "rounds": args.rounds, "seeds": args.seeds,
                          "clicks_total": round(float(curves[name][-1]), 1),
                          "ctr_explored_slots": round(float(curves[name][-1]) / (2 * args.rounds), 4),
                          "best10pct_share_last500": round(float(best_share[name][-1]), 3),
                          "oracle_ctr": round(float(p.mean(0)[best].mean()), 4)}), flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, c in curves.items():
        a.plot(c, label=name)
    a.set_xlabel("round (one user request)")
    a.set_ylabel("cumulative clicks on explored slots")
    a.legend()
    a.grid(alpha=0.3)
    for name, sh in best_share.items():
        b.plot(np.arange(len(sh)) + 500, sh, label=name)
    b.axhline(0.1, color="k", ls="--", lw=0.8, label="random")
    b.set_xlabel("round")
    b.set_ylabel("share of explored impressions on the best 10% (500-round mean)")
    b.legend()
    b.grid(alpha=0.3)
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    main()
