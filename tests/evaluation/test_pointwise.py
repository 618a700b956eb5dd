"""Pointwise metrics: AUC, group AUC, log loss, RMSE, MAE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recstack.evaluation import auc, group_auc, logloss, mae, rmse


def brute_auc(labels, scores) -> float:
    pos = [s for y, s in zip(labels, scores, strict=True) if y == 1]
    neg = [s for y, s in zip(labels, scores, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_auc_by_hand():
    # pairs (pos, neg): (.8,.4)=1 (.8,.1)=1 (.4,.4)=1/2 (.4,.1)=1 -> 3.5 / 4
    assert auc([1, 0, 1, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(0.875)
    assert auc([1, 0], [0.0, 1.0]) == 0.0
    assert auc([1, 0, 1], [2.0, 2.0, 2.0]) == pytest.approx(0.5)
    assert math.isnan(auc([1, 1], [0.1, 0.2]))


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 10, 300).astype(float)  # many ties
    assert auc(y, s) == pytest.approx(brute_auc(y.tolist(), s.tolist()), abs=1e-12)
    # torch input, bool labels
    assert auc(torch.from_numpy(y.astype(bool)), torch.from_numpy(s)) == pytest.approx(
        brute_auc(y.tolist(), s.tolist()), abs=1e-12
    )


def test_group_auc_by_hand():
    # group "a": labels [1, 0], scores [.9, .1] -> AUC 1, 2 impressions
    # group "b": labels [1, 0, 0], scores [.2, .5, .1] -> (0 + 1)/2 = .5, 3 impressions
    # group "c": positives only -> skipped
    # GAUC = (2 * 1 + 3 * .5) / (2 + 3) = .7
    labels = [1, 0, 1, 0, 0, 1, 1]
    scores = [0.9, 0.1, 0.2, 0.5, 0.1, 0.3, 0.4]
    groups = ["a", "a", "b", "b", "b", "c", "c"]
    assert group_auc(labels, scores, groups) == pytest.approx(0.7)
    perm = np.random.default_rng(0).permutation(7)
    assert group_auc(
        np.array(labels)[perm], np.array(scores)[perm], np.array(groups)[perm]
    ) == pytest.approx(0.7)
    assert math.isnan(group_auc([1, 0], [0.1, 0.2], [0, 1]))


def test_group_auc_matches_per_group_brute_force():
    rng = np.random.default_rng(1)
    n = 600
    y = rng.integers(0, 2, n)
    s = rng.integers(0, 6, n).astype(float)
    g = rng.integers(0, 40, n) * 3 + 5  # non-contiguous ids
    num = den = 0.0
    for gid in np.unique(g):
        m = g == gid
        if 0 < y[m].sum() < m.sum():
            num += m.sum() * brute_auc(y[m].tolist(), s[m].tolist())
            den += m.sum()
    assert group_auc(y, s, torch.from_numpy(g)) == pytest.approx(num / den, abs=1e-12)


def test_logloss_rmse_mae_by_hand():
    assert logloss([1, 0], [0.8, 0.4]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    # clipped: perfect confident predictions cost -log(1 - 1e-7) each
    assert logloss([1, 0], [1.0, 0.0]) == pytest.approx(-math.log(1 - 1e-7))
    assert logloss(torch.tensor([1.0]), torch.tensor([0.5])) == pytest.approx(math.log(2))
    # errors 1, 0, 2 -> rmse sqrt(5/3), mae 1
    assert rmse([1, 2, 3], [2, 2, 5]) == pytest.approx(math.sqrt(5 / 3))
    assert mae(np.array([1, 2, 3]), torch.tensor([2, 2, 5])) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="length"):
        rmse([1, 2], [1])
    with pytest.raises(ValueError, match="binary"):
        auc([0, 2], [0.1, 0.2])
