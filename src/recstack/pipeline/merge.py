"""Merge the sources' lists: deduplicate, remember who proposed what, order by weighted
reciprocal-rank fusion (scores of different sources are not comparable, ranks are)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

RRF_K = 60.0  # the usual reciprocal-rank-fusion constant: damps the head of each list


@dataclass
class Candidates:
    """The candidate set as aligned arrays (one entry per distinct item).

    Attributes:
        items: item indices.
        source_ranks: [n_sources, len(items)] 0-based rank in each source's list, -1 = absent.
        scores: stage name -> scores aligned with `items` ("retrieval" = the fused RRF score).
    """

    items: np.ndarray
    source_ranks: np.ndarray
    scores: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items)

    def take(self, idx: np.ndarray) -> Candidates:
        """The candidates at positions `idx` (in that order)."""
        return Candidates(self.items[idx], self.source_ranks[:, idx], {k: v[idx] for k, v in self.scores.items()})


def merge(lists: Sequence[tuple[np.ndarray, np.ndarray]], weights: Sequence[float],
          max_candidates: int) -> Candidates:
    """Deduplicate the sources' (items, scores) lists into `Candidates`, best fused rank first
    (ties -> lower item index), at most `max_candidates`."""
    n_src = len(lists)
    sizes = [len(items) for items, _ in lists]
    if sum(sizes) == 0:
        return Candidates(np.zeros(0, np.int64), np.zeros((n_src, 0), np.int32), {"retrieval": np.zeros(0, np.float32)})
    all_items = np.concatenate([items for items, _ in lists]).astype(np.int64)
    src = np.repeat(np.arange(n_src), sizes)
    rank = np.concatenate([np.arange(s) for s in sizes])
    uniq, inv = np.unique(all_items, return_inverse=True)
    w = np.asarray(weights, np.float64)[src]
    fused = np.bincount(inv, weights=w / (RRF_K + rank + 1), minlength=len(uniq))
    ranks = np.full((n_src, len(uniq)), -1, np.int32)
    ranks[src, inv] = rank  # items are unique within one source's list
    order = np.lexsort((uniq, -fused))[:max_candidates]
    return Candidates(uniq[order], ranks[:, order], {"retrieval": fused[order].astype(np.float32)})
