"""Paired significance tests, bootstrap CIs and result comparison."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from recstack.evaluation import RankingResult, bootstrap_ci, compare, paired_test

METHODS = ["t", "wilcoxon", "permutation"]


@pytest.mark.parametrize("method", METHODS)
def test_identical_inputs(method):
    a = np.random.default_rng(0).random(50)
    out = paired_test(a, a.copy(), method=method)
    assert out["p_value"] == 1.0
    assert out["statistic"] == 0.0
    assert out["mean_diff"] == 0.0
    assert out["method"] == method


@pytest.mark.parametrize("method", METHODS)
def test_planted_difference(method):
    rng = np.random.default_rng(1)
    b = rng.random(200)
    a = b + 0.05 + rng.normal(0, 0.02, 200)
    out = paired_test(a, b, method=method, n_permutations=2000)
    assert out["p_value"] < 0.01
    assert out["mean_diff"] == pytest.approx(float((a - b).mean()))


def test_t_matches_scipy_and_permutation_exact():
    rng = np.random.default_rng(2)
    a, b = rng.random(30), rng.random(30)
    assert paired_test(a, b)["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    # d = [1, 2, 3]: |sum of +-d| over 8 sign patterns = 6,4,2,0,0,2,4,6 -> 2/8 as extreme
    out = paired_test([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], method="permutation")
    assert out["p_value"] == pytest.approx(0.25)
    # constant non-zero difference: infinite t
    assert paired_test([1.0, 2.0], [0.0, 1.0])["p_value"] == 0.0


def test_permutation_deterministic():
    rng = np.random.default_rng(3)
    a, b = rng.random(100), rng.random(100)
    p1 = paired_test(a, b, method="permutation", seed=4)["p_value"]
    p2 = paired_test(a, b, method="permutation", seed=4)["p_value"]
    assert p1 == p2 and 0 < p1 <= 1


def test_bootstrap_ci():
    v = np.random.default_rng(5).random(500)
    low, high = bootstrap_ci(v, n_boot=1000, seed=1)
    assert low < v.mean() < high
    assert (low, high) == bootstrap_ci(v, n_boot=1000, seed=1)
    assert (low, high) != bootstrap_ci(v, n_boot=1000, seed=2)
    narrow = bootstrap_ci(v, n_boot=1000, alpha=0.5, seed=1)
    assert low < narrow[0] < narrow[1] < high
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_compare_aligns_users():
    rng = np.random.default_rng(6)
    users_a = np.arange(100)
    vals_a = rng.random(100)
    # b: shuffled order, user 0 missing, planted +0.2 improvement
    perm = rng.permutation(np.arange(1, 100))
    vals_b = vals_a[perm] + 0.2 + rng.normal(0, 0.01, 99)
    ra = RankingResult(users=users_a, per_user={"ndcg@10": vals_a})
    rb = RankingResult(users=perm, per_user={"ndcg@10": vals_b})
    with pytest.warns(UserWarning, match="common"):
        out = compare(ra, rb, "ndcg@10")
    assert out["n_users"] == 99
    order = np.argsort(perm)
    diff = vals_a[1:] - vals_b[order]
    assert out["diff"] == pytest.approx(diff.mean())
    assert out["mean_a"] == pytest.approx(vals_a[1:].mean())
    assert out["mean_b"] == pytest.approx(vals_b.mean())
    assert out["ci"][0] < out["diff"] < out["ci"][1] < 0
    assert out["p_value"] < 0.01
    with pytest.raises(KeyError):
        compare(ra, rb, "recall@10")
