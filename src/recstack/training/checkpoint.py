"""Atomic training checkpoints: tensors in safetensors, everything else in JSON (no pickle).

A checkpoint directory holds `state.safetensors` and `state.json`. It is written into a
temporary sibling directory and renamed into place, so a crash never leaves a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def _flatten(prefix: str, obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor inside nested dicts/lists into `tensors`; return a JSON-able skeleton."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {
            "__dict__": [[_key(k), _flatten(f"{prefix}.{k}", v, tensors)] for k, v in obj.items()]
        }
    if isinstance(obj, list | tuple):
        return [_flatten(f"{prefix}.{i}", v, tensors) for i, v in enumerate(obj)]
    return obj


def _key(k: Any) -> Any:
    # dict keys may be ints (optimizer state is keyed by parameter index): keep their type
    return {"__int__": k} if isinstance(k, int) else k


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        out = {}
        for k, v in obj["__dict__"]:
            out[k["__int__"] if isinstance(k, dict) else k] = _unflatten(v, tensors)
        return out
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` (nested dicts/lists of tensors and JSON values) atomically to directory `path`."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten("s", state, tensors)
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(skeleton))
    old = path.with_name(path.name + ".old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
    return path


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Inverse of `save_checkpoint`; tensors are moved to `device`."""
    path = Path(path)
    tensors = load_file(str(path / "state.safetensors"), device=str(device))
    skeleton = json.loads((path / "state.json").read_text())
    return _unflatten(skeleton, tensors)
