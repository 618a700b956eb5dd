"""Explorers: slot bounds, logging, and learning on a toy Bernoulli bandit."""

from __future__ import annotations

import numpy as np
import pytest

from recstack.pipeline.exploration import EpsilonGreedy, NoExploration, ThompsonSampling


def test_reserved_share_is_bounded_and_logged():
    ex = ThompsonSampling(n_items=50, max_share=0.2, seed=0)
    ranked = np.arange(100, 120)
    slate = ex.rerank(ranked, candidates=np.arange(50), k=10, request_id="r1")
    assert len(slate) == 10 and list(slate[:8]) == list(range(100, 108))
    assert set(slate[8:]) <= set(range(50))
    assert [e["slot"] for e in ex.log] == [8, 9] and all(e["request"] == "r1" for e in ex.log)
    # candidates already in the slate are not explored twice; no candidates -> plain ranking
    assert list(ex.rerank(ranked, candidates=np.array([], np.int64), k=10)) == list(ranked[:10])
    with pytest.raises(ValueError, match="max_share"):
        ThompsonSampling(n_items=5, max_share=1.5)


def _run(policy, p, rounds, rng):
    clicks = 0
    for _ in range(rounds):
        slate = policy.rerank(np.empty(0, np.int64), np.arange(len(p)), k=1 if policy.max_share == 1 else 10)
        c = rng.random(len(slate)) < p[slate]
        policy.update(slate, c)
        clicks += c.sum()
    return clicks


def test_thompson_finds_the_best_arm_and_beats_greedy():
    p = np.full(30, 0.02)
    p[17] = 0.3  # one good new item
    wins = {"ts": 0, "greedy": 0}
    for seed in range(5):
        ts = ThompsonSampling(n_items=30, max_share=1.0, seed=seed, prior_a=1, prior_b=9)
        gr = NoExploration(n_items=30, max_share=1.0, seed=seed)
        c_ts = _run(ts, p, 1500, np.random.default_rng(seed))
        c_gr = _run(gr, p, 1500, np.random.default_rng(seed))
        wins["ts"] += c_ts > c_gr
        assert ts.shown.argmax() == 17
    assert wins["ts"] >= 4


def test_epsilon_greedy_explores_about_epsilon():
    eg = EpsilonGreedy(n_items=100, max_share=1.0, epsilon=0.3, seed=0)
    eg.clicked[5], eg.shown[5] = 10, 10  # a known best item
    picks = np.array([eg.rerank(np.empty(0, np.int64), np.arange(100), k=1)[0] for _ in range(2000)])
    assert abs((picks != 5).mean() - 0.3 * 99 / 100) < 0.04
