"""Query and item vectors of an embedding model, precomputed once per loaded bundle."""

from __future__ import annotations

import numpy as np
import torch

from recstack.index.embeddings import embedding_tables
from recstack.models.base import Recommender
from recstack.models.capabilities import FoldsInHistory

_MEMO = 256  # memoised queries: more than one micro-batch (max_batch 32 by default)


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
        self._memo: dict[tuple, np.ndarray | None] = {}

    def query(self, user: int | None, history: np.ndarray) -> np.ndarray | None:
        """The query vector [d], or None. The last `_MEMO` results are memoised, so the
        retrieval source and the rankers on the same model encode a request once, also when a
        micro-batch interleaves them (source for all requests, then each ranker for all)."""
        hist = history[-self.history_len :]
        key = (user, hist.tobytes())
        memo = self._memo
        if key in memo:
            return memo[key]
        q = None
        if user is not None and user < len(self.user_table):
            q = self.user_table[user]
        elif hist.size:
            if self._fold:
                with torch.no_grad():
                    q = self.model.new_user_embedding(history_items=hist.tolist()).cpu().numpy()
            else:
                q = self.item_table[hist].mean(0)
        if len(memo) >= _MEMO:
            memo.clear()  # a batch's worth at most: cheaper than LRU bookkeeping per request
        memo[key] = q
        return q
