"""Adapter: a CTR model of `recstack.ranking` (DeepFM, DIN target attention, ...) as a pipeline
ranker. Its feature pipeline and feature store travel with it (`Ranker.save` directory, shipped
in a bundle's `extras/`), so serving computes exactly the training-time features.

    rankers: {"din": {"kind": "ctr", "extra": "din"}}     # extras/din = Ranker.save(...)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from recstack.pipeline.catalog import ItemCatalog, UserStore


class CTRRanker:
    """Scores candidates with `ranker.score_candidates(raw user, raw items, raw history, context)`.

    Unknown / anonymous users are scored with a missing user id (the model's out-of-vocabulary
    embedding) and the request's history.
    """

    def __init__(self, name: str, ranker: Any, catalog: ItemCatalog, users: UserStore) -> None:
        if not hasattr(ranker, "score_candidates"):
            raise TypeError(f"ranker '{name}': {type(ranker).__name__} has no score_candidates()")
        self.name, self.ranker, self.catalog, self.users = name, ranker, catalog, users

    def score(self, user: int | None, items: np.ndarray, history: np.ndarray,
              context: Mapping[str, Any]) -> np.ndarray | None:
        raw_user = self.users.ids[user].item() if user is not None else None
        raw_items = self.catalog.ids[items]
        raw_hist = self.catalog.ids[history].tolist()
        scores = self.ranker.score_candidates(raw_user, raw_items, history=raw_hist, context=dict(context))
        return np.asarray(scores, np.float32).reshape(len(items), -1)[:, 0]  # multi-task: primary task


def load_ctr_ranker(name: str, path: str | Path, catalog: ItemCatalog, users: UserStore) -> CTRRanker:
    """Load a `recstack.ranking.Ranker` saved at `path` (JSON + safetensors + Parquet) on CPU."""
    from recstack.ranking import Ranker

    return CTRRanker(name, Ranker.load(path, device="cpu"), catalog, users)
