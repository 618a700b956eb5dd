"""LightGCN / NGCF split: ``train.txt`` + ``test.txt``, one line per user: ``user item item ...``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from recstack.data.dataset import TEST, TRAIN, Interactions
from recstack.data.readers._common import _build, _need_dir, _user_lines


def read_lightgcn(path: str | Path) -> Interactions:
    """LightGCN/NGCF split: ``train.txt`` and ``test.txt`` in `path`, one line per user
    (``user item item ...``, 0-based ints). `fold` is TRAIN / TEST; no timestamp. A line with
    only a user id is a user without items (kept in the user vocabulary)."""
    d = _need_dir(Path(path), "train.txt and test.txt (LightGCN format)")
    parts, users, folds = [], [], []
    for fname, fold in (("train.txt", TRAIN), ("test.txt", TEST)):
        pairs, u = _user_lines(d / fname, f"LightGCN {fname} (one line per user: user item item ...)",
                               allow_empty_users=True, min_id=0)
        parts.append(pairs)
        users.append(u)
        folds.append(np.full(pairs.height, fold, np.int8))
    df = pl.concat(parts)
    return _build(df["user"], df["item"], fold=np.concatenate(folds), all_users=pl.concat(users),
                  name=d.name, fmt="lightgcn",
                  log=[f"read {parts[0].height} train and {parts[1].height} test interactions from {d}"])

