"""Every hyper-parameter has rules, checked before any data is read (issue 22)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from recstack.cli import app

runner = CliRunner()


def test_every_numeric_hyper_parameter_of_every_model_has_a_range():
    from recstack.models.registry import entries
    from recstack.workflow.config import model_param_specs

    missing = [f"{e.name}.{name}" for e in entries() for name, spec in model_param_specs(e.name).items()
               if spec.kinds & {"int", "float"} and spec.range is None and spec.choices is None]
    assert not missing, f"numeric hyper-parameters without a range: {missing}"


def test_every_default_lies_in_its_own_range():
    from recstack.models.registry import entries
    from recstack.workflow.config import model_param_specs

    for e in entries():
        for name, spec in model_param_specs(e.name).items():
            if spec.range is not None and isinstance(spec.default, int | float) and not isinstance(spec.default, bool):
                assert spec.range.ok(spec.default), f"{e.name}.{name}={spec.default} outside {spec.range}"


@pytest.mark.parametrize(("model", "setting", "key"), [
    ("itemknn", "k=0", "k"), ("mf", "batch_size=0", "batch_size"), ("bspm", "blur_steps=0", "blur_steps"),
    ("mf", "margin=2", "margin"), ("deepfm", "history_len=0", "history_len"),
])
def test_train_refuses_a_bad_value_in_one_line_before_reading_data(tmp_path, model, setting, key):
    missing = tmp_path / "never-read.csv"  # reading it would fail with another message
    res = runner.invoke(app, ["train", "--model", model, "--data", f"csv:{missing}", "--set", setting,
                              "--device", "cpu"])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and key in errors[0] and "never-read" not in res.output, res.output
    assert "Traceback" not in res.output
