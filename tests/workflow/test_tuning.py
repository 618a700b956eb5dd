"""`recstack tune`: grid search on validation data, test read once after the choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from recstack.cli import app
from recstack.workflow.experiment import ExperimentConfig
from recstack.workflow.tuning import grid_points, tune


def _write_log(path, rng_seed: int = 0, scramble_test: bool = False):
    """A rating log with a clear item-item structure; with `scramble_test` every user's last
    event (the test item of leave-one-out) gets another item the user never rated."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    n_users, n_items = 60, 40
    for u in range(n_users):
        group = u % 4
        items = rng.choice(np.arange(group * 10, group * 10 + 10), size=8, replace=False)
        for t, i in enumerate(items):
            rows.append((u, int(i), 5.0, t))
    if scramble_test:
        out = []
        for u in range(n_users):
            mine = [r for r in rows if r[0] == u]
            seen = {r[1] for r in mine}
            other = int(rng.choice([i for i in range(n_items) if i not in seen]))
            last = max(mine, key=lambda r: r[3])
            out += [r if r is not last else (u, other, 5.0, r[3]) for r in mine]
        rows = out
    path.write_text("user,item,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows))
    return f"csv:{path}?user=user&item=item&rating=rating&timestamp=timestamp"


def test_grid_points_product_and_union():
    assert grid_points({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert grid_points([{"a": [1]}, {"b": [2, 3]}]) == [{"a": 1}, {"b": 2}, {"b": 3}]
    assert grid_points({"a": 5}) == [{"a": 5}]
    with pytest.raises(ValueError, match="no values"):
        grid_points({"a": []})


def test_choice_reads_validation_only(tmp_path):
    spec = _write_log(tmp_path / "a.csv")
    scrambled = _write_log(tmp_path / "b.csv", scramble_test=True)
    grid = {"l2": [0.1, 10.0, 1000.0]}
    a = tune(ExperimentConfig(model="ease", data=spec, device="cpu"), grid)
    b = tune(ExperimentConfig(model="ease", data=scrambled, device="cpu"), grid)
    assert a["selected_on"] == "validation" and a["validation"] == "the split's validation part"
    assert [c["valid"] for c in a["candidates"]] == [c["valid"] for c in b["candidates"]]
    assert (a["selected"]["name"], a["selected"]["params"]) == (b["selected"]["name"], b["selected"]["params"])
    assert a["test"] != b["test"]  # the test set did change; the choice did not
    best = max(a["candidates"], key=lambda c: c["valid"]["ndcg@20"])
    assert a["selected"]["params"] == best["params"] and a["protocol"]["name"] == "loo"


def test_given_split_holds_out_part_of_train_and_jobs_do_not_change_the_result(tmp_path):
    # a given train/test split (no validation part): a holdout of train chooses
    rng = np.random.default_rng(1)
    train, test = [], []
    for u in range(40):
        items = rng.choice(np.arange((u % 2) * 15, (u % 2) * 15 + 15), size=9, replace=False)
        train.append(f"{u} " + " ".join(map(str, items[:7])))
        test.append(f"{u} " + " ".join(map(str, items[7:])))
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "test.txt").write_text("\n".join(test) + "\n")
    cfg = ExperimentConfig(model="itemknn", data=f"lightgcn:{tmp_path}", device="cpu")
    one = tune(cfg, {"k": [2, 20]}, holdout_frac=0.3, run_test=False)
    assert one["validation"].startswith("30% of each user's training interactions")
    assert "test" not in one
    two = tune(cfg, {"k": [2, 20]}, holdout_frac=0.3, run_test=False, jobs=2)
    assert [c["valid"] for c in one["candidates"]] == [c["valid"] for c in two["candidates"]]


def test_cli_tune_checks_the_grid_before_reading_data(tmp_path):
    res = CliRunner().invoke(app, ["tune", "--model", "ease", "--data", "csv:/nonexistent.csv",
                                   "--grid", "l2=[1,abc]"])
    assert res.exit_code == 2 and "l2" in res.output
    spec = _write_log(tmp_path / "a.csv")
    res = CliRunner().invoke(app, ["tune", "--model", "ease", "--data", spec, "--device", "cpu",
                                   "--grid", "l2=[1,100]", "--log", str(tmp_path / "log.jsonl")])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["selected_on"] == "validation" and len(out["candidates"]) == 2 and "test" in out
    stages = [json.loads(x)["stage"] for x in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert stages == ["validation", "validation", "selected", "test"]
