"""Files recstack writes for a user: safetensors weights with a normal file's mode.

safetensors writes through a private temporary file, so its files come out 0600; weights,
checkpoints and bundles are meant to be readable like any other output (0666 less the umask).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def default_file_mode() -> int:
    """The mode `open()` gives a new file: 0o666 less the process umask (e.g. 0o644)."""
    try:  # Linux: read the umask without changing it (os.umask would, process-wide)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def set_default_mode(path: str | Path, mode: int | None = None) -> None:
    """Give `path` `mode` (default: a normal new file's, see `default_file_mode`)."""
    os.chmod(path, default_file_mode() if mode is None else mode)


def save_safetensors(tensors: dict[str, Any], path: str | Path) -> None:
    """Save torch tensors (or, all of them numpy, numpy arrays) as safetensors, then give the
    file the normal mode."""
    import numpy as np

    if tensors and all(isinstance(v, np.ndarray) for v in tensors.values()):
        from safetensors.numpy import save_file
    else:
        from safetensors.torch import save_file
    save_file(tensors, str(path))
    set_default_mode(path)
