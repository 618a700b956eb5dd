"""Query and item vectors of an embedding model, precomputed once per loaded bundle."""

from __future__ import annotations

import numpy as np
import torch

from recstack.index.embeddings import embedding_tables
from recstack.models.base import Recommender
from recstack.models.capabilities import FoldsInHistory


class QueryEncoder:
    """Encodes a request as a query vector of `model`'s space, s.t. score = <query, item>.

    - known user: the precomputed user-tower output (its stored history included);
    - otherwise, with history: the model's own cold-start path when it has one (two-tower /
      YouTube-DNN trained with histories fold the items into the query tower), else the mean
      embedding of the recent items (item-to-item similarity in the model's space);
    - no user and no history: None (the source / ranker abstains).
    """

    def __init__(self, model: Recommender, name: str, history_len: int = 50) -> None:
        self.name, self.model, self.history_len = name, model, history_len
        self.user_table, self.item_table = embedding_tables(model)
        self._fold = isinstance(model, FoldsInHistory) and bool(getattr(model, "use_history", False))
        self._memo: tuple[tuple, np.ndarray | None] = ((), None)

    def query(self, user: int | None, history: np.ndarray) -> np.ndarray | None:
        """The query vector [d], or None. The last result is memoised, so the retrieval
        source and a ranker on the same model encode a request once."""
        hist = history[-self.history_len :]
        key = (user, hist.tobytes())
        memo = self._memo  # one read: another thread may replace it meanwhile
        if memo[0] == key:
            return memo[1]
        q = None
        if user is not None and user < len(self.user_table):
            q = self.user_table[user]
        elif hist.size:
            if self._fold:
                with torch.no_grad():
                    q = self.model.new_user_embedding(history_items=hist.tolist()).cpu().numpy()
            else:
                q = self.item_table[hist].mean(0)
        self._memo = (key, q)
        return q
