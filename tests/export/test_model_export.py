"""Model export (recstack.export): every supported model's parts to ONNX and torch.export, run
and compared with PyTorch (<= 1e-5); unsupported models refuse with one line.

Exporting is slow on a small CPU (torch.export traces, the ONNX exporter decomposes and
converts: seconds per part), so the default run covers one model per family (the two-tower in
both formats, a sequential encoder and a ranker) plus every model's refusal or part list; the
whole matrix (every supported model x both formats) runs with ``RECSTACK_SLOW_TESTS=1``.
"""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest
import torch
from conftest import make_rating_log
from typer.testing import CliRunner

from recstack.export import (
    UNSUPPORTED,
    UNSUPPORTED_FORMAT,
    ExportError,
    export_model,
    run_torch_export,
    supported_parts,
)
from recstack.models.registry import create_model, entry, model_names

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NEURAL = {"epochs": 1, "batch_size": 64, "progress": False, "seed": 3}
SEQ = {**NEURAL, "max_len": 8, "dim": 16}
CTR = {"epochs": 1, "batch_size": 64, "dim": 4, "progress": False, "seed": 3}
FAST: dict[str, dict] = {
    "mf": {**NEURAL, "dim": 8, "n_negatives": 8}, "lightgcn": {**NEURAL, "dim": 8, "n_negatives": 8},
    "two_tower": {**NEURAL, "dim": 8, "tower": (16,), "id_dim": 8, "n_negatives": 8, "use_history": True,
                  "max_history": 6},
    "youtube_dnn": {**NEURAL, "dim": 8, "tower": (16,), "history_dim": 8, "n_negatives": 8},
    "gru4rec": SEQ, "caser": {**SEQ, "window": 3}, "sasrec": SEQ, "bert4rec": SEQ, "bsarec": SEQ,
}
SUPPORTED = [n for n in model_names() if n not in UNSUPPORTED]
#: the default run here: a ranker to ONNX; the two-tower to ONNX and a sequential encoder to
#: torch.export are the tests below (the rest: RECSTACK_SLOW_TESTS=1)
QUICK = {("deepfm", "onnx")}


@pytest.fixture(scope="module")
def data():
    return make_rating_log()


@pytest.fixture(scope="module")
def ctr_task():
    from recstack.models.ctr import interactions_ctr_task

    return interactions_ctr_task(make_rating_log(), history_len=5)


_FITTED: dict[str, object] = {}


def _fit(name: str, data, ctr_task):
    if name not in _FITTED:
        task = entry(name).task
        params = FAST.get(name, CTR if task == "ctr" else {})
        _FITTED[name] = create_model(name, device="cpu", **params).fit(ctr_task if task == "ctr" else data)
    return _FITTED[name]


def _no_pickle(path) -> None:
    """Nothing pickled: no pickle files, and the .pt2 archives hold JSON and raw weight bytes
    (their sample-input slot, which torch.save would fill, is empty)."""
    for f in path.rglob("*"):
        assert f.suffix not in (".pkl", ".pickle", ".pt", ".pth"), f
        if f.suffix == ".pt2":
            with zipfile.ZipFile(f) as z:
                for info in z.infolist():
                    if info.filename.endswith((".pt", ".pkl")):
                        assert info.file_size == 0, info.filename


def _check(model, tmp_path, fmt: str) -> dict:
    out = tmp_path / fmt
    manifest = export_model(model, out, format=fmt)
    assert manifest["verified"] and manifest["model"] == model.name
    assert set(manifest["parts"]) == set(supported_parts(model.name, fmt))
    assert json.loads((out / "manifest.json").read_text()) == manifest
    for part in manifest["parts"].values():
        assert (out / part["file"]).is_file()
        assert max(part["verified"]["max_abs_diff"].values()) <= 1e-5, part
        assert all(s["shape"][0] == "batch" for s in part["inputs"] + part["outputs"])
    _no_pickle(out)
    return manifest


@pytest.mark.parametrize("fmt", ["onnx", "torch_export"])
@pytest.mark.parametrize("name", SUPPORTED)
def test_export_matches_pytorch(name, fmt, data, ctr_task, tmp_path):
    if (name, fmt) not in QUICK and not os.environ.get("RECSTACK_SLOW_TESTS"):
        pytest.skip("the full export matrix is slow: set RECSTACK_SLOW_TESTS=1")
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    model = _fit(name, data, ctr_task)
    if (name, fmt) in UNSUPPORTED_FORMAT:
        with pytest.raises(ExportError, match=f"^{name}: {fmt} export is not supported") as err:
            export_model(model, tmp_path / fmt, format=fmt)
        assert "\n" not in str(err.value)
        return
    _check(model, tmp_path, fmt)


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_models_refuse_in_one_line(name, tmp_path):
    model = create_model(name, device="cpu")
    with pytest.raises(ExportError) as err:
        export_model(model, tmp_path, format="torch_export")
    msg = str(err.value)
    assert msg.startswith(f"{name}: export is not supported (") and "\n" not in msg
    assert supported_parts(name) == []
    assert not (tmp_path / "manifest.json").exists()


def test_every_registered_model_is_exportable_or_says_why():
    for name in model_names():
        assert bool(supported_parts(name)) != (name in UNSUPPORTED), name


def test_onnx_towers_score_like_pytorch_at_any_batch_size(data, ctr_task, tmp_path):
    """The two-tower's ONNX towers (history input included) give PyTorch's scores for batches
    of other sizes than the traced one, and the manifest tells how to feed them."""
    ort = pytest.importorskip("onnxruntime")
    model = _fit("two_tower", data, ctr_task)
    out = tmp_path / "onnx"
    manifest = _check(model, tmp_path, "onnx")
    assert [i["name"] for i in manifest["parts"]["user_tower"]["inputs"]] == ["user", "history"]
    assert manifest["opset"] >= 18 and manifest["parts"]["user_tower"]["exporter"] == "dynamo"
    users = torch.arange(model.n_users_)
    hist = model.module_.history.bag(users).numpy()
    user = ort.InferenceSession(str(out / "user_tower.onnx"), providers=["CPUExecutionProvider"])
    item = ort.InferenceSession(str(out / "item_tower.onnx"), providers=["CPUExecutionProvider"])
    for rows in (slice(0, 1), slice(0, model.n_users_)):
        u = user.run(None, {"user": users[rows].numpy(), "history": hist[rows]})[0]
        v = item.run(None, {"item": np.arange(model.n_items_)})[0]
        expected = model.score_all(users[rows]).numpy()
        assert np.abs(u @ v.T - expected).max() <= 1e-5
    table = np.load(out / "item_table.npy", allow_pickle=False)
    assert table.shape == (model.n_items_, model.dim)
    ids = json.loads((out / "vocab.item.json").read_text())
    assert ids == model.item_vocab_.raw.tolist()


def test_torch_export_runs_without_recstack_objects(data, ctr_task, tmp_path):
    """A sequential encoder as .pt2: torch.export.load + call, batch 1 and the full batch."""
    model = _fit("sasrec", data, ctr_task)
    out = tmp_path / "torch_export"
    _check(model, tmp_path, "torch_export")
    table = np.load(out / "item_table.npy")
    seq = model.history_[:5].numpy()
    for rows in (seq[:1], seq):
        h = run_torch_export(out / "encoder.pt2", {"seq": rows}, ["hidden"])["hidden"]
        expected = model.score_all(torch.arange(len(rows))).numpy()
        assert np.abs(h @ table.T - expected).max() <= 1e-5


def test_export_errors_are_one_line(data, ctr_task, tmp_path, monkeypatch):
    model = _fit("two_tower", data, ctr_task)
    with pytest.raises(ExportError, match="unknown part"):
        export_model(model, tmp_path, format="torch_export", parts=["encoder"])
    with pytest.raises(ExportError, match="unknown export format"):
        export_model(model, tmp_path, format="tflite")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "onnxruntime" else real(n, *a))
    with pytest.raises(ImportError, match=r'pip install "recstack\[export\]"') as err:
        export_model(model, tmp_path, format="onnx")
    assert "\n" not in str(err.value)


def test_cli_export_model(data, ctr_task, tmp_path, monkeypatch):
    from recstack.cli import app

    model = _fit("sasrec", data, ctr_task)
    model.save(tmp_path / "run" / "model")  # the layout `recstack train --out run` writes
    runner = CliRunner()
    res = runner.invoke(app, ["export-model", str(tmp_path / "run"), "--format", "torch_export",
                              "--out", str(tmp_path / "x")])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert line["parts"] == {"encoder": "encoder.pt2"} and line["max_abs_diff"]["encoder"] <= 1e-5

    res = runner.invoke(app, ["export-model", str(tmp_path / "run"), "--format", "torch_export",
                              "--out", str(tmp_path / "y"), "--part", "ranker"])
    assert res.exit_code == 2 and "unknown part" in res.output

    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "onnxruntime" else real(n, *a))
    res = runner.invoke(app, ["export-model", str(tmp_path / "run"), "--out", str(tmp_path / "z")])
    assert res.exit_code == 2 and 'pip install "recstack[export]"' in res.output
