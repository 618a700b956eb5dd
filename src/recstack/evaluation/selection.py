"""Choosing a model or a setting on validation figures, and saying so.

Every recstack output that picks a best model or setting goes through :func:`select_best`,
which sees validation figures only (it has no parameter a test set could enter through).
Its record, :meth:`Selection.to_dict`, carries ``"selected_on": "validation"``, the metric,
every candidate with its validation figures and the winner; test figures are computed by the
caller afterwards, once, for the winner (or for every candidate as a table, never to choose).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Candidate", "Selection", "select_best"]


@dataclass
class Candidate:
    """One model or setting tried, with its validation figures.

    Attributes:
        name: What was tried (a model name, or a label of the setting).
        params: The hyper-parameters that differ between candidates.
        valid: Validation figures (metric name -> value).
        info: Anything else worth keeping (best epoch, seconds, ...); JSON-friendly.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    valid: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params,
                "valid": {k: _round(v) for k, v in self.valid.items()}, **self.info}


@dataclass
class Selection:
    """The outcome of :func:`select_best`."""

    metric: str
    higher_is_better: bool
    candidates: list[Candidate]
    selected: Candidate
    validation: str = "validation split"

    def to_dict(self) -> dict[str, Any]:
        """``selected_on``, the metric, the winner and every candidate with its figures."""
        return {"selected_on": "validation", "validation": self.validation, "metric": self.metric,
                "higher_is_better": self.higher_is_better, "selected": self.selected.to_dict(),
                "candidates": [c.to_dict() for c in self.candidates]}


def select_best(candidates: Sequence[Candidate], metric: str, higher_is_better: bool = True,
                validation: str = "validation split") -> Selection:
    """The candidate with the best validation ``metric`` (the first one on an exact tie).

    Args:
        candidates: Tried models or settings with their validation figures.
        metric: Key of ``Candidate.valid`` that decides, e.g. ``"ndcg@20"`` or ``"auc"``.
        higher_is_better: ``False`` for losses (LogLoss, RMSE).
        validation: What the validation data was, in words (kept in the record).

    Raises:
        ValueError: no candidates, a candidate without ``metric``, or no finite value.
    """
    cands = list(candidates)
    if not cands:
        raise ValueError("select_best: no candidates")
    missing = [c.name for c in cands if metric not in c.valid]
    if missing:
        raise ValueError(f"select_best: candidate(s) {missing} have no validation '{metric}'")
    finite = [c for c in cands if math.isfinite(float(c.valid[metric]))]
    if not finite:
        raise ValueError(f"select_best: no candidate has a finite validation '{metric}'")
    sign = 1.0 if higher_is_better else -1.0
    best = max(finite, key=lambda c: sign * float(c.valid[metric]))  # max keeps the first of ties
    return Selection(metric, higher_is_better, cands, best, validation)


def _round(v: Any) -> Any:
    return round(float(v), 6) if isinstance(v, int | float) else v
