"""The CLI contract: last stdout line is JSON; bad input exits non-zero with a located message."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from recstack.cli import app, parse_sets

runner = CliRunner()


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture()
def small_csv(tmp_path):
    # 60 users with a planted structure: even users like items 0-9, odd users items 10-19
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        base = 0 if u % 2 == 0 else 10
        items = rng.choice(10, size=6, replace=False) + base
        for t, i in enumerate(items):
            rows.append((f"u{u}", f"i{i}", 4.0, 1000 + t))
    df = pl.DataFrame(rows, schema=["user", "item", "rating", "timestamp"], orient="row")
    path = tmp_path / "log.csv"
    df.write_csv(path)
    return path


def test_parse_sets_types():
    assert parse_sets(["l2=250", "loss=bpr", "flag=true", "xs=[1, 2]"]) == {
        "l2": 250, "loss": "bpr", "flag": True, "xs": [1, 2]}


def test_data_info_embedded():
    res = runner.invoke(app, ["data", "info", "embedded"])
    assert res.exit_code == 0, res.output
    info = last_json(res.stdout)
    assert (info["interactions"], info["users"], info["items"]) == (100004, 671, 9066)


def test_train_prints_json_last_line(small_csv, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--model", "itemknn", "--data", f"csv:{small_csv}",
                              "--set", "k=5", "--out", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    r = last_json(res.stdout)
    assert set(r) >= {"model", "data", "protocol", "metrics", "train_seconds", "eval_seconds", "device"}
    assert r["model"] == "itemknn" and r["device"] == "cpu"
    assert all(k == k.lower() and "@" in k for k in r["metrics"])
    # the planted two-group structure is easy: the held-out item is within the group's 10 items
    assert r["metrics"]["hr@10"] > 0.5
    assert (out / "model" / "weights.safetensors").exists() and (out / "result.json").exists()


def test_data_prepare_writes_parquet(small_csv, tmp_path):
    out = tmp_path / "prep"
    res = runner.invoke(app, ["data", "prepare", f"csv:{small_csv}", "--split", "loo", "--out", str(out)])
    assert res.exit_code == 0, res.output
    s = last_json(res.stdout)
    assert s["test"] == 60 and s["valid"] == 60 and s["train"] == 60 * 4
    assert (out / "train.parquet").exists() and (out / "split.json").exists()


def test_bad_spec_and_bad_model_fail_clearly(small_csv):
    res = runner.invoke(app, ["data", "info", "nosuchformat:/x"])
    assert res.exit_code == 2 and "nosuchformat" in res.output
    res = runner.invoke(app, ["train", "--model", "nosuchmodel", "--data", f"csv:{small_csv}"])
    assert res.exit_code == 2 and "unknown model" in res.output


def test_bad_row_names_file_line_field(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("user,item,rating,timestamp\n1,2,4.0,100\n1,3,oops,101\n")
    res = runner.invoke(app, ["data", "info", f"csv:{p}"])
    assert res.exit_code == 2
    msg = " ".join(res.output.split())
    assert "bad.csv" in msg and "line 3" in msg and "rating" in msg
