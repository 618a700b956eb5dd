"""Issue 22: the result line is always strict JSON; --out, --device and k are checked before any
work, each failure one line on stderr, never a traceback; outputs get a normal file mode."""

from __future__ import annotations

import json
import math
import stat

import pytest
import torch
from typer.testing import CliRunner

import recstack.workflow.experiment as experiment_module
from recstack.cli import app

runner = CliRunner()


def strict(line: str):
    """json.loads that refuses NaN / Infinity (what every strict JSON reader does)."""
    def bad(token: str):
        raise ValueError(f"not JSON: {token}")
    return json.loads(line, parse_constant=bad)


def one_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    return errors[0]


def _fake_result(cfg):
    return {"model": cfg.model, "data": cfg.data, "protocol": "loo", "device": "cpu",
            "metrics": {"ndcg@10": float("nan"), "hr@10": 0.5}, "valid_auc": float("nan"),
            "train_seconds": 0.1, "eval_seconds": float("inf"), "history": [{"loss": float("-inf")}]}


def test_train_result_line_is_strict_json_with_null_for_nan_and_a_warning(monkeypatch):
    monkeypatch.setattr(experiment_module, "run_experiment", _fake_result)
    res = runner.invoke(app, ["train", "--model", "pop", "--data", "embedded", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    line = strict(res.stdout.strip().splitlines()[-1])
    assert line["metrics"] == {"ndcg@10": None, "hr@10": 0.5} and line["valid_auc"] is None
    assert line["eval_seconds"] is None and line["history"] == [{"loss": None}]
    assert "warning" in res.stderr and "metrics.ndcg@10=nan" in res.stderr


def test_train_checks_out_is_writable_before_any_work(monkeypatch, tmp_path):
    def must_not_run(cfg):
        raise AssertionError("training started before --out was checked")

    monkeypatch.setattr(experiment_module, "run_experiment", must_not_run)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "run"  # a directory inside a regular file: never writable, even for root
    res = runner.invoke(app, ["train", "--model", "pop", "--data", "embedded", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert str(out) in one_error_line(res.output)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_with_device_cuda_without_cuda_is_one_line(tiny_csv):
    res = runner.invoke(app, ["train", "--model", "pop", "--data", f"csv:{tiny_csv}", "--device", "cuda"])
    assert res.exit_code == 2, res.output
    assert "CUDA is not available" in one_error_line(res.output)


def test_train_with_a_k_beyond_the_catalogue_is_one_line(tiny_csv, tmp_path):
    cfg = tmp_path / "huge-k.yaml"
    cfg.write_text(f"model: pop\ndata: csv:{tiny_csv}\ndevice: cpu\nks: [10, 1000000000]\n")
    res = runner.invoke(app, ["train", "--config", str(cfg)])
    assert res.exit_code == 2, res.output
    assert "k=1,000,000,000 is larger than the catalogue (25 items)" in one_error_line(res.output)


def test_index_bench_with_a_k_beyond_the_catalogue_is_one_line():
    res = runner.invoke(app, ["index", "bench", "--n-items", "500", "--k", str(10**9), "--kinds", "flat",
                              "--n-queries", "100", "--exact-queries", "2"])
    assert res.exit_code == 2, res.output
    assert "--k 1,000,000,000 is larger than the catalogue" in one_error_line(res.output)


def test_saved_model_weights_get_a_normal_files_mode(tiny_csv, tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(app, ["train", "--model", "itemknn", "--data", f"csv:{tiny_csv}", "--set", "k=5",
                              "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    probe = tmp_path / "probe"
    probe.write_text("x")  # what open() gives under this umask, e.g. 0644
    want = stat.S_IMODE(probe.stat().st_mode)
    weights = out / "model" / "weights.safetensors"
    assert stat.S_IMODE(weights.stat().st_mode) == want, oct(weights.stat().st_mode)
    assert strict((out / "result.json").read_text())["model"] == "itemknn"
    assert not math.isnan(strict(res.stdout.strip().splitlines()[-1])["metrics"]["hr@10"])
