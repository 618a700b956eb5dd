"""The out-of-core path end to end (issue 24): `recstack data prepare --streaming` writes a split
directory, `split:DIR` reads it, and every model family trains on it (retrieval, sequential, CTR
when the split keeps a rating); both commands print their peak RSS."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from recstack.cli import app
from recstack.data.errors import DataError
from recstack.data.readers import load
from recstack.data.streaming import prepare_streaming
from recstack.data.transforms import load_split, split, split_leave_one_out
from recstack.workflow.config import ExperimentConfig
from recstack.workflow.experiment import run_experiment

runner = CliRunner()
# the generated log repeats (user, item) pairs: some test items are also known (a warning, by design)
pytestmark = pytest.mark.filterwarnings("ignore:some test items are also in")


@pytest.fixture(scope="module")
def log_csv(tmp_path_factory):
    """3,000 interactions, 60 users, 80 items, text ids, ratings 1-5, many equal timestamps."""
    rng = np.random.default_rng(0)
    n = 3000
    u, i = rng.integers(0, 60, n), rng.zipf(1.5, n) % 80
    t, r = rng.integers(0, 400, n), rng.integers(1, 6, n)  # few distinct times: ties in time
    path = tmp_path_factory.mktemp("ooc") / "log.csv"
    path.write_text("user,item,timestamp,rating\n"
                    + "".join(f"u{a},i{b},{c},{d}\n" for a, b, c, d in zip(u, i, t, r, strict=True)))
    return path


@pytest.fixture(scope="module")
def prepared(log_csv, tmp_path_factory):
    """Streaming splits of the log: with the rating column, and without."""
    base = tmp_path_factory.mktemp("prepared")
    prepare_streaming(log_csv, base / "rated", rating_col="rating")
    prepare_streaming(log_csv, base / "plain")
    return base


def _rows(part) -> list[tuple]:
    return list(zip(part.user_vocab.raw[part.user].tolist(), part.item_vocab.raw[part.item].tolist(),
                    part.timestamp.tolist(), strict=True))


def test_streaming_split_reads_back_in_file_order(log_csv, prepared):
    """load_split sorts each part by the input row, so a part equals the in-memory one row for
    row (ties in time keep the file's order in a user's sequence, as SASRec needs)."""
    ref = split_leave_one_out(load(f"csv:{log_csv}?rating=rating"))
    got = load_split(prepared / "rated")
    for p in ("train", "valid", "test"):
        assert _rows(getattr(got, p)) == _rows(getattr(ref, p)), p
        np.testing.assert_array_equal(getattr(got, p).rating, getattr(ref, p).rating)
    assert load_split(prepared / "plain").train.rating is None


def test_split_spec_is_the_split_as_given(prepared):
    data = load(f"split:{prepared / 'rated'}")
    assert data.fmt == "split" and len(data) == 3000 and data.fold is not None
    again, ref = split(data, "given"), load_split(prepared / "rated")
    for p in ("train", "valid", "test"):
        assert _rows(getattr(again, p)) == _rows(getattr(ref, p)), p
    assert "read split directory rated" in data.log[-1]


@pytest.mark.parametrize("model, params", [
    ("ease", {}),                                   # retrieval (closed form)
    ("mf", {"epochs": 1}),                          # retrieval (neural)
    ("sasrec", {"epochs": 1, "max_len": 20}),       # sequential
])
def test_every_family_trains_on_a_streaming_split(prepared, model, params):
    out = run_experiment(ExperimentConfig(model=model, data=f"split:{prepared / 'plain'}",
                                          device="cpu", params=params))
    assert out["protocol"]["name"] == "given-files"
    assert out["users_evaluated"] == 60
    assert out["metrics"]["ndcg@10"] >= 0
    assert out["memory"]["peak_rss_gib"] > 0
    if model == "ease":  # EASE's own memory facts are kept beside the run's peak
        assert out["memory"]["estimate_gib"] > 0 and out["memory"]["fit_peak_rss_gib"] > 0


def test_ctr_model_trains_on_a_rated_streaming_split(prepared):
    out = run_experiment(ExperimentConfig(model="lr", data=f"split:{prepared / 'rated'}",
                                          device="cpu", params={"epochs": 1}))
    assert 0 <= out["auc"] <= 1 and out["memory"]["peak_rss_gib"] > 0
    assert sum(out["rows"].values()) == 3000


def test_ctr_on_a_split_without_rating_says_how_to_prepare_one(prepared):
    with pytest.raises(DataError, match=r"no rating or timestamp column.*\?rating=COLUMN"):
        run_experiment(ExperimentConfig(model="lr", data=f"split:{prepared / 'plain'}",
                                        device="cpu", params={"epochs": 1}))


def test_cli_prepare_streaming_then_train_print_peak_rss(log_csv, tmp_path):
    out = tmp_path / "p"
    res = runner.invoke(app, ["data", "prepare", f"csv:{log_csv}?rating=rating", "--streaming",
                              "--kcore", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert line["memory"]["peak_rss_gib"] > 0 and line["train"] > 0
    res = runner.invoke(app, ["train", "--model", "pop", "--data", f"split:{out}", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    line = json.loads(res.stdout.strip().splitlines()[-1])
    assert line["memory"]["peak_rss_gib"] > 0 and line["protocol"]["name"] == "given-files"
