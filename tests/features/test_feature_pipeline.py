"""Feature pipeline: hand-computed encodings, hashing test vectors, streaming fit, persistence,
and train/serve equality through the feature store."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from conftest import make_rating_log  # tests/ is on sys.path under pytest

from recstack.data.errors import DataError
from recstack.features import (
    Bucketized,
    Categorical,
    Cross,
    FeaturePipeline,
    FeatureStore,
    IdSequence,
    MultiHot,
    Numeric,
    Precomputed,
    fnv1a64,
    hash_bucket,
)
from recstack.models.ctr.tasks import interactions_ctr_task, recent_history


def frame():
    return pl.DataFrame({
        "u": ["a", "b", "a", "c", None, "a", "b"],
        "tags": [["x", "y"], [], None, ["z"], ["x"], ["x", "y", "z"], ["y"]],
        "n": [1.0, 3.0, None, 7.0, 15.0, 0.0, 3.0],
        "hist": [[1, 2, 3], [4], [], None, [5, 6], [7], [1]],
        "vec": [[1.0, 2.0], [0.5, 0.5], None, [0.0, 1.0], [1.0, 1.0], [2.0, 2.0], [3.0, 0.0]],
    })


def test_vocab_min_freq_oov_and_missing_codes():
    # counts: a=3, b=2, c=1 -> with min_freq=2 the vocabulary is [a, b] (most frequent first)
    p = FeaturePipeline([Categorical("u", min_freq=2)]).fit(frame())
    assert p.state_["u"]["vocab"] == ["a", "b"]
    codes = p.transform(frame())["cat"][:, 0].tolist()
    assert codes == [2, 3, 2, 1, 0, 2, 3]  # 0 missing, 1 out of vocabulary (c), 2 a, 3 b
    unseen = p.transform(pl.DataFrame({"u": ["zzz", "b"]}))["cat"][:, 0].tolist()
    assert unseen == [1, 3]
    assert p.layout().cat_sizes == [4]


def test_fnv1a_test_vectors_and_text_equals_number():
    h, nulls = fnv1a64(pl.Series(["", "a", "foobar", None]))
    assert [int(x) for x in h[:3]] == [0xCBF29CE484222325, 0xAF63DC4C8601EC8C, 0x85944171F73967E8]
    assert nulls.tolist() == [False, False, False, True]
    # 5 and "5" land in the same bucket; null is code 0; codes stay in 1..buckets
    a = hash_bucket(pl.Series([5, 12, None]), 1000)
    b = hash_bucket(pl.Series(["5", "12", None]), 1000)
    assert a.tolist() == b.tolist() and a[2] == 0 and 1 <= a[0] <= 1000


def test_numeric_log_standardize_and_buckets_by_hand():
    p = FeaturePipeline([Numeric("n", transforms=("log", "standardize")),
                         Bucketized("nb", column="n", n_buckets=2)]).fit(frame())
    x = np.log1p(np.array([1.0, 3.0, 7.0, 15.0, 0.0, 3.0]))
    mean, std = x.mean(), x.std()
    out = p.transform(frame())
    expected = (np.log1p([1.0, 3.0, 0.0, 7.0, 15.0, 0.0, 3.0]) - mean) / std
    expected[2] = 0.0  # missing -> the mean
    np.testing.assert_allclose(out["num"][:, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    # median of [0, 1, 3, 3, 7, 15] is 3 -> boundary 3; code 1 + #(boundaries <= x), 0 missing
    assert p.state_["nb"]["boundaries"].tolist() == [3.0]
    assert out["cat"][:, 0].tolist() == [1, 2, 0, 2, 2, 1, 2]


def test_bags_left_and_sequences_right_aligned_with_truncation():
    p = FeaturePipeline([MultiHot("tags", max_len=2), IdSequence("hist", max_len=2)]).fit(frame())
    out = p.transform(frame())
    # tags vocab by frequency: x(3) y(3) z(2) -> x=2, y=3, z=4 (ties by value)
    assert out["bag.tags"].tolist() == [[2, 3], [0, 0], [0, 0], [4, 0], [2, 0], [2, 3], [3, 0]]
    # hist vocab: 1 (twice) first, then 2..7 by value -> codes 2, 3..8; last two, right-aligned
    assert out["bag.hist"].tolist() == [[3, 4], [0, 5], [0, 0], [0, 0], [6, 7], [0, 8], [0, 2]]


def test_shared_vocab_cross_and_precomputed():
    df = frame().with_columns(item=pl.Series([3, 1, 1, 2, 9, 1, 3]))
    p = FeaturePipeline([Categorical("item"), IdSequence("hist", vocab_of="item", max_len=3),
                         Categorical("u"), Bucketized("nb", column="n", n_buckets=2),
                         Cross("u_x_nb", ("u", "nb")), Precomputed("vec", dim=2)]).fit(df)
    out = p.transform(df)
    # item vocab: 1 (3x), 3 (2x), 2, 9 -> codes 2, 3, 4, 5; hist ids 1,2,3 map through it
    assert out["bag.hist"][0].tolist() == [2, 4, 3]
    assert out["bag.hist"][4].tolist() == [0, 1, 1]  # 5, 6 never seen as items -> OOV
    u, nb = out["cat"][:, 1], out["cat"][:, 2]
    assert out["cross"][:, 0].tolist() == (u * 3 + nb + 1).tolist()  # mixed radix: u 5 codes, nb 3
    assert p.layout().cross_sizes == [5 * 3 + 1]
    assert out["emb"][2].tolist() == [0.0, 0.0] and out["emb"][0].tolist() == [1.0, 2.0]


def test_streamed_fit_equals_one_frame_fit():
    df = frame()
    specs = [Categorical("u", min_freq=2), MultiHot("tags"), Numeric("n", transforms=("log", "standardize"))]
    whole = FeaturePipeline(specs).fit(df)
    chunks = FeaturePipeline(specs).fit(iter([df[:3], df[3:5], df[5:]]))
    assert whole.state_["u"] == chunks.state_["u"] and whole.state_["tags"] == chunks.state_["tags"]
    assert whole.state_["n"]["mean"] == pytest.approx(chunks.state_["n"]["mean"], rel=1e-12)
    assert whole.state_["n"]["std"] == pytest.approx(chunks.state_["n"]["std"], rel=1e-12)


def test_save_load_same_tensors_no_pickle(tmp_path):
    specs = [Categorical("u", min_freq=2), Categorical("uh", column="u", hash_buckets=11),
             MultiHot("tags", max_len=3), Numeric("n"), Bucketized("nb", column="n", n_buckets=3),
             IdSequence("hist", max_len=2), Precomputed("vec", dim=2), Cross("c", ("u", "nb"))]
    p = FeaturePipeline(specs).fit(frame())
    p.save(tmp_path / "pipe")
    assert sorted(f.name for f in (tmp_path / "pipe").iterdir()) == ["pipeline.json", "pipeline.safetensors"]
    q = FeaturePipeline.load(tmp_path / "pipe")
    a, b = p.transform(frame()), q.transform(frame())
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert q.layout() == p.layout()


def test_row_by_row_equals_whole_frame():
    """Serving scores one row at a time: each row alone must give the rows of the batch."""
    specs = [Categorical("u", min_freq=2), MultiHot("tags", max_len=3), Numeric("n"),
             Bucketized("nb", column="n", n_buckets=3), IdSequence("hist", max_len=2)]
    p = FeaturePipeline(specs).fit(frame())
    whole = p.transform(frame())
    for i in range(frame().height):
        one = p.transform(frame()[i:i + 1])
        for k in whole:
            assert torch.equal(one[k][0], whole[k][i]), (k, i)


def test_errors_name_row_and_field():
    p = FeaturePipeline([Numeric("n")]).fit(frame())
    with pytest.raises(DataError, match=r"field 'n'.*row 1: 'abc' is not a number"):
        p.transform(pl.DataFrame({"n": ["1.5", "abc", None]}))
    with pytest.raises(DataError, match="no column 'n'"):
        p.transform(pl.DataFrame({"m": [1.0]}))
    q = FeaturePipeline([Categorical("tags")]).fit(pl.DataFrame({"tags": ["a"]}))
    with pytest.raises(DataError, match="got a list"):
        q.transform(frame())
    with pytest.raises(ValueError, match="not a Categorical"):
        FeaturePipeline([IdSequence("hist", vocab_of="nope")])
    with pytest.raises(DataError, match=r"row 0: vector of length 3, expected 2"):
        FeaturePipeline([Precomputed("v", dim=2)]).fit(frame()).transform(pl.DataFrame({"v": [[1.0, 2.0, 3.0]]}))


def test_recent_history_is_strictly_earlier():
    user = np.array([0, 0, 0, 1, 0, 0])
    item = np.array([10, 11, 12, 13, 14, 15])
    t = np.array([1, 2, 2, 1, 3, 0])  # items 11 and 12 share a timestamp
    off, hist = recent_history(user, item, t, max_len=2)
    rows = [hist[off[r]:off[r + 1]].tolist() for r in range(6)]
    assert rows == [[15], [15, 10], [15, 10], [], [11, 12], []]


def test_train_serve_equality_through_the_store():
    task = interactions_ctr_task(make_rating_log(), history_len=5)
    pipe = FeaturePipeline(task.features).fit(task.train)
    test = task.test
    offline = pipe.transform(test)
    for r in range(0, test.height, 7):
        row = test.row(r, named=True)
        state = {k: row[k] for k in ("liked", "user_prev_count", "user_prev_rate")}  # as of that event
        served = pipe.transform(task.store.request(row["user_id"], [row["item_id"]],
                                                   history=row["history"], context=state))
        for k in offline:
            assert torch.equal(served[k][0], offline[k][r]), (k, r)


def test_store_save_load_and_unknown_ids(tmp_path):
    task = interactions_ctr_task(make_rating_log(), history_len=5)
    task.store.save(tmp_path / "store")
    store = FeatureStore.load(tmp_path / "store")
    a = task.store.request(107, [1000, 1001], context=None)
    b = store.request(107, [1000, 1001])
    assert a.equals(b)
    assert a["history"][0].to_list() == task.store.history_of(107)
    unknown = store.request(-5, [99999])
    assert unknown["gender"][0] is None and unknown["genre"][0] is None and unknown["history"][0] is None
    x = FeaturePipeline(task.features).fit(task.train).transform(unknown)  # a new user: all missing
    assert x["bag.history"].abs().sum() == 0 and x["cat"][0, 0] == 1  # empty history, OOV user id
