"""Embedding tables of any recstack model, so that score(u, i) = <user[u], item[i]>."""

from __future__ import annotations

import numpy as np
import torch

from recstack.models.base import Recommender


@torch.no_grad()
def embedding_tables(model: Recommender, users: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """(user embeddings [n_users, d] or None, item embeddings [n_items, d]) as float32.

    Supported: models with `item_embeddings()` / `user_embeddings(users)` (two-tower,
    YouTube-DNN: bias columns included), and factorisation models with `embeddings()` (MF,
    LightGCN: a learned item bias becomes an extra column, matched by a 1 on the user side).

    Raises:
        TypeError: the model is not an embedding model (e.g. ItemKNN, EASE): index its item
            vectors some other way, or retrieve with an item-to-item source instead.
    """
    model._check_fitted()
    if hasattr(model, "item_embeddings") and hasattr(model, "user_embeddings"):
        item = model.item_embeddings().float().cpu().numpy()
        user = None
        if users:
            parts = [model.user_embeddings(torch.arange(s, min(s + 8192, model.n_users_))).float().cpu()
                     for s in range(0, model.n_users_, 8192)]
            user = torch.cat(parts).numpy()
        return user, np.ascontiguousarray(item)
    if hasattr(model, "embeddings"):
        p, q = (t.detach().float().cpu() for t in model.embeddings())
        if getattr(model, "use_bias", False) and not getattr(model, "_cosine", False):
            bias = model.module_.item_bias.weight.detach().float().cpu()
            q = torch.cat([q, bias], 1)
            p = torch.cat([p, torch.ones(len(p), 1)], 1)
        return (p.numpy() if users else None), np.ascontiguousarray(q.numpy())
    raise TypeError(f"model '{model.name}' has no user/item embeddings to index; use an "
                    "embedding model (two_tower, youtube_dnn, mf, lightgcn)")


def item_vectors(model: Recommender) -> np.ndarray:
    """The item side of `embedding_tables`: the vectors to build an ANN index from."""
    return embedding_tables(model, users=False)[1]
