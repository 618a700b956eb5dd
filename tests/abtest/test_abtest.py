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


# ---- `recstack abtest analyze` on service-format event logs ----------------------------------------
def write_events(path, n_users=12000, p=None, weights=(0.5, 0.5), drop_b=0.0, seed=3, requests_per_user=2):
    """An event log as the service writes it: users hashed into A / B, `requests_per_user`
    impressions each, a click with the variant's planted probability; `drop_b` loses that share
    of B's users from the log (a broken logger: a sample-ratio mismatch)."""
    p = p or {"A": 0.10, "B": 0.10}
    rng = np.random.default_rng(seed)
    share = {"A": weights[0] / sum(weights), "B": weights[1] / sum(weights)}
    with path.open("w") as f:
        for u in range(n_users):
            v = assign_variant(u, ["A", "B"], list(weights), salt="exp")
            if v == "B" and rng.random() < drop_b:
                continue
            for j in range(requests_per_user):
                rid = f"{u}-{j}"
                f.write(json.dumps({"type": "impression", "request_id": rid, "experiment": "exp", "variant": v,
                                    "propensity": share[v], "unit": "user", "unit_id": str(u),
                                    "items": [{"item": 1, "pos": 0}]}) + "\n")
                if rng.random() < p[v]:
                    f.write(json.dumps({"type": "feedback", "request_id": rid, "variant": v, "item": 1,
                                        "click": True, "reward": 1.0}) + "\n")


def run_analyze(*args):
    from typer.testing import CliRunner

    from recstack.cli import app

    res = CliRunner().invoke(app, ["abtest", "analyze", *map(str, args)])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1]), res.output


def test_cli_analyze_finds_planted_difference_and_no_aa_difference(tmp_path):
    ab = tmp_path / "ab.jsonl"
    write_events(ab, p={"A": 0.10, "B": 0.13}, weights=(0.7, 0.3))
    out, text = run_analyze(ab, "--ips-policy", "B")
    b = out["comparisons"]["B"]
    assert out["by"] == "unit" and b["significant"] and b["p_value"] < 1e-3 and not out["srm_warning"]
    assert b["diff"] == pytest.approx(0.03, abs=0.012) and out["expected_shares"] == {"A": 0.7, "B": 0.3}
    assert out["ips"]["snips"] == pytest.approx(0.13, abs=0.015) and "SAMPLE RATIO" not in text
    by_req, _ = run_analyze(ab, "--by", "request", "--metric", "reward")
    assert sum(v["n"] for v in by_req["variants"]) == 2 * sum(v["n"] for v in out["variants"])
    aa = tmp_path / "aa.jsonl"
    write_events(aa, p={"A": 0.10, "B": 0.10}, seed=4)
    out, _ = run_analyze(aa)
    assert not out["comparisons"]["B"]["significant"] and out["srm_p_value"] > 0.01


def test_cli_analyze_warns_on_sample_ratio_mismatch(tmp_path):
    log = tmp_path / "skew.jsonl"
    write_events(log, drop_b=0.08)  # 8% of B's users never logged
    out, text = run_analyze(log)
    assert out["srm_warning"] and out["srm_p_value"] < 1e-3 and "SAMPLE RATIO MISMATCH" in text
    assert out["warnings"][0].startswith("SAMPLE RATIO MISMATCH")
    # a configured variant with no traffic at all is a mismatch too
    out, _ = run_analyze(log, "--expected", "A=0.45,B=0.45,C=0.1")
    assert out["srm_warning"]


def test_cli_analyze_plain_rows_and_errors(tmp_path):
    rng = np.random.default_rng(5)
    log = tmp_path / "rows.jsonl"
    log.write_text("".join(json.dumps({"variant": v, "click": int(rng.random() < (0.1 if v == "A" else 0.2))}) + "\n"
                           for v in rng.choice(["A", "B"], 4000)))
    out, _ = run_analyze(log, "--expected", "A=1,B=1")
    assert out["by"] == "row" and out["comparisons"]["B"]["significant"]
    from typer.testing import CliRunner

    from recstack.cli import app

    res = CliRunner().invoke(app, ["abtest", "analyze", str(log), "--expected", "A=1"])
    assert res.exit_code == 2 and "not in the expected split" in res.output
    res = CliRunner().invoke(app, ["abtest", "analyze", str(log), "--ips-policy", "B"])
    assert res.exit_code == 2 and "event log" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "impression", "request_id": "r"}\n')
    res = CliRunner().invoke(app, ["abtest", "analyze", str(bad)])
    assert res.exit_code == 2 and "variant" in res.output
