"""Atomic training checkpoints: tensors in safetensors, everything else in JSON (no pickle).

A checkpoint directory holds `state.safetensors` and `state.json`. It is written into a
temporary sibling directory (``<name>.tmp``), its files and the directory fsynced, then renamed
into place (the previous one moved to ``<name>.old`` first and removed last, the parent
directory fsynced after each rename), so a crash at any point leaves a complete checkpoint on
disk: ``<name>``, or ``<name>.old`` when the crash fell between the two renames.
:func:`latest_checkpoint` finds it; :func:`load_checkpoint` turns an unreadable file into a
one-line :class:`CheckpointError` naming it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from recstack.files import default_file_mode, set_default_mode

__all__ = ["CheckpointError", "default_file_mode", "fsync_dir", "latest_checkpoint", "load_checkpoint",
           "save_checkpoint", "set_default_mode"]

FILES = ("state.safetensors", "state.json")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, or written by a different run."""


def fsync_dir(path: str | Path) -> None:
    """Flush a directory's entries (renames, new files) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


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
    """Write `state` (nested dicts/lists of tensors and JSON values) atomically to directory `path`.

    Durable as well as atomic: the files and directories are fsynced before and after the
    renames, and the previous checkpoint (``<path>.old`` meanwhile) is removed only once the
    new one is in place."""
    path = Path(path)
    parent = path.parent
    tmp = path.with_name(path.name + ".tmp")
    old = path.with_name(path.name + ".old")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten("s", state, tensors)
    save_file(tensors, str(tmp / "state.safetensors"))
    with open(tmp / "state.json", "w") as f:
        f.write(json.dumps(skeleton))
        f.flush()
        os.fsync(f.fileno())
    _fsync_file(tmp / "state.safetensors")
    for name in FILES:
        set_default_mode(tmp / name)
    fsync_dir(tmp)
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
        fsync_dir(parent)
    os.replace(tmp, path)
    fsync_dir(parent)
    if old.exists():
        shutil.rmtree(old)
        fsync_dir(parent)
    return path


def _complete(path: Path) -> bool:
    return all((path / name).is_file() for name in FILES)


def latest_checkpoint(path: str | Path) -> Path | None:
    """The complete checkpoint written for `path`: `path` itself, else ``<path>.old`` (left by a
    crash between `save_checkpoint`'s two renames), else None. A ``<path>.tmp`` is never used:
    it may be half-written."""
    path = Path(path)
    for candidate in (path, path.with_name(path.name + ".old")):
        if _complete(candidate):
            return candidate
    return None


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Inverse of `save_checkpoint`; tensors are moved to `device`.

    Raises:
        CheckpointError: one line naming the file that is missing, truncated or corrupt.
    """
    path = Path(path)
    hint = f"delete {path} to start over"
    tensors_file, json_file = path / "state.safetensors", path / "state.json"
    try:
        tensors = load_file(str(tensors_file), device=str(device))
    except Exception as e:  # safetensors raises its own error type (and OSError) on bad files
        raise CheckpointError(f"checkpoint file {tensors_file} is unreadable (truncated or corrupt: "
                              f"{str(e).splitlines()[0] if str(e) else type(e).__name__}); {hint}") from None
    try:
        skeleton = json.loads(json_file.read_text())
        return _unflatten(skeleton, tensors)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint file {json_file} is unreadable (truncated or corrupt: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); {hint}") from None
