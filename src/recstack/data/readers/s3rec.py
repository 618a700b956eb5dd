"""S3-Rec: one line per user, items in time order (+ ``<stem>_item2attributes.json``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from recstack.data.dataset import FeatureTable, Interactions, Vocab
from recstack.data.errors import DataError
from recstack.data.readers._common import (
    _build,
    _first_true,
    _gather,
    _multihot,
    _rows_for,
    _show,
    _user_lines,
)


def read_s3rec(path: str | Path) -> Interactions:
    """S3-Rec sequences: one line per user, ``user item item ...`` in time order (1-based ids).

    timestamp = position in the user's sequence (0, 1, 2, ...). If ``<stem>_item2attributes.json``
    lies beside the file, items get the multihot feature ``attributes``.
    """
    p = Path(path)
    pairs, _ = _user_lines(p, "an S3-Rec sequence file (one line per user: user item item ...)",
                           allow_empty_users=False, min_id=1)
    out = _build(pairs["user"], pairs["item"], timestamp=pairs["pos"], name=p.stem, fmt="s3rec",
                 log=[f"read {pairs.height} interactions from {p}"])
    attr = p.with_name(f"{p.stem}_item2attributes.json")
    if attr.exists():
        out.item_features = FeatureTable(n=out.n_items, multihot={"attributes": _item_attributes(attr, out.item_vocab)})
    return out


def _item_attributes(path: Path, vocab: Vocab) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"invalid JSON: {e.msg}", path=str(path), line=e.lineno) from None
    if not isinstance(obj, dict):
        raise DataError("expected a JSON object mapping item id -> list of attribute ids", path=str(path))
    keys = pl.Series("item", list(obj.keys()), dtype=pl.String)
    ids = keys.cast(pl.Int64, strict=False)
    i = _first_true(ids.is_null().to_numpy())
    if i is not None:
        raise DataError(f"item id must be an integer, got {_show(keys[i])}", path=str(path), field=keys[i])
    try:
        vals = pl.Series("attributes", list(obj.values()), dtype=pl.List(pl.Int64), strict=True)
    except (TypeError, pl.exceptions.PolarsError):
        vals = None
    if vals is None or vals.null_count():
        # error path only: find the offending entry
        for k, v in obj.items():
            if not isinstance(v, list) or not all(isinstance(a, int) and not isinstance(a, bool) for a in v):
                raise DataError(f"expected a list of integer attribute ids, got {_show(v)}",
                                path=str(path), field=k) from None
    row_of = _rows_for(vocab, ids, path, 1, "item")
    return _multihot(_gather(vals, row_of))

