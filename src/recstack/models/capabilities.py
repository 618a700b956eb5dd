"""What a model can do beyond the common contract, declared as protocols rather than probed
with ``hasattr``: code that needs a capability checks ``isinstance(model, Capability)`` (the
protocols are runtime-checkable) and says which one is missing when it is.

| capability | verbs | models |
|---|---|---|
| `RecommendsTopK` | ``recommend(users, k)`` raw ids; ``recommend_indices`` | every retrieval and sequential model |
| `ScoresAllItems` | ``score_all(user indices) -> [n, n_items]`` (evaluation) | the same |
| `EncodesSequences` | ``set_history(data)``, ``recommend_sequence(sessions, k)`` (raw ids) and ``recommend_sequence_indices`` | gru4rec, caser, sasrec, bert4rec |
| `ScoresFeatureRows` | ``predict_proba(frame)``, ``score_candidates(user, items)`` | every CTR model |
| `ExportsEmbeddings` | ``user_embeddings(users)``, ``item_embeddings()``: ``score = <user, item>`` (ANN indexes) | mf, lightgcn, two_tower, youtube_dnn |
| `FoldsInHistory` | ``new_user_embedding(history_items=...)``: a query vector for a user the model has not seen, from recent items | two_tower, youtube_dnn (trained with histories) |
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["EncodesSequences", "ExportsEmbeddings", "FoldsInHistory", "RecommendsTopK",
           "ScoresAllItems", "ScoresFeatureRows", "capabilities"]


@runtime_checkable
class RecommendsTopK(Protocol):
    def recommend(self, users: Any, k: int = 10, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class ScoresAllItems(Protocol):
    def score_all(self, users: Any) -> Any: ...


@runtime_checkable
class EncodesSequences(Protocol):
    def set_history(self, data: Any) -> Any: ...

    def recommend_sequence(self, histories: Sequence[Any], k: int = 10, exclude_seen: bool = False
                           ) -> tuple[np.ndarray, np.ndarray]: ...

    def recommend_sequence_indices(self, histories: Sequence[Any], k: int = 10, exclude_seen: bool = False
                                   ) -> tuple[np.ndarray, np.ndarray]: ...


@runtime_checkable
class ScoresFeatureRows(Protocol):
    def predict_proba(self, frame: Any) -> np.ndarray: ...

    def score_candidates(self, user: Any, items: Any, history: Any = None, context: Any = None,
                         by_index: bool = False) -> np.ndarray: ...


@runtime_checkable
class ExportsEmbeddings(Protocol):
    def user_embeddings(self, users: Any) -> Any: ...

    def item_embeddings(self) -> Any: ...


@runtime_checkable
class FoldsInHistory(Protocol):
    def new_user_embedding(self, features: Any = None, history_items: Any = None, **kw: Any) -> Any: ...


_ALL = {"recommends_top_k": RecommendsTopK, "scores_all_items": ScoresAllItems,
        "encodes_sequences": EncodesSequences, "scores_feature_rows": ScoresFeatureRows,
        "exports_embeddings": ExportsEmbeddings, "folds_in_history": FoldsInHistory}


def capabilities(model: Any) -> list[str]:
    """The capabilities `model` (an instance or a class) declares, by name."""
    return [name for name, proto in _ALL.items() if _has(model, proto)]


def _has(model: Any, proto: type) -> bool:
    if isinstance(model, type):  # a class: the protocol's methods are its attributes
        methods = [n for n, v in vars(proto).items() if not n.startswith("_") and callable(v)]
        return all(callable(getattr(model, m, None)) for m in methods)
    return isinstance(model, proto)
