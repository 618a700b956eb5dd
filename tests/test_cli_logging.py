"""The CLI renders the library's log records on stderr; stdout carries the JSON result line
only, still the last line (issue 23)."""

from __future__ import annotations

import json
import logging

import pytest
from typer.testing import CliRunner

from recstack import progress
from recstack.cli import app

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ours() -> list[logging.Handler]:
    return [h for h in logging.getLogger("recstack").handlers
            if isinstance(h, progress.RichLogHandler | progress.PlainLogHandler)]


@pytest.mark.parametrize("flags", [[], ["-q"], ["-v"]])
def test_json_result_is_the_only_and_last_stdout_line(tiny_csv, flags):
    res = runner.invoke(app, [*flags, "train", "--model", "mf", "--data", f"csv:{tiny_csv}", "--device", "cpu",
                              "--set", "epochs=2", "--set", "dim=8"])
    assert res.exit_code == 0, res.output
    out_lines = res.stdout.strip().splitlines()
    assert len(out_lines) == 1, res.stdout  # logs and tables never reach stdout
    result = json.loads(out_lines[-1])
    assert result["model"] == "mf" and "ndcg@10" in result["metrics"]
    err = res.stderr
    if flags == ["-q"]:
        assert "epoch" not in err and "ndcg@10" not in err  # quiet: no records below WARNING, no table
    else:
        # not a terminal: plain timestamped lines (no colour codes), the epochs among them
        assert "epoch   1/2 loss=" in err and "\x1b[" not in err
        assert any(line[:8].count(":") == 2 and "epoch   2/2" in line for line in err.splitlines())
    assert ours() == [] and progress.progress_mode() == "off"  # the command's set-up is undone


def test_a_warning_is_one_line_on_stderr_and_the_result_stays_last(tiny_csv, monkeypatch):
    import recstack.workflow.experiment as experiment_module

    def nan_result(cfg):
        return {"model": cfg.model, "metrics": {"ndcg@10": float("nan")}, "protocol": "loo",
                "train_seconds": 0.0, "eval_seconds": 0.0, "device": "cpu"}

    monkeypatch.setattr(experiment_module, "run_experiment", nan_result)
    res = runner.invoke(app, ["train", "--model", "pop", "--data", f"csv:{tiny_csv}"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["metrics"] == {"ndcg@10": None}
    warnings = [line for line in res.stderr.splitlines() if "warning: " in line]
    assert len(warnings) == 1 and "ndcg@10=nan" in warnings[0]
