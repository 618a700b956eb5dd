"""What a command writes: strict JSON (never NaN / Infinity), an output directory checked before
any work, and files with a normal mode.

`json.dumps` writes ``NaN`` for a float NaN, which is not JSON: a consumer of the result line
(``jq``, JavaScript, most JSON libraries) fails on it. :func:`strict_json` writes ``null`` in
its place and reports where it did, so the caller can warn on stderr.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from recstack.training.checkpoint import default_file_mode

__all__ = ["add_peak_rss", "check_writable_dir", "finite", "normal_modes", "peak_rss_gib", "strict_json"]


def peak_rss_gib() -> float | None:
    """This process's peak resident set size so far in GiB (`getrusage`'s ``ru_maxrss``: KiB on
    Linux, bytes on macOS); None where the platform has no `resource` module (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**30 if sys.platform == "darwin" else 2**20), 3)


def add_peak_rss(result: dict[str, Any]) -> dict[str, Any]:
    """Put the process's peak RSS in `result["memory"]["peak_rss_gib"]` (in place; returned).

    A "memory" object already there (EASE's fit facts) is kept: its other keys stay, and its own
    `peak_rss_gib` (the peak when the fit ended) moves to `fit_peak_rss_gib`.
    """
    mem = dict(result.get("memory") or {})
    if "peak_rss_gib" in mem:
        mem.setdefault("fit_peak_rss_gib", mem["peak_rss_gib"])
    mem["peak_rss_gib"] = peak_rss_gib()
    result["memory"] = mem
    return result


def finite(obj: Any, path: str = "") -> tuple[Any, list[str]]:
    """`obj` with every non-finite float (NaN, +-inf; numpy scalars too) replaced by None, and
    the dotted paths of the replaced values."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj, []
    if isinstance(obj, float) or (hasattr(obj, "dtype") and getattr(obj, "ndim", None) == 0):
        try:
            x = float(obj)
        except (TypeError, ValueError):
            return obj, []
        if math.isfinite(x):  # numpy / torch scalars become Python numbers json can write
            return (obj if isinstance(obj, float) else obj.item()), []
        return None, [f"{path or '<value>'}={x}"]
    if isinstance(obj, dict):
        out, where = {}, []
        for k, v in obj.items():
            out[k], w = finite(v, f"{path}.{k}" if path else str(k))
            where += w
        return out, where
    if isinstance(obj, list | tuple):
        items, where = [], []
        for i, v in enumerate(obj):
            x, w = finite(v, f"{path}[{i}]")
            items.append(x)
            where += w
        return items, where
    return obj, []


def strict_json(obj: Any, warn: Callable[[str], None] | None = None, **kw: Any) -> str:
    """`json.dumps(obj, allow_nan=False, **kw)` after replacing non-finite floats with null;
    `warn` (e.g. a print to stderr) gets one line naming them."""
    clean, where = finite(obj)
    if where and warn is not None:
        shown = ", ".join(where[:5]) + (f" and {len(where) - 5} more" if len(where) > 5 else "")
        warn(f"non-finite value(s) written as null: {shown}")
    return json.dumps(clean, allow_nan=False, **kw)


def check_writable_dir(path: str | Path, what: str = "--out") -> Path:
    """Create directory `path` (and its parents) if needed and check that a file can be written
    in it, before any work is done.

    Raises:
        ValueError: one line naming `what`, the path and the reason.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ValueError(f"{what} {p}: cannot write there ({e.strerror or e})") from None
    return p


def normal_modes(directory: str | Path, mode: int | None = None) -> None:
    """Give every file under `directory` `mode` (default: a new file's under the umask, e.g.
    0644); safetensors and other write-to-temp-then-rename writers leave 0600 files."""
    mode = default_file_mode() if mode is None else mode
    for root, _, files in os.walk(directory):
        for name in files:
            f = Path(root) / name
            if not f.is_symlink():
                os.chmod(f, mode)
