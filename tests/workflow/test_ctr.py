"""Choosing among CTR models reads the validation frame only."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from recstack.evaluation.selection import Candidate, select_best
from recstack.models.ctr.tasks import interactions_ctr_task
from recstack.workflow.ctr import compare_ctr_models

MODELS = {"lr": {"epochs": 2, "lr": 0.01}, "fm": {"epochs": 2, "dim": 4},
          "deepfm": {"epochs": 2, "dim": 4, "lr": 0.003}}


def _shuffle_labels(frame: pl.DataFrame, seed: int) -> pl.DataFrame:
    perm = np.random.default_rng(seed).permutation(frame.height)
    cols = [c for c in ("label", "like", "weight") if c in frame.columns]
    return frame.with_columns([pl.Series(c, frame[c].to_numpy()[perm]) for c in cols])


def test_ctr_selection_is_unchanged_when_test_labels_are_shuffled(rating_log):
    # Acceptance (d): the choice is made before the test frame is read.
    task = interactions_ctr_task(rating_log, history_len=5)
    kw = dict(device="cpu", seed=0)
    a = compare_ctr_models(task, MODELS, **kw)
    shuffled = replace(task, test=_shuffle_labels(task.test, 1))
    assert not shuffled.test["label"].equals(task.test["label"])
    b = compare_ctr_models(shuffled, MODELS, **kw)
    assert a["selected_on"] == b["selected_on"] == "validation"
    assert a["selected"]["name"] == b["selected"]["name"]
    assert [c["valid"] for c in a["candidates"]] == [c["valid"] for c in b["candidates"]]
    assert a["test"] != b["test"]  # the test figures did move with the labels
    # the record: every candidate with its validation figures, the winner has the best AUC
    best = max(a["candidates"], key=lambda c: c["valid"]["auc"])
    assert a["selected"]["name"] == best["name"] and set(a["test"]) == set(MODELS)


def test_ctr_selection_follows_validation_labels(rating_log):
    # ... and it does read the validation frame: flipping its labels flips the AUCs (one epoch,
    # so early stopping on that frame cannot change the fitted models).
    task = interactions_ctr_task(rating_log, history_len=5)
    one_epoch = {name: {**p, "epochs": 1} for name, p in MODELS.items()}
    a = compare_ctr_models(task, one_epoch, device="cpu", run_test=False)
    assert "test" not in a
    flipped = replace(task, valid=task.valid.with_columns((1 - pl.col("label")).alias("label")))
    b = compare_ctr_models(flipped, one_epoch, device="cpu", run_test=False)
    for ca, cb in zip(a["candidates"], b["candidates"], strict=True):
        assert ca["valid"]["auc"] == pytest.approx(1 - cb["valid"]["auc"], abs=1e-6)


def test_select_best_rules():
    cands = [Candidate("a", valid={"auc": 0.7, "logloss": 0.5}),
             Candidate("b", valid={"auc": 0.8, "logloss": 0.6}),
             Candidate("c", valid={"auc": 0.8, "logloss": 0.4})]
    assert select_best(cands, "auc").selected.name == "b"  # first of an exact tie
    assert select_best(cands, "logloss", higher_is_better=False).selected.name == "c"
    rec = select_best(cands, "auc", validation="v").to_dict()
    assert rec["selected_on"] == "validation" and len(rec["candidates"]) == 3
    with pytest.raises(ValueError, match="no candidates"):
        select_best([], "auc")
    with pytest.raises(ValueError, match="no validation 'ndcg@10'"):
        select_best(cands, "ndcg@10")
    with pytest.raises(ValueError, match="finite"):
        select_best([Candidate("x", valid={"auc": float("nan")})], "auc")
