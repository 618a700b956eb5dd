"""New items from content: items held out of training entirely, embedded three ways.

10% of the items with >= 5 ratings in the embedded MovieLens are held out: all their ratings
are removed from training. A two-tower model is trained on the rest with its item tower over
id + genres + year + a sentence embedding of "title; genres" (all-MiniLM-L6-v2, offline). Each
held-out item is then embedded (unknown id):
  - content: through the item tower from its genres, year and text embedding;
  - category mean: the mean embedding of the trained items sharing its genres;
  - random: a random unit vector (the floor).
Evaluation: each user who rated held-out items ranks all held-out items (item cold start);
Recall@20 / NDCG@20 of the items they actually rated. Prints JSON lines.
Usage: python benchmarks/bench_content_coldstart.py [--data embedded] [--epochs 20]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from recstack.content import item_content_vectors
from recstack.data.readers import load
from recstack.evaluation import evaluate_ranking
from recstack.models import TwoTower


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="embedded")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cache", default="recstack-out/cache")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = load(args.data)
    rng = np.random.default_rng(args.seed)
    counts = data.item_counts()
    eligible = np.flatnonzero(counts >= 5)
    new = np.sort(rng.choice(eligible, size=len(eligible) // 10, replace=False))
    is_new = np.isin(data.item, new)
    train = data.subset(~is_new)

    t0 = time.perf_counter()
    vectors = item_content_vectors(data, cache_dir=args.cache, fields=["title", "genres"])
    enc_s = time.perf_counter() - t0
    model = TwoTower(epochs=args.epochs, id_dropout=0.2, device=args.device, progress=False, seed=args.seed)
    t0 = time.perf_counter()
    model.fit(train, item_vectors={"text": vectors})
    fit_s = time.perf_counter() - t0

    feats = data.item_features.take(new)
    ways = {
        "content (item tower: genres, year, text embedding)":
            model.new_item_embeddings(feats, item_vectors={"text": vectors[new]}),
        "category mean (genres)": model.new_item_embeddings(feats, by_category="genres"),
        "random": F.normalize(torch.randn(len(new), model.dim, generator=torch.Generator().manual_seed(args.seed)), dim=-1),
    }
    # users who rated held-out items rank only the held-out items
    test_rows = data.subset(is_new)
    pos = np.searchsorted(new, test_rows.item)
    import scipy.sparse as sp

    test = sp.csr_matrix((np.ones(len(pos), np.float32), (test_rows.user, pos)), shape=(data.n_users, len(new)))
    queries = model.user_embeddings(np.arange(data.n_users))
    for name, emb in ways.items():
        emb = emb.to(queries.device).float()
        res = evaluate_ranking(lambda users, e=emb: queries[users] @ e.T, test, None, ks=(10, 20),
                               device=str(queries.device), progress=False).summary()
        print(json.dumps({"way": name, "new_items": int(len(new)), "users": int(test.getnnz(1).astype(bool).sum()),
                          "recall@20": round(res["recall@20"], 4), "ndcg@20": round(res["ndcg@20"], 4),
                          "recall@10": round(res["recall@10"], 4), "encode_seconds": round(enc_s, 1),
                          "fit_seconds": round(fit_s, 1)}), flush=True)


if __name__ == "__main__":
    main()
