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


def test_synthetic_criteo_spec_builds_the_generators_tables():
    from recstack.data.synthetic_ctr import SyntheticCTR, SyntheticCTRConfig
    from recstack.features.pipeline import FeaturePipeline
    from recstack.workflow.ctr import synthetic_criteo_task

    task = synthetic_criteo_task("synthetic-criteo:1_000?seed=3&max_cardinality=500")
    assert (task.info["train"], task.info["valid"], task.info["test"]) == (800, 100, 100)
    layout = FeaturePipeline(task.features).fit(task.train).layout()
    cards = SyntheticCTR(SyntheticCTRConfig(seed=3, max_cardinality=500)).cards
    assert layout.cat_sizes == [int(c) + 1 for c in cards]  # the tables bench_dlrm.py trains
    for bad in ("synthetic-criteo:abc", "synthetic-criteo:5", "synthetic-criteo:100?sed=1"):
        with pytest.raises(ValueError, match="synthetic-criteo"):
            synthetic_criteo_task(bad)


def test_ctr_run_reports_steady_state_throughput():
    import json

    from typer.testing import CliRunner

    from recstack.cli import app

    res = CliRunner().invoke(app, ["train", "--model", "dlrm", "--data", "synthetic-criteo:3000?max_cardinality=50",
                                   "--device", "cpu", "--set", "epochs=2", "--set", "batch_size=128",
                                   "--set", "dim=8", "--set", "sparse=true", "--set", "progress=false"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["train_samples_per_s"] > 0 and 0.0 < out["auc"] < 1.0
    # the line says which training path ran and why (on the CPU, "auto" keeps the plain loop)
    assert out["fast_path"]["used"] is False and "CPU" in out["fast_path"]["reason"]


def test_synthetic_table_on_threads_equals_the_chunk_stream():
    import polars as pl

    from recstack.data.synthetic_ctr import SyntheticCTR, SyntheticCTRConfig

    gen = SyntheticCTR(SyntheticCTRConfig(seed=1, max_cardinality=100))
    want = pl.concat(list(gen.frames(2_500, chunk_rows=1_000)))
    assert gen.table(2_500, chunk_rows=1_000, threads=3).equals(want)
