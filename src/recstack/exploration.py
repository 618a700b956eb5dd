"""Exploration for new or rarely shown items in the re-ranking stage.

A ranked slate from the models knows nothing about items with no history. An explorer reserves
at most `max_share` of the slots for such items and learns their click rate from feedback:

- `EpsilonGreedy`: with probability epsilon a reserved slot shows a uniformly random candidate,
  otherwise the candidate with the best observed click rate;
- `ThompsonSampling`: each candidate's click rate has a Beta(a + clicks, b + skips) posterior;
  a reserved slot shows the candidate with the highest posterior draw (Beta-Bernoulli bandit).

Both log what they explored (`log`), and are updated with `update(items, clicks)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Explorer:
    """Shared state: per-item shown / clicked counts and the exploration log."""

    n_items: int
    max_share: float = 0.2
    seed: int = 0
    shown: np.ndarray = field(init=False)
    clicked: np.ndarray = field(init=False)
    log: list[dict] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_share <= 1.0:
            raise ValueError(f"max_share must lie in [0, 1], got {self.max_share}")
        self.shown = np.zeros(self.n_items, np.int64)
        self.clicked = np.zeros(self.n_items, np.int64)
        self.rng = np.random.default_rng(self.seed)

    def update(self, items: np.ndarray, clicks: np.ndarray) -> None:
        """Record impressions of `items` and whether each was clicked (vectorised)."""
        items = np.asarray(items, np.int64)
        np.add.at(self.shown, items, 1)
        np.add.at(self.clicked, items, np.asarray(clicks, np.int64))

    def _pick(self, candidates: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def rerank(self, ranked: np.ndarray, candidates: np.ndarray, k: int, request_id: int | str | None = None) -> np.ndarray:
        """The top-k slate: `ranked` items with the last floor(k * max_share) slots given to
        explored `candidates` (those not already in the slate)."""
        ranked = np.asarray(ranked, np.int64)
        n_explore = int(np.floor(k * self.max_share))
        pool = np.setdiff1d(np.asarray(candidates, np.int64), ranked[:k], assume_unique=False)
        n_explore = min(n_explore, len(pool))
        if n_explore == 0:
            return ranked[:k]
        chosen, scores = self._pick(pool, n_explore)
        slate = np.concatenate([ranked[: k - n_explore], chosen])
        for pos, (item, s) in enumerate(zip(chosen, scores, strict=True), start=k - n_explore):
            self.log.append({"request": request_id, "slot": pos, "item": int(item), "policy": type(self).__name__,
                             "score": float(s)})
        return slate


@dataclass
class EpsilonGreedy(_Explorer):
    """Random candidate with probability `epsilon`, else the best observed click rate."""

    epsilon: float = 0.1

    def _pick(self, candidates: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        rate = self.clicked[candidates] / np.maximum(self.shown[candidates], 1)
        order = candidates[np.lexsort((self.rng.random(len(candidates)), -rate))]  # random tie-break
        out = order[:n].copy()
        for j in range(n):  # n is a few slots: per-slot coin flips are not a hot path
            if self.rng.random() < self.epsilon:
                rest = np.setdiff1d(candidates, out)
                if len(rest):
                    out[j] = self.rng.choice(rest)
        return out, self.clicked[out] / np.maximum(self.shown[out], 1)


@dataclass
class ThompsonSampling(_Explorer):
    """Beta(prior_a + clicks, prior_b + skips) posterior per item; highest draws win."""

    prior_a: float = 1.0
    prior_b: float = 1.0

    def _pick(self, candidates: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        a = self.prior_a + self.clicked[candidates]
        b = self.prior_b + self.shown[candidates] - self.clicked[candidates]
        draws = self.rng.beta(a, b)
        top = np.argsort(-draws, kind="stable")[:n]
        return candidates[top], draws[top]


@dataclass
class NoExploration(_Explorer):
    """The baseline: reserved slots go to the candidates with the best observed rate, never to
    unseen ones (an unseen item's rate is 0, so new items are shown only on ties)."""

    def _pick(self, candidates: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        rate = self.clicked[candidates] / np.maximum(self.shown[candidates], 1)
        top = np.argsort(-rate, kind="stable")[:n]
        return candidates[top], rate[top]
