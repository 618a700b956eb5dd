"""Strict JSON output and the --out check (recstack.workflow.output)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recstack.workflow.output import check_writable_dir, strict_json


def test_strict_json_writes_null_for_every_non_finite_number_and_says_where():
    warnings: list[str] = []
    obj = {"a": float("nan"), "b": [1.0, np.float32("inf")], "c": {"d": np.float64(-np.inf), "e": 2},
           "f": True, "g": "nan"}
    text = strict_json(obj, warn=warnings.append)
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None, "e": 2}, "f": True, "g": "nan"}
    assert len(warnings) == 1 and "a=nan" in warnings[0] and "b[1]=inf" in warnings[0] and "c.d=-inf" in warnings[0]


def test_strict_json_is_silent_when_every_number_is_finite():
    warnings: list[str] = []
    assert strict_json({"x": 0.5, "n": np.float32(1.5)}, warn=warnings.append) == '{"x": 0.5, "n": 1.5}'
    assert warnings == []


def test_check_writable_dir_creates_the_directory_or_names_it(tmp_path):
    assert check_writable_dir(tmp_path / "new" / "dir").is_dir()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"--out .*file/sub: cannot write there"):
        check_writable_dir(tmp_path / "file" / "sub")


def test_model_save_from_the_python_api_writes_weights_with_a_normal_mode(tmp_path):
    import numpy as np

    from recstack.data import from_raw
    from recstack.files import default_file_mode
    from recstack.models.registry import create_model

    data = from_raw(np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 2, 0]))
    model = create_model("ease", device="cpu").fit(data)
    model.save(tmp_path / "ease")
    mode = (tmp_path / "ease" / "weights.safetensors").stat().st_mode & 0o777
    assert mode == default_file_mode() and mode & 0o044  # readable by group and others (umask 022)
