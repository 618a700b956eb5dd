"""SASRec: ``user item`` per line, in time order per user."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from recstack.data.dataset import Interactions
from recstack.data.readers._common import _build, _read_delim


def read_sasrec(path: str | Path) -> Interactions:
    """SASRec: ``user item`` per line (space-separated), in time order per user;
    timestamp = position within the user's rows (0, 1, 2, ...)."""
    p = Path(path)
    df = _read_delim(p, {"user": "int", "item": "int"}, sep=" ", header=False, names=["user", "item"],
                     quote=None, what="a SASRec file (user item per line)")
    ts = df.select(pl.int_range(pl.len()).over("user").alias("t"))["t"]
    return _build(df["user"], df["item"], timestamp=ts, name=p.stem, fmt="sasrec",
                  log=[f"read {df.height} interactions from {p}"])

