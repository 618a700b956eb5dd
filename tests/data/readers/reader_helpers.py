"""Helpers shared by the reader tests in this folder (imported by name: pytest puts this folder
on sys.path, as there are no __init__.py files under tests/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recstack.data import DataError, Interactions
from recstack.data.readers import load


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def decoded(d: Interactions) -> tuple[list, list]:
    return d.user_vocab.decode(d.user).tolist(), d.item_vocab.decode(d.item).tolist()


def multihot_row(ft, name: str, k: int) -> list:
    off, val, voc = ft.multihot[name]
    return voc[val[off[k]:off[k + 1]]].tolist()


def item_index(d: Interactions, raw) -> int:
    return int(np.flatnonzero(d.item_vocab.raw == raw)[0])


def check_bad_line(tmp_path: Path, fmt: str, files: dict[str, str], target: str, named: str,
                   line: int | None, field: str | None) -> None:
    """Write `files`, load ``fmt:tmp_path/target`` and check that the DataError names the file
    `named`, the `line` and the `field` (None: not checked)."""
    for name, text in files.items():
        write(tmp_path / name, text)
    with pytest.raises(DataError) as e:
        load(f"{fmt}:{tmp_path / target}")
    msg = str(e.value)
    assert named in msg, msg
    if line is not None:
        assert f"line {line}" in msg and e.value.line == line, msg
    if field is not None:
        assert f"field '{field}" in msg, msg
