"""A/B assignment and analysis: hand-computed cases and scipy's own tests as the reference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from recstack.abtest import (
    analyze,
    assign_variant,
    compare,
    ips_estimate,
    read_log,
    sample_ratio_mismatch,
)
from recstack.abtest.analysis import variant_stats
from recstack.data.errors import DataError


def test_assignment_is_deterministic_and_matches_the_ratio():
    users = [f"u{i}" for i in range(20000)]
    a = [assign_variant(u, ["A", "B"], [0.8, 0.2], salt="exp1") for u in users]
    assert a == [assign_variant(u, ["A", "B"], [0.8, 0.2], salt="exp1") for u in users]
    share_b = a.count("B") / len(a)
    assert abs(share_b - 0.2) < 4 * math.sqrt(0.2 * 0.8 / len(a))
    # another salt reshuffles users: assignments are nearly independent
    b = [assign_variant(u, ["A", "B"], salt="exp2") for u in users]
    both_b = sum(x == "B" and y == "B" for x, y in zip(a, b, strict=True)) / len(a)
    assert abs(both_b - 0.2 * 0.5) < 0.015
    with pytest.raises(ValueError, match="positive weight"):
        assign_variant("u", ["A", "B"], [1.0])


def test_wilson_interval_hand_computed():
    # 10 successes out of 50 at 95%: Wilson interval (0.1124, 0.3304)
    r = np.r_[np.ones(10), np.zeros(40)]
    s = variant_stats("A", r)
    assert s.n == 50 and s.mean == pytest.approx(0.2)
    assert s.ci_low == pytest.approx(0.1124, abs=1e-4) and s.ci_high == pytest.approx(0.3304, abs=1e-4)


def test_compare_equals_scipy_welch_t_test():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1.0, 1.0, 400), rng.normal(1.2, 2.0, 300)
    c = compare(a, b)
    ref = stats.ttest_ind(b, a, equal_var=False)
    assert c["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert c["diff"] == pytest.approx(b.mean() - a.mean())
    assert c["ci_low"] < c["diff"] < c["ci_high"]


def test_srm_hand_computed():
    # counts 520/480 against 50/50: chi2 = (20^2 + 20^2) / 500 = 1.6, p = 0.2059
    assert sample_ratio_mismatch([520, 480], [1, 1]) == pytest.approx(0.20590, abs=1e-4)
    assert sample_ratio_mismatch([600, 400], [1, 1]) < 1e-9


def test_analyze_finds_planted_difference_and_not_an_aa_difference(tmp_path):
    rng = np.random.default_rng(1)
    log = tmp_path / "ab.jsonl"
    with log.open("w") as f:
        for i in range(40000):
            v = assign_variant(i, ["A", "B"], salt="s")
            p = 0.10 if v == "A" else 0.115  # planted +15% lift
            f.write(json.dumps({"variant": v, "user": i, "reward": int(rng.random() < p)}) + "\n")
    res = analyze(read_log(log))
    assert res["comparisons"]["B"]["significant"] and not res["srm_warning"]
    assert res["comparisons"]["B"]["lift"] == pytest.approx(0.15, abs=0.08)
    aa = {"A": (rng.random(20000) < 0.1).astype(float), "A2": (rng.random(20000) < 0.1).astype(float)}
    assert analyze(aa)["comparisons"]["A2"]["p_value"] > 0.001  # seeded: not significant


def test_read_log_names_line_and_field(tmp_path):
    log = tmp_path / "bad.jsonl"
    log.write_text('{"variant": "A", "reward": 1}\n{"variant": "B"}\n')
    with pytest.raises(DataError, match=r"line 2, field 'reward'"):
        read_log(log)


def test_ips_unbiased_on_a_known_bandit():
    # logging policy: uniform over 4 actions; rewards known per action; target: always action 2
    rng = np.random.default_rng(2)
    n = 200000
    means = np.array([0.1, 0.2, 0.5, 0.3])
    actions = rng.integers(0, 4, n)
    rewards = (rng.random(n) < means[actions]).astype(float)
    target = (actions == 2).astype(float)
    est = ips_estimate(rewards, np.full(n, 0.25), target, clip=10)
    assert est["ips"] == pytest.approx(0.5, abs=4 * est["ips_se"])
    assert est["snips"] == pytest.approx(0.5, abs=0.01)
    clipped = ips_estimate(rewards, np.full(n, 0.25), target, clip=2)
    assert clipped["ips"] == pytest.approx(0.25, abs=0.01) and clipped["clipped_share"] > 0.2
    with pytest.raises(ValueError, match="propensities"):
        ips_estimate([1.0], [0.0], [1.0])
