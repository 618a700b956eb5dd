"""Embedding tables of any recstack model, so that score(u, i) = <user[u], item[i]>."""

from __future__ import annotations

import numpy as np
import torch

from recstack.models.base import Recommender
from recstack.models.capabilities import ExportsEmbeddings


@torch.no_grad()
def embedding_tables(model: Recommender, users: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """(user embeddings [n_users, d] or None, item embeddings [n_items, d]) as float32, from a
    model that `ExportsEmbeddings` (two-tower, YouTube-DNN, MF, LightGCN: bias columns included,
    so that score(u, i) = <user[u], item[i]>).

    Raises:
        TypeError: the model exports no embeddings (e.g. ItemKNN, EASE): index its item vectors
            some other way, or retrieve with an item-to-item source instead.
    """
    if not isinstance(model, ExportsEmbeddings):
        raise TypeError(f"model '{model.name}' has no user/item embeddings to index (ExportsEmbeddings); "
                        "use an embedding model (two_tower, youtube_dnn, mf, lightgcn)")
    model._check_fitted()
    item = model.item_embeddings().detach().float().cpu().numpy()
    user = None
    if users:
        parts = [model.user_embeddings(torch.arange(s, min(s + 8192, model.n_users_))).detach().float().cpu()
                 for s in range(0, model.n_users_, 8192)]
        user = torch.cat(parts).numpy()
    return user, np.ascontiguousarray(item)


def item_vectors(model: Recommender) -> np.ndarray:
    """The item side of `embedding_tables`: the vectors to build an ANN index from."""
    return embedding_tables(model, users=False)[1]
