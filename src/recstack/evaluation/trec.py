"""Runs out: TREC run and qrels files, so recstack's rankings can be scored by other toolkits
(trec_eval, ranx, ir-measures, pytrec_eval) and compared with their runs.

    write_run("run.trec", users, items, scores, run_name="ease")   # raw ids, one line per item
    write_qrels("qrels.trec", split.test)                          # the test interactions

Formats (whitespace-separated, one record per line):

- run: ``qid Q0 docid rank score tag`` (user id, the literal ``Q0``, item id, rank 1..k,
  score, run name), a user's items in rank order;
- qrels: ``qid 0 docid rel`` (user id, the literal ``0``, item id, relevance 1).

Ties: recstack orders equal scores by its tie rule (the evaluation's seeded hash, or lower index
first in ``recommend``), but TREC tools ignore the rank column and re-sort each user's items by
score, breaking ties their own way (trec_eval by item id, ranx in no defined order). So that
every tool sees recstack's order, the scores written for one user are made strictly
decreasing: a score not below the previous one is written as the largest float64 below it
(a few units in the last place off the model's score; untied scores are written unchanged,
float32 values exactly). Then a tool's metrics equal recstack's own on the same top-k.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recstack.data.dataset import Interactions
from recstack.data.errors import DataError

__all__ = ["export_trec", "strictly_decreasing", "write_qrels", "write_run"]


def _id_text(ids: Any, what: str) -> pl.Series:
    """Raw ids as text for a TREC file (no whitespace allowed inside an id)."""
    arr = np.asarray(ids)
    if arr.dtype.kind in "iu":
        s = pl.Series(what, arr).cast(pl.String)
    else:  # text or objects (possibly mixed): each id as str
        s = pl.Series(what, [None if x is None else str(x) for x in arr.tolist()], dtype=pl.String)
    bad = (s.is_null() | (s == "") | s.str.contains(r"\s")).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"id {s[i]!r} cannot be written to a TREC file (empty or contains whitespace)",
                        field=what)
    return s


def strictly_decreasing(scores: np.ndarray) -> np.ndarray:
    """Row-wise: float64 scores where each value is below the previous one in its row
    (``min(score, nextafter(previous, -inf))``), order and untied values kept. Non-finite
    entries (unfilled slots) are left as they are and skipped."""
    out = np.asarray(scores, dtype=np.float64).copy()
    if out.ndim != 2:
        raise ValueError(f"scores must be 2-D [users, k], got shape {out.shape}")
    for j in range(1, out.shape[1]):  # k columns: vectorised over users
        prev, cur = out[:, j - 1], out[:, j]
        ok = np.isfinite(prev) & np.isfinite(cur)
        out[:, j] = np.where(ok, np.minimum(cur, np.nextafter(prev, -np.inf)), cur)
    return out


def write_run(path: str | Path, users: Any, items: Any, scores: Any, run_name: str = "recstack") -> Path:
    """Write a TREC run: ``qid Q0 docid rank score tag`` lines, users in the given order, each
    user's items in the given (rank) order.

    Args:
        path: File to write (its directory is created).
        users: ``[n]`` raw user ids.
        items: ``[n, k]`` raw item ids in rank order (e.g. ``model.recommend``'s); slots that
            hold None, or whose score is not finite (-inf: unfilled / excluded), are skipped.
        scores: ``[n, k]`` scores aligned with `items`; ties are written strictly decreasing
            (see the module docs).
        run_name: The tag column (no whitespace).

    Returns:
        The path written.

    Raises:
        DataError: an id or the run name that is empty or holds whitespace; shapes that differ.
    """
    items = np.asarray(items, dtype=object if not isinstance(items, np.ndarray) else None)
    scores = np.asarray(scores, dtype=np.float64)
    users = np.asarray(users)
    if items.ndim != 2 or scores.shape != items.shape or len(users) != items.shape[0]:
        raise DataError(f"write_run: expected users [n], items and scores [n, k]; got {users.shape}, "
                        f"{items.shape}, {scores.shape}")
    if not run_name or any(c.isspace() for c in run_name):
        raise DataError(f"write_run: run name {run_name!r} must be non-empty without whitespace")
    written = strictly_decreasing(scores)
    keep = np.isfinite(written)
    if items.dtype == object:
        keep &= np.vectorize(lambda x: x is not None, otypes=[bool])(items) if items.size else keep
    rows, cols = np.nonzero(keep)
    rank = np.cumsum(keep, axis=1)[rows, cols]  # 1-based among the written items
    frame = pl.DataFrame({
        "qid": _id_text(users, "user")[rows] if len(rows) else pl.Series("qid", [], pl.String),
        "q0": pl.Series(["Q0"] * len(rows), dtype=pl.String),
        "docid": _id_text(items[rows, cols], "item") if len(rows) else pl.Series("docid", [], pl.String),
        "rank": pl.Series(rank.astype(np.int64)),
        "score": pl.Series(written[rows, cols]),
        "tag": pl.Series([run_name] * len(rows), dtype=pl.String),
    })
    return _write(frame, path)


def write_qrels(path: str | Path, test: Interactions) -> Path:
    """Write TREC qrels ``qid 0 docid rel`` for the test interactions: raw ids, relevance 1
    (binary, duplicates merged), users and items in index order.

    Returns:
        The path written.
    """
    m = test.csr()
    m.sort_indices()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    frame = pl.DataFrame({
        "qid": _id_text(test.user_vocab.decode(rows), "user"),
        "zero": pl.Series(["0"] * len(rows), dtype=pl.String),
        "docid": _id_text(test.item_vocab.decode(m.indices), "item"),
        "rel": pl.Series(np.ones(len(rows), np.int64)),
    })
    return _write(frame, path)


def _write(frame: pl.DataFrame, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(p, separator=" ", include_header=False, quote_style="never")
    return p


def export_trec(out_dir: str | Path, result: Any, test: Interactions, run_name: str = "recstack",
                depth: int | None = None) -> dict[str, Any]:
    """Write ``run.trec`` (the evaluated users' top-`depth` (default: all the result holds) of
    an ``evaluate_ranking(..., return_topk=True)`` result, excluded items absent) and
    ``qrels.trec`` (`test`, whose vocabularies the result's indices refer to) into `out_dir`.

    Returns:
        JSON-ready facts: the two paths, the depth (k) and the number of users.
    """
    if result.topk is None or result.topk_scores is None:
        raise ValueError("export_trec: the evaluation result has no top-k lists (return_topk=True)")
    out = Path(out_dir)
    idx = result.topk[:, :depth]
    items = test.item_vocab.decode(np.maximum(idx, 0))
    scores = np.where(idx >= 0, result.topk_scores[:, :depth], -np.inf)  # unfilled slots: not written
    run = write_run(out / "run.trec", test.user_vocab.decode(result.users), items, scores, run_name)
    qrels = write_qrels(out / "qrels.trec", test)
    return {"run": str(run), "qrels": str(qrels), "depth": int(idx.shape[1]), "users": int(len(result.users)),
            "ties": "equal scores written strictly decreasing in recstack's tie order"}
