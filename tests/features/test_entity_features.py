"""Entity features (the inputs of the two-tower / YouTube-DNN towers and their cold-start paths):
the encoder against independent computations, the users' histories, and the one vocabulary /
numeric-statistics implementation shared with the feature pipeline of the CTR models (expected
codes and statistics computed by hand)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from recstack.data import from_raw
from recstack.data.dataset import FeatureTable
from recstack.features import (
    UNKNOWN_LAST,
    Categorical,
    FeatureEncoder,
    FeaturePipeline,
    History,
    MeanBag,
    Moments,
    Numeric,
    NumericStats,
    ValueCounts,
    Vocabulary,
    build_features,
    standardize,
)


# ---- the entity encoder ---------------------------------------------------------------------------
def feature_table() -> tuple[FeatureTable, dict[str, np.ndarray]]:
    table = FeatureTable(
        n=4,
        categorical={"color": (np.array([0, 1, -1, 2]), np.array(["blue", "green", "red"]))},
        multihot={
            "tags": (np.array([0, 2, 2, 3, 4]), np.array([0, 1, 2, 1]), np.array(["t0", "t1", "t2"])),
            "genres": (np.array([0, 1, 2, 2, 4]), np.array([0, 1, 0, 1]), np.array(["g0", "g1"])),
        },
        numeric={"price": np.array([1.0, np.nan, 3.0, 5.0], np.float32)},
        text={"title": np.array(["a", "b", "c", "d"], dtype=object)},
    )
    dense = {"vec": np.arange(12, dtype=np.float32).reshape(4, 3)}
    return table, dense


def expected_encoding(enc: FeatureEncoder, id_vec, color, tags, genres, price, vec) -> torch.Tensor:
    """Independent per-entity computation of the encoder's output."""
    mh = enc.multihot.weight
    pool = lambda codes: mh[codes].mean(0) if codes else torch.zeros(mh.shape[1])  # noqa: E731
    mean, std = 3.0, float(np.std([1.0, 3.0, 5.0]))
    z = 0.0 if np.isnan(price) else (price - mean) / std
    return torch.cat([id_vec, enc.categorical[0].weight[color], pool(tags), pool([3 + g for g in genres]),
                      torch.tensor([z, float(np.isnan(price))]), torch.as_tensor(vec, dtype=torch.float32)])


def test_feature_encoder_every_kind_and_missing_values():
    table, dense = feature_table()
    schema, tensors = build_features(table, 4, dense=dense, max_dim=8)
    json.dumps(schema)  # JSON-able meta
    assert schema["skipped"] == ["title"]  # text is left to a content encoder
    enc = FeatureEncoder(schema, n_ids=4, id_dim=3, tensors=tensors)
    ids = enc.id.weight
    assert torch.count_nonzero(enc.categorical[0].weight[3]) == 0  # the unknown row starts at 0
    with torch.no_grad():
        enc.categorical[0].weight[3] += 0.5  # make "unknown" distinguishable from "absent"
        out = enc(torch.tensor([0, 1, 2, 3]))
        assert out.shape == (4, enc.out_dim)
        rows = [  # color code (3 = missing), tags, genres, price, as stored in `table`
            (0, [0, 1], [0], 1.0), (1, [], [1], np.nan), (3, [2], [], 3.0), (2, [1], [0, 1], 5.0)]
        for e, (c, t, g, p) in enumerate(rows):
            torch.testing.assert_close(out[e], expected_encoding(enc, ids[e], c, t, g, p, dense["vec"][e]))

        # unseen entities from raw values: unknown id -> mean id, unseen values -> unknown / dropped
        new = enc.rows_from_values({"color": ["green", "purple", None], "tags": [["t1", "t9"], [], None],
                                    "price": [2.0, None, 4.0], "vec": np.ones((3, 3))}, 3)
        got = enc.encode(new, None)
        mean_id = ids[:4].mean(0)
        for e, (c, t, p) in enumerate([(1, [1], 2.0), (3, [], np.nan), (3, [], 4.0)]):
            torch.testing.assert_close(got[e], expected_encoding(enc, mean_id, c, t, [], p, np.ones(3)))

        # a FeatureTable of the same entities gives the same rows as the stored buffers
        again = enc.rows_from_table(table.take(np.array([2, 0])), {"vec": dense["vec"][[2, 0]]})
        torch.testing.assert_close(enc.encode(again, torch.tensor([2, 0])), out[[2, 0]])

        # the feature data are buffers: a model rebuilt from the schema + state dict is identical
        clone = FeatureEncoder(schema, n_ids=4, id_dim=3)
        clone.load_state_dict(enc.state_dict())
        torch.testing.assert_close(clone(torch.tensor([3, 1])), out[[3, 1]])
    with pytest.raises(ValueError, match="unknown feature field"):
        enc.rows_from_values({"colour": ["red"]}, 1)


# ---- histories ------------------------------------------------------------------------------------
def test_history_without_timestamps_uses_row_order_and_serves_the_latest_items():
    users = np.array([0, 0, 1, 0, 0, 1, 2, 0, 1, 0])
    items = np.array([5, 1, 2, 3, 1, 4, 0, 2, 5, 4])
    data = from_raw(users, items, timestamp=np.arange(10))  # raw ids == indices here
    data.timestamp = None  # no timestamps: row order
    hist, ends = History.build(data, 3)
    got = hist.bag(torch.as_tensor(users), torch.as_tensor(ends)).numpy()
    want = [[0, 0, 0], [0, 0, 6], [0, 0, 0], [0, 6, 2], [6, 2, 4],  # earlier items + 1, 0 = pad
            [0, 0, 3], [0, 0, 0], [2, 4, 2], [0, 3, 5], [4, 2, 3]]
    np.testing.assert_array_equal(got, want)
    serve = hist.bag(torch.tensor([0, 1, 2])).numpy()  # the whole history, most recent last
    np.testing.assert_array_equal(serve, [[2, 3, 5], [3, 5, 6], [0, 0, 1]])
    np.testing.assert_array_equal(hist.bag_from_items([7, 8, 9, 1], torch.device("cpu")), [[9, 10, 2]])
    np.testing.assert_array_equal(hist.bag_from_items(None, torch.device("cpu")), [[0, 0, 0]])


def test_mean_bag_averages_the_real_items_and_pools_padding_to_zero():
    bag = MeanBag(4, 2, init_std=0.1)
    assert torch.count_nonzero(bag.weight[0]) == 0
    with torch.no_grad():
        out = bag(torch.tensor([[0, 1, 3], [0, 0, 0], [2, 2, 2]]))
    w = bag.weight.detach()
    torch.testing.assert_close(out, torch.stack([(w[1] + w[3]) / 2, torch.zeros(2), w[2]]))


# ---- one vocabulary, one set of numeric statistics --------------------------------------------
def test_one_vocabulary_codes_known_unseen_and_missing_values_in_both_layouts():
    counts = ValueCounts()  # fitted over two chunks: b x3, a x2, c x1
    counts.add(pl.Series("v", ["b", "a", None, "b"]))
    counts.add(pl.Series("v", ["c", "a", "b"]))
    voc = counts.vocabulary()
    assert voc.values == ["b", "a", "c"]  # most frequent first
    assert counts.vocabulary(min_freq=2).values == ["b", "a"]
    assert counts.vocabulary(max_size=1).values == ["b"]
    assert ValueCounts().vocabulary().values == []

    raw = pl.Series("v", ["a", "z", None, "c", "b"])  # known, unseen, missing, known, known
    # the pipeline's layout: 0 = missing, 1 = unseen, 2.. = the values
    assert voc.encode(raw).tolist() == [3, 1, 0, 4, 2]
    assert (voc.size, voc.missing, voc.unknown) == (5, 0, 1)
    # the entity encoders' layout: values at their positions, one last code for missing and unseen
    ent = Vocabulary(voc.values, UNKNOWN_LAST)
    assert ent.encode(raw).tolist() == [1, 3, 3, 2, 0]
    assert (ent.size, ent.missing, ent.unknown) == (4, 3, 3)
    # codes of another vocabulary (a FeatureTable column: indices into raw values, -1 = missing)
    codes, other = np.array([2, -1, 0, 1]), np.array(["a", "b", "z"])
    assert ent.recode(codes, other).tolist() == [3, 3, 1, 0]
    assert voc.recode(codes, other).tolist() == [1, 0, 3, 2]
    assert ent.index(other).tolist() == [1, 0, -1]

    # values are matched by their text: 3 and "3" are the same value
    assert Vocabulary([3, 10], UNKNOWN_LAST).index(np.array([10, 3, 7])).tolist() == [1, 0, -1]
    assert Vocabulary(["3", "10"]).encode(pl.Series([10, 3, None])).tolist() == [3, 2, 0]
    # an empty vocabulary: everything is unseen or missing
    none = pl.Series(["a", None], dtype=pl.String)
    assert Vocabulary([]).encode(none).tolist() == [1, 0]
    assert Vocabulary([], UNKNOWN_LAST).encode(none).tolist() == [0, 0]
    assert Vocabulary([], UNKNOWN_LAST).recode(np.array([0, -1]), np.array(["a"])).tolist() == [0, 0]


def test_pipeline_and_entity_encoder_code_categorical_values_alike():
    # the CTR feature pipeline: a vocabulary fitted on the rows
    pipe = FeaturePipeline([Categorical("color")]).fit(
        pl.DataFrame({"color": ["b", "a", None, "b", "c", "a", "b"]}))
    assert pipe.state_["color"]["vocab"] == ["b", "a", "c"]
    x = pipe.transform(pl.DataFrame({"color": ["a", "z", None, "c", "b"]}))
    assert x["cat"][:, 0].tolist() == [3, 1, 0, 4, 2]
    assert pipe.layout().cat_sizes == [5]

    # the entity encoder: the table's own vocabulary and codes, missing -> the last row
    table = FeatureTable(n=3, categorical={"color": (np.array([1, -1, 0]), np.array(["a", "b", "c"]))})
    schema, tensors = build_features(table, 3)
    assert schema["categorical"][0]["vocab"] == ["a", "b", "c"]
    assert tensors["cat"][:, 0].tolist() == [1, 3, 0]
    enc = FeatureEncoder(schema, tensors=tensors)
    assert enc.categorical[0].num_embeddings == 4
    assert torch.count_nonzero(enc.categorical[0].weight[3]) == 0
    rows = enc.rows_from_values({"color": ["c", "z", None, "a"]}, 4)  # new entities: raw values
    assert rows.cat[:, 0].tolist() == [2, 3, 3, 0]
    other = FeatureTable(n=3, categorical={"color": (np.array([0, 1, -1]), np.array(["c", "q"]))})
    assert enc.rows_from_table(other).cat[:, 0].tolist() == [2, 3, 3]


def test_one_numeric_statistics_mean_std_and_missing_indicators():
    s = float(np.sqrt(8 / 3))  # population std of 1, 3, 5 (mean 3)
    st = NumericStats.of(np.array([1.0, np.nan, 3.0, 5.0, np.inf], np.float32))  # inf: missing too
    assert st.mean == 3.0 and st.std == pytest.approx(s, rel=1e-6)
    assert NumericStats.of(np.array([np.nan], np.float32)) == NumericStats(0.0, 1.0)  # nothing seen
    assert NumericStats.of(np.array([4.0], np.float32)) == NumericStats(4.0, 1.0)  # one value
    assert NumericStats.of(np.array([2.0, 2.0], np.float32)) == NumericStats(2.0, 1.0)  # constant
    assert st.to_json() == {"mean": st.mean, "std": st.std}

    m = Moments()  # the same statistics, streamed over chunks
    m.add(np.array([1.0, np.nan]))
    m.add(np.array([3.0, 5.0, -np.inf]))
    assert m.stats().mean == 3.0 and m.stats().std == pytest.approx(s, rel=1e-12)
    assert Moments().stats() == NumericStats(0.0, 1.0)
    c = Moments()
    c.add(np.full(3, 2.0))
    assert c.stats() == NumericStats(2.0, 1.0)

    x = np.array([1.0, np.nan, 3.0, 5.0])
    np.testing.assert_allclose(standardize(x, 3.0, s), [-2 / s, np.nan, 0.0, 2 / s])
    torch.testing.assert_close(standardize(torch.tensor([1.0, 5.0]), torch.tensor(3.0), torch.tensor(2.0)),
                               torch.tensor([-1.0, 1.0]))

    # the entity encoder: standardised values, missing -> 0 plus a missing indicator
    table = FeatureTable(n=4, numeric={"price": x.astype(np.float32)})
    schema, tensors = build_features(table, 4)
    assert schema["numeric"] == [{"name": "price", "mean": 3.0, "std": pytest.approx(s, rel=1e-6)}]
    with torch.no_grad():
        out = FeatureEncoder(schema, tensors=tensors)(torch.arange(4))
    torch.testing.assert_close(out, torch.tensor([[-2 / s, 0.0], [0.0, 1.0], [0.0, 0.0], [2 / s, 0.0]]))

    # the feature pipeline: the same standardisation, missing -> 0 (no indicator: CTR layout)
    pipe = FeaturePipeline([Numeric("price")]).fit(pl.DataFrame({"price": [1.0, None, 3.0, 5.0]}))
    assert pipe.state_["price"] == {"mean": 3.0, "std": pytest.approx(s, rel=1e-12)}
    got = pipe.transform(pl.DataFrame({"price": [1.0, None, 3.0, 5.0]}))["num"][:, 0]
    torch.testing.assert_close(got, torch.tensor([-2 / s, 0.0, 0.0, 2 / s]))
