"""Export a fitted model's networks to ONNX or ``torch.export`` and check them by running them.

    from recstack.export import export_model
    manifest = export_model(model, "out/onnx", format="onnx")        # or format="torch_export"

writes one file per part (see `recstack.export.parts`) plus, beside them:

* ``manifest.json``: each part's inputs and outputs (names, dtypes, shapes; ``"batch"`` is the
  dynamic dimension), how raw ids map to indices, the tables, the recstack / torch versions, the
  ONNX opset, the exporter used, and the verification's max abs differences;
* ``item_table.npy``: the item vectors scores are taken against (towers and encoders);
* ``vocab.user.json`` / ``vocab.item.json``: raw ids in index order (index = position);
* ``pipeline/`` (rankers): the fitted feature pipeline that turns rows into the inputs.

No pickle anywhere: ONNX protobuf, the ``.pt2`` archive of ``torch.export.save`` (JSON graph
and raw weight bytes; its sample-input slot is left empty), JSON and ``.npy`` of numbers.

With ``verify`` (the default) each exported artefact is run on a sample batch (onnxruntime for
ONNX, ``torch.export.load(...).module()`` for torch_export) and compared with the PyTorch
model's own outputs (and full scores); a max abs difference above ``atol`` raises.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recstack import __version__
from recstack.export.parts import UNSUPPORTED_FORMAT, ExportError, Part, Parts, Ranker, model_parts
from recstack.optional import MissingExtra

__all__ = ["FORMATS", "MANIFEST", "export_model", "run_onnx", "run_torch_export"]

FORMATS = ("onnx", "torch_export")
MANIFEST = "manifest.json"
EXPORT_FORMAT = "recstack-model-export"
EXPORT_VERSION = 1
_SUFFIX = {"onnx": ".onnx", "torch_export": ".pt2"}


def _need(modules: Sequence[str], what: str) -> None:
    """Raise `MissingExtra` (one line naming the 'export' extra) unless `modules` are installed."""
    for m in modules:
        if importlib.util.find_spec(m) is None:
            raise MissingExtra(m, "export", what)


def _jsonable_id(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    return v if isinstance(v, int | str) else str(v)


def _write_vocab(vocab: Any, path: Path) -> None:
    path.write_text(json.dumps([_jsonable_id(v) for v in np.asarray(vocab.raw).tolist()]))


def _spec(name: str, value: np.ndarray | torch.Tensor, describe: dict[str, str]) -> dict[str, Any]:
    arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    dtype = "float32" if arr.dtype.kind == "f" else str(arr.dtype)
    return {"name": name, "dtype": dtype, "shape": ["batch", *[int(s) for s in arr.shape[1:]]],
            **({"description": describe[name]} if name in describe else {})}


def _dynamic_shapes(part: Part) -> tuple:
    batch = torch.export.Dim("batch")
    per_input = tuple({0: batch} for _ in part.inputs)
    return (per_input,) if isinstance(part.module, Ranker) else per_input


# ---- the two formats ----------------------------------------------------------------------------
@contextlib.contextmanager
def _torchlib_cache() -> Iterator[None]:
    """The dynamo exporter rebuilds its table of ~500 torchlib functions (parsing their Python
    sources) on every call: seconds per part. Reuse the first table for the process while
    exporting. A private corner of torch.onnx: where it has moved, nothing is cached."""
    global _TORCHLIB_OPS
    try:
        from torch.onnx._internal.exporter import _registration

        apis = _registration.onnxscript_apis
        original = apis.get_torchlib_ops
    except (ImportError, AttributeError):
        yield
        return

    def cached() -> Any:
        global _TORCHLIB_OPS
        if _TORCHLIB_OPS is None:
            _TORCHLIB_OPS = list(original())
        return _TORCHLIB_OPS

    apis.get_torchlib_ops = cached
    try:
        yield
    finally:
        apis.get_torchlib_ops = original


_TORCHLIB_OPS: list | None = None


def _rename_clashes(program: Any) -> None:
    """Give inner values that carry an input's name (a value computed by ``torch.cat`` is called
    "cat", like the rankers' ``cat`` input) a fresh name: ONNX needs every name defined once."""
    graph = program.model.graph
    inputs = set(graph.inputs)
    taken = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
    names = {v.name for node in graph for v in node.outputs} | taken
    for node in graph:
        for v in node.outputs:
            if v.name in taken and v not in inputs and v not in graph.outputs:
                k = 1
                while f"{v.name}_{k}" in names:
                    k += 1
                v.name = f"{v.name}_{k}"
                names.add(v.name)


def _export_onnx(part: Part, path: Path, opset: int | None) -> str:
    """Write `part` to `path` with the dynamo exporter, or the TorchScript one where the dynamo
    exporter fails; returns which one wrote it (and why)."""
    args = tuple(part.inputs.values())
    names = list(part.inputs)
    try:
        with warnings.catch_warnings(), _quiet_onnx_logs(), _torchlib_cache():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(part.module, args, dynamo=True, input_names=names,
                                        output_names=part.outputs, dynamic_shapes=_dynamic_shapes(part),
                                        opset_version=opset, verbose=False, external_data=False)
            _rename_clashes(program)
            program.save(str(path), external_data=False)
        return "dynamo"
    except Exception as e:  # noqa: BLE001 - any exporter failure: fall back, say why
        reason = _first_line(e)
    axes = {n: {0: "batch"} for n in [*names, *part.outputs]}
    try:
        with warnings.catch_warnings(), _quiet_onnx_logs():
            warnings.simplefilter("ignore")
            torch.onnx.export(part.module, args, str(path), dynamo=False, input_names=names,
                              output_names=part.outputs, dynamic_axes=axes,
                              opset_version=opset or 17)
    except Exception as e2:  # noqa: BLE001
        raise ExportError(f"{part.name}: neither ONNX exporter succeeded (dynamo: {reason}; "
                          f"torchscript: {_first_line(e2)})") from None
    return f"torchscript (the dynamo exporter failed: {reason})"


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"[:limit]


@contextlib.contextmanager
def _quiet_onnx_logs() -> Iterator[None]:
    """The exporters log every optional op they skip (torchvision's) and every constant they do
    not fold; keep that out of the user's log while exporting."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "onnxscript", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _export_torch(part: Part, path: Path) -> str:
    try:
        with warnings.catch_warnings(), _quiet_onnx_logs():
            warnings.simplefilter("ignore")
            ep = torch.export.export(part.module, tuple(part.inputs.values()),
                                     dynamic_shapes=_dynamic_shapes(part))
    except Exception as e:  # noqa: BLE001 - one line, the model named by the caller
        raise ExportError(f"{part.name}: torch.export failed ({_first_line(e)})") from None
    ep._example_inputs = None  # else the archive stores them with torch.save (pickle)
    torch.export.save(ep, str(path))
    return "torch.export"


def run_onnx(path: str | Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run an exported ONNX part with onnxruntime (CPU): input name -> array in, output name ->
    array out (inputs the graph does not read are ignored)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: np.ascontiguousarray(inputs[i.name]) for i in sess.get_inputs()}
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feed), strict=True))


def run_torch_export(path: str | Path, inputs: dict[str, np.ndarray], outputs: Sequence[str]
                     ) -> dict[str, np.ndarray]:
    """Run an exported ``.pt2`` part (``torch.export.load(path).module()``), inputs in the
    manifest's order; returns output name -> array."""
    module = torch.export.load(str(path)).module()
    with torch.no_grad():
        out = module(*[torch.as_tensor(v) for v in inputs.values()])
    out = out if isinstance(out, tuple | list) else (out,)
    return {n: o.detach().float().cpu().numpy() for n, o in zip(outputs, out, strict=True)}


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("inf")
    finite = np.isfinite(a) & np.isfinite(b)
    if not np.array_equal(np.isfinite(a), np.isfinite(b)):
        return float("inf")
    return float(np.abs(a[finite] - b[finite]).max(initial=0.0))


def _verify(part: Part, path: Path, fmt: str) -> dict[str, float]:
    feed = {k: v.cpu().numpy() for k, v in part.inputs.items()}
    got = run_onnx(path, feed) if fmt == "onnx" else run_torch_export(path, feed, part.outputs)
    diffs = {name: _max_diff(got[name], part.expected[name]) for name in part.outputs}
    if part.scores is not None:
        mine, theirs = part.scores(got)
        diffs["scores"] = _max_diff(mine, theirs)
    return diffs


# ---- the entry point ----------------------------------------------------------------------------
def export_model(model: Any, out_dir: str | Path, format: str = "onnx",
                 parts: Sequence[str] | None = None, verify: bool = True, atol: float = 1e-5,
                 sample_size: int = 64, seed: int = 0, opset: int | None = None,
                 ctr_sample: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
    """Export the networks of fitted `model` to `out_dir` (see the module docstring).

    Args:
        model: a fitted (or loaded) recstack model on the CPU.
        out_dir: directory to write (created; existing files of the same names are replaced).
        format: "onnx" or "torch_export".
        parts: part names to write (default: every part of the model: user_tower / item_tower,
            encoder, or ranker).
        verify: run each exported part on a sample batch and compare with the PyTorch model.
        atol: largest max abs difference `verify` accepts (float32 outputs and scores).
        sample_size: rows of the sample batch (traced with a dynamic batch dimension).
        seed: seed of the sample batch.
        opset: ONNX opset (default: the exporter's).
        ctr_sample: rankers: pipeline tensors to trace and verify on (default: random codes and
            values covering the layout's ranges).

    Returns:
        The manifest (also written to ``out_dir/manifest.json``).

    Raises:
        ExportError: unsupported model or part, or an exported part whose outputs differ by
            more than `atol`.
        MissingExtra: onnx / onnxscript / onnxruntime missing (an ImportError whose message
            names the ``export`` extra: ``pip install "recstack[export]"``).
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format '{format}'; use one of {', '.join(FORMATS)}")
    name = getattr(model, "name", type(model).__name__)
    if format == "onnx":
        _need(["onnx", "onnxscript"], "ONNX export")
        if verify:
            _need(["onnxruntime"], "verifying an ONNX export")
    if (name, format) in UNSUPPORTED_FORMAT:
        raise ExportError(f"{name}: {format} export is not supported ({UNSUPPORTED_FORMAT[name, format]})")
    device = getattr(model, "device_", None)
    if device is not None and torch.device(device).type != "cpu":
        raise ExportError(f"{name}: export runs on the CPU; load the model with device='cpu'")
    module = getattr(model, "module_", None)
    was_training = bool(getattr(module, "training", False))
    try:
        found: Parts = model_parts(model, sample_size, seed, ctr_sample)
        chosen = list(found.parts) if not parts else list(dict.fromkeys(parts))
        unknown = [p for p in chosen if p not in found.parts]
        if unknown:
            raise ExportError(f"{name}: unknown part(s) {unknown}; this model has {', '.join(found.parts)}")
        return _write(model, found, chosen, Path(out_dir), format, verify, atol, opset)
    finally:
        if module is not None:
            module.train(was_training)


def _write(model: Any, found: Parts, chosen: list[str], out: Path, fmt: str, verify: bool,
           atol: float, opset: int | None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    name = model.name
    manifest: dict[str, Any] = {
        "format": EXPORT_FORMAT, "format_version": EXPORT_VERSION, "model": name,
        "task": getattr(model, "task", ""), "export_format": fmt,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recstack_version": __version__, "torch_version": torch.__version__.split("+")[0],
        "scoring": found.scoring, "parts": {}, "tables": {}, "ids": {},
    }
    if fmt == "onnx":
        import onnx

        manifest["onnx_version"] = onnx.__version__
        if verify:
            import onnxruntime

            manifest["onnxruntime_version"] = onnxruntime.__version__
    failures = []
    for part_name in chosen:
        part = found.parts[part_name]
        path = out / f"{part_name}{_SUFFIX[fmt]}"
        t0 = time.perf_counter()
        try:
            exporter = _export_onnx(part, path, opset) if fmt == "onnx" else _export_torch(part, path)
        except ExportError as e:
            raise ExportError(f"{name}: {e}") from None
        entry: dict[str, Any] = {
            "file": path.name, "exporter": exporter,
            "inputs": [_spec(k, v, part.describe) for k, v in part.inputs.items()],
            "outputs": [_spec(k, v, part.describe) for k, v in part.expected.items()],
            "export_seconds": round(time.perf_counter() - t0, 2),
        }
        if fmt == "onnx":
            import onnx

            proto = onnx.load(str(path), load_external_data=False)
            entry["opset"] = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
            graph_inputs = [i.name for i in proto.graph.input]
            entry["inputs"] = [s for s in entry["inputs"] if s["name"] in graph_inputs]
            manifest["opset"] = entry["opset"]
        if part.notes:
            entry["notes"] = part.notes
        if verify:
            diffs = _verify(part, path, fmt)
            entry["verified"] = {"batch": len(next(iter(part.inputs.values()))), "atol": atol,
                                 "max_abs_diff": diffs}
            bad = {k: v for k, v in diffs.items() if not v <= atol}
            if bad:
                failures.append(f"{part_name} ({', '.join(f'{k}: {v:.3g}' for k, v in bad.items())})")
        manifest["parts"][part_name] = entry
    for table, (arr, what) in found.tables.items():
        np.save(out / f"{table}.npy", np.ascontiguousarray(arr, np.float32), allow_pickle=False)
        manifest["tables"][table] = {"file": f"{table}.npy", "dtype": "float32",
                                     "shape": [int(s) for s in arr.shape], "description": what}
    if getattr(model, "task", "") == "ctr":
        model.pipeline_.save(out / "pipeline")
        manifest["ids"]["pipeline"] = ("pipeline/: the fitted FeaturePipeline (JSON + safetensors); "
                                       "FeaturePipeline.load(dir).transform(frame) gives the ranker's inputs")
    else:
        for side in ("user", "item"):
            vocab = getattr(model, f"{side}_vocab_", None)
            if vocab is not None:
                _write_vocab(vocab, out / f"vocab.{side}.json")
                manifest["ids"][side] = {"file": f"vocab.{side}.json",
                                         "how": f"a JSON list of raw {side} ids; the {side} index of a "
                                                "raw id is its position in the list"}
    manifest["verified"] = bool(verify and not failures)
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    if failures:
        raise ExportError(f"{name}: the {fmt} export differs from PyTorch by more than {atol:g}: "
                          + "; ".join(failures))
    return manifest
