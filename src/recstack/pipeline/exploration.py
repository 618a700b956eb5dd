"""Exploration for new or rarely shown items in the re-ranking stage.

A ranked slate from the models knows nothing about items with no history. An explorer reserves
at most `max_share` of the slots for such items and learns their click rate from feedback:

- `EpsilonGreedy`: with probability epsilon a reserved slot shows a uniformly random candidate,
  otherwise the candidate with the best observed click rate;
- `ThompsonSampling`: each candidate's click rate has a Beta(a + clicks, b + skips) posterior;
  a reserved slot shows the candidate with the highest posterior draw (Beta-Bernoulli bandit).

Both log what they explored (`log`, the latest `log_size` entries), and are updated with
`update(items, clicks)`. In the serving pipeline the re-ranking stage holds one explorer
(`RerankConfig.explore`, built by `make_explorer`) over the items with little history, and the
service's `POST /feedback` updates it.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Explorer:
    """Shared state: per-item shown / clicked counts and the exploration log."""

    n_items: int
    max_share: float = 0.2
    seed: int = 0
    log_size: int = 10_000  # a service runs for months: keep the latest entries only
    shown: np.ndarray = field(init=False)
    clicked: np.ndarray = field(init=False)
    log: deque = field(init=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_share <= 1.0:
            raise ValueError(f"max_share must lie in [0, 1], got {self.max_share}")
        self.shown = np.zeros(self.n_items, np.int64)
        self.clicked = np.zeros(self.n_items, np.int64)
        self.rng = np.random.default_rng(self.seed)
        self.log = deque(maxlen=self.log_size)
        self._lock = threading.Lock()  # the service's worker threads share one explorer

    def update(self, items: np.ndarray, clicks: np.ndarray) -> None:
        """Record impressions of `items` and whether each was clicked (vectorised)."""
        items = np.asarray(items, np.int64)
        clicks = np.asarray(clicks, np.int64)
        if items.shape != clicks.shape:
            raise ValueError(f"update: {items.shape} items but {clicks.shape} clicks")
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"update: item index out of range [0, {self.n_items})")
        with self._lock:
            np.add.at(self.shown, items, 1)
            np.add.at(self.clicked, items, clicks)

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
        with self._lock:  # the rng and the counts are shared by the service's threads
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


def make_explorer(policy: str, n_items: int, max_share: float, seed: int = 0, epsilon: float = 0.1) -> _Explorer:
    """The explorer a `RerankConfig.explore` names ("thompson" or "epsilon_greedy")."""
    if policy == "thompson":
        return ThompsonSampling(n_items, max_share=max_share, seed=seed)
    if policy == "epsilon_greedy":
        return EpsilonGreedy(n_items, max_share=max_share, seed=seed, epsilon=epsilon)
    raise ValueError(f"unknown exploration policy {policy!r}; use thompson or epsilon_greedy")
