"""The four-stage pipeline: config as data, merge, sources, rankers, re-ranking rules, traces,
and quality on a planted data set where the next item is predictable."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recstack.data import from_raw
from recstack.data.dataset import FeatureTable
from recstack.data.transforms import split
from recstack.index import build_index, item_vectors
from recstack.models import ItemKNN, TwoTower
from recstack.pipeline import (
    Assets,
    ItemCatalog,
    PipelineConfig,
    RerankConfig,
    UserStore,
    build_pipeline,
    evaluate_pipeline,
    ranking_metrics,
    register_ranker,
    transition_matrix,
)
from recstack.pipeline.matrices import aggregate_rows, dense_top_k, keep_top_k
from recstack.pipeline.merge import RRF_K, merge
from recstack.pipeline.request import Request
from recstack.pipeline.rerank import Reranker

GROUPS, PER_GROUP, LENGTH = 3, 20, 15


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def planted(n_users: int = 90, seed: int = 0):
    """User u walks through group u % 3's items in order (item i is followed by i + 1 within the
    group); items have raw ids 1000 + i and genre g<group>; users have string ids."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for u in range(n_users):
        g, start = u % GROUPS, rng.integers(PER_GROUP)
        seq = g * PER_GROUP + (start + np.arange(LENGTH)) % PER_GROUP
        users += [f"u{u}"] * LENGTH
        items += (1000 + seq).tolist()
        ts += (10_000 * u + np.arange(LENGTH)).tolist()
    data = from_raw(np.array(users), np.array(items), timestamp=np.array(ts))
    n = data.n_items
    genre = (data.item_vocab.raw - 1000) // PER_GROUP
    data.item_features = FeatureTable(n=n, multihot={"genres": (
        np.arange(n + 1, dtype=np.int64), genre.astype(np.int64), np.array([f"g{g}" for g in range(GROUPS)]))})
    return data


def base_config(**over) -> dict:
    cfg = {
        "sources": [
            {"name": "ann", "kind": "ann", "model": "tt", "index": "tt", "n": 30},
            {"name": "i2i", "kind": "item2item", "matrix": "knn", "n": 30, "last_n": 5},
            {"name": "seq", "kind": "sequential", "matrix": "trans", "n": 10, "last_n": 2, "decay": 0.5},
            {"name": "pop", "kind": "popular", "n": 10, "weight": 0.5},
            {"name": "fresh", "kind": "fresh", "n": 5, "weight": 0.2},
        ],
        "rankers": {"tt": {"kind": "recommender", "model": "tt"},
                    "trans": {"kind": "matrix", "matrix": "trans", "history_len": 1},
                    "fine": {"kind": "blend", "parts": [{"ranker": "tt", "weight": 0.2},
                                                        {"ranker": "trans", "weight": 1.0}]}},
        "coarse": {"ranker": "tt", "keep": 40},
        "fine": {"ranker": "fine", "keep": 20},
        "rerank": {"filter_seen": True},
        "history_len": 20,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    data = planted()
    sp_ = split(data, "loo")
    train = sp_.history("train+valid")
    tt = TwoTower(dim=16, tower=(32,), id_dim=16, history_dim=16, use_history=True, epochs=8,
                  batch_size=256, lr=1e-2, device="cpu", progress=False, patience=0).fit(train)
    knn = ItemKNN(k=20, device="cpu").fit(train)
    assets = Assets(ItemCatalog.from_interactions(train), UserStore.from_interactions(train),
                    models={"tt": tt}, indexes={"tt": build_index(item_vectors(tt), kind="exact")},
                    matrices={"knn": knn.sim_, "trans": transition_matrix(train, top_k=10)})
    return {"data": data, "split": sp_, "train": train, "assets": assets}


@pytest.fixture(scope="module")
def pipe(world):
    return build_pipeline(PipelineConfig.from_dict(base_config()), world["assets"])


# ---- config ---------------------------------------------------------------------------------------
def test_config_round_trip_and_validation(tmp_path):
    cfg = PipelineConfig.from_dict(base_config(rerank={"mmr_lambda": 0.7, "mmr_model": "tt",
                                                       "promoted": [{"item": 1005, "slot": 0}]}))
    for name in ("p.json", "p.yaml"):
        cfg.save(tmp_path / name)
        assert PipelineConfig.load(tmp_path / name) == cfg
    assert json.loads((tmp_path / "p.json").read_text())["rerank"]["promoted"] == [{"item": 1005, "slot": 0}]
    bad = [
        (base_config(extra=1), "unknown key"),
        (base_config(sources=[{"name": "x", "kind": "magic"}]), "kind 'magic'"),
        (base_config(sources=[{"name": "x", "kind": "ann"}]), "needs `model` and `index`"),
        (base_config(coarse={"ranker": "nope", "keep": 5}), "not among rankers"),
        (base_config(fine={"ranker": "tt", "keep": 50}), "exceeds coarse.keep"),
        (base_config(rerank={"mmr_lambda": 0.5}), "needs mmr_model"),
        (base_config(sources=[]), "at least one"),
    ]
    for d, msg in bad:
        with pytest.raises(ValueError, match=msg):
            PipelineConfig.from_dict(d)


def test_build_reports_unknown_assets(world):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_pipeline(PipelineConfig.from_dict(base_config(
            rankers={"tt": {"kind": "recommender", "model": "nope"}}, fine=None)), world["assets"])
    with pytest.raises(ValueError, match="unknown promoted item"):
        build_pipeline(PipelineConfig.from_dict(base_config(rerank={"promoted": [{"item": 7, "slot": 0}]})),
                       world["assets"])
    with pytest.raises(ValueError, match="cycle"):
        build_pipeline(PipelineConfig.from_dict(base_config(
            rankers={"tt": {"kind": "blend", "parts": [{"ranker": "tt"}]}},
            coarse={"ranker": "tt", "keep": 40}, fine=None)), world["assets"])


# ---- building blocks --------------------------------------------------------------------------------
def test_merge_dedups_and_fuses_ranks_by_hand():
    a = (np.array([5, 3, 9]), np.array([0.9, 0.8, 0.1], np.float32))
    b = (np.array([3, 7]), np.array([10.0, 1.0], np.float32))
    c = merge([a, b], [1.0, 2.0], max_candidates=10)
    fused = {5: 1 / (RRF_K + 1), 3: 1 / (RRF_K + 2) + 2 / (RRF_K + 1), 9: 1 / (RRF_K + 3), 7: 2 / (RRF_K + 2)}
    expected = sorted(fused, key=lambda i: (-fused[i], i))
    assert c.items.tolist() == expected
    np.testing.assert_allclose(c.scores["retrieval"], [fused[i] for i in expected], rtol=1e-6)
    ranks = {int(i): c.source_ranks[:, j].tolist() for j, i in enumerate(c.items)}
    assert ranks == {3: [1, 0], 7: [-1, 1], 5: [0, -1], 9: [2, -1]}
    assert len(merge([a, b], [1.0, 2.0], max_candidates=2)) == 2
    empty = merge([(np.zeros(0, np.int64), np.zeros(0, np.float32))], [1.0], 5)
    assert len(empty) == 0


def test_sparse_helpers_against_scipy():
    rng = np.random.default_rng(0)
    m = sp.random(30, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    seeds, w = np.array([4, 7, 4]), np.array([1.0, 0.5, 0.25])
    expected = (sp.csr_matrix((w, (np.zeros(3, int), seeds)), shape=(1, 30)) @ m).toarray()[0]
    np.testing.assert_allclose(aggregate_rows(m, seeds, w), expected, rtol=1e-5)
    again = aggregate_rows(m, seeds, w.astype(np.float64))  # memoised: same key after the cast
    assert again is aggregate_rows(m, seeds, w) and not again.flags.writeable
    other = aggregate_rows(m, seeds[::-1].copy(), w)
    np.testing.assert_allclose(other, np.asarray(m[seeds[::-1]].T @ w).ravel(), rtol=1e-5)
    m2 = m.copy()
    m2.data[:] *= 2  # another matrix object with the same shape: never served from the memo
    np.testing.assert_allclose(aggregate_rows(m2, seeds, w), 2 * expected, rtol=1e-5)
    # equal-length rows (a top-k matrix, broadcast positions) and unit weights (no product)
    # give the same sums as the general path, bit for bit
    from recstack.pipeline.matrices import _aggregate

    uniform = dense_top_k(torch.from_numpy(rng.random((30, 30), dtype=np.float32)), 5)
    for mat in (uniform, m):
        for ww in (w, np.ones(3)):
            got = _aggregate(mat, seeds, ww.astype(np.float32))
            lens = np.diff(mat.indptr)[seeds]
            pos = np.concatenate([np.arange(mat.indptr[s], mat.indptr[s + 1]) for s in seeds])
            vals = mat.data[pos] * np.repeat(ww.astype(np.float32), lens)
            ref = np.bincount(mat.indices[pos], weights=vals, minlength=30).astype(np.float32)
            assert np.array_equal(got, ref)
    top = keep_top_k(m, 2)
    for r in range(30):
        row = m[r].toarray()[0]
        kept = set(top[r].indices.tolist())
        assert len(kept) == min(2, m[r].nnz) and all(row[j] >= row[np.setdiff1d(m[r].indices, list(kept))].max(initial=-1) for j in kept)
    dense = torch.from_numpy(rng.random((6, 6)).astype(np.float32) + 0.1)
    d = dense_top_k(dense, 3).toarray()
    assert ((d != 0).sum(1) == 3).all()
    np.testing.assert_allclose(np.sort(d, 1)[:, -1], dense.numpy().max(1))


def test_transition_matrix_by_hand():
    data = from_raw(np.array([0, 0, 0, 1, 1]), np.array([0, 1, 2, 0, 2]), timestamp=np.array([1, 2, 3, 1, 2]))
    m = transition_matrix(data, top_k=5, window=2).toarray()
    # user 0: 0->1 (gap 1), 1->2 (1), 0->2 (gap 2: 0.5); user 1: 0->2 (1)
    np.testing.assert_allclose(m[0], np.array([0, 1, 1.5]) / 2.5, rtol=1e-6)
    np.testing.assert_allclose(m[1], [0, 0, 1])
    assert m[2].sum() == 0


# ---- requests ---------------------------------------------------------------------------------------
def test_request_encoding_warns_and_excludes(pipe, world):
    users = world["assets"].users
    uid = users.ids[0].item()
    seen = users.history(0)
    req, warnings = pipe.request(user_id=uid, history=[1001, 999_999, "x"], exclude_items=[1002, -5],
                                 categories=["g0", "nope"])
    assert any("2 unknown history item id(s)" in w for w in warnings)
    assert any("excluded item id(s)" in w for w in warnings) and any("'nope'" in w for w in warnings)
    assert req.user == 0 and req.history[-1] == 1 and set(seen) | {1, 2} <= set(req.exclude.tolist())
    req2, w2 = pipe.request(user_id="stranger")
    assert req2.user is None and req2.cold_start and w2 == ["unknown user id 'stranger' ignored"]
    with pytest.raises(ValueError, match="k must be in"):
        pipe.request(user_id=uid, k=0)


def test_run_respects_filters_and_traces_every_item(pipe, world):
    users, cat = world["assets"].users, world["assets"].catalog
    for u in range(0, 90, 7):
        uid = users.ids[u].item()
        req, _ = pipe.request(user_id=uid, k=8, exclude_items=[1000, 1001], categories=["g1", "g2"])
        res = pipe.run(req)
        items = res.items
        assert len(items) == 8 and len(set(items.tolist())) == 8
        assert not set(items.tolist()) & (set(users.history(u).tolist()) | {0, 1})
        assert (cat.primary_category[items] > 0).all()  # only g1 / g2
        for t in res.trace:
            assert t.sources and t.rule == "score"
            assert set(t.scores) == {"retrieval", "coarse", "fine", "final"}
            assert all(t.source_ranks[s] >= 0 for s in t.sources)
        assert {"retrieval", "merge", "coarse", "fine", "rerank", "total"} <= set(res.timings_ms)
        assert res.counts["coarse"] <= 40 and res.counts["fine"] <= 20


def test_cold_start_and_anonymous_history(pipe, world):
    res = pipe.run(pipe.request(k=5)[0])
    assert res.cold_start and res.skipped == ["coarse", "fine"]
    assert all(set(t.sources) <= {"pop", "fresh"} for t in res.trace) and len(res.items) == 5
    # an anonymous session in group 1: the sequential source and rankers follow it
    req, w = pipe.request(history=[1020, 1021, 1022], k=5)
    res = pipe.run(req)
    assert not res.cold_start and w == [] and res.skipped == []
    assert res.items[:3].tolist() == [23, 24, 25]  # the walk 20 -> 21 -> 22 continues


def test_custom_ranker_plugs_in_and_may_abstain(world):
    calls = []

    class Favour:
        name = "favour"

        def score(self, user, items, history, context):
            calls.append(dict(context))
            return None if context.get("abstain") else (items == 59).astype(np.float32)

    register_ranker("favour_59", lambda name, spec, ctx: Favour())
    cfg = base_config(rankers={"f": {"kind": "favour_59"}}, coarse={"ranker": "f", "keep": 40}, fine=None,
                      sources=[{"name": "pop", "kind": "popular", "n": 60}])
    p = build_pipeline(PipelineConfig.from_dict(cfg), world["assets"])
    res = p.run(p.request(history=[1000], k=3, context={"device": "tv"})[0])
    assert res.items[0] == 59 and calls[-1] == {"device": "tv"}
    res = p.run(p.request(history=[1000], k=3, context={"abstain": True})[0])
    assert res.skipped == ["coarse"] and res.trace[0].scores["coarse"] is None


def test_ctr_ranker_adapter_speaks_raw_ids(world):
    from recstack.pipeline.ctr import CTRRanker

    calls = []

    class FakeCTR:  # the recstack.models.ctr.CTRModel serving methods (ScoresFeatureRows), two tasks
        def predict_proba(self, frame):
            raise NotImplementedError

        def score_candidates(self, user, items, history=None, context=None, by_index=False):
            calls.append((user, items.tolist(), history, context))
            return np.stack([items.astype(np.float32), -items.astype(np.float32)], 1)

    a = world["assets"]
    r = CTRRanker("din", FakeCTR(), a.catalog, a.users)
    s = r.score(3, np.array([4, 2]), np.array([0, 1]), {"hour": 9})
    assert s.tolist() == [1004.0, 1002.0]  # primary task, aligned with the items
    assert calls == [(a.users.ids[3].item(), [1004, 1002], [1000, 1001], {"hour": 9})]
    assert r.score(None, np.array([4]), np.zeros(0, np.int64), {}).tolist() == [1004.0]
    assert calls[-1][0] is None
    with pytest.raises(ValueError, match="unknown extra artefact 'din'"):
        build_pipeline(PipelineConfig.from_dict(base_config(
            rankers={"din": {"kind": "ctr", "extra": "din"}}, coarse={"ranker": "din", "keep": 40}, fine=None)), a)


def test_sequence_model_source(world):
    from recstack.pipeline.sources import SequenceModelSource

    class NextItem:  # the EncodesSequences serving methods: the walk continues
        n_items_ = 60

        def set_history(self, data):
            raise NotImplementedError

        def recommend_sequence(self, histories, k=10, exclude_seen=False):
            raise NotImplementedError  # raw ids: the pipeline speaks indices

        def recommend_sequence_indices(self, histories, k=10, exclude_seen=False):
            last = histories[0][-1]
            items = (last // PER_GROUP) * PER_GROUP + (last + 1 + np.arange(k)) % PER_GROUP
            return items[None, :], -np.arange(k, dtype=np.float32)[None, :]

    src = SequenceModelSource("sasrec", NextItem(), n=3)
    req = Request(user=None, history=np.array([20, 21]), exclude=np.array([21, 22]), k=3)
    items, scores = src.candidates(req)
    assert items.tolist() == [23, 24, 25] and (np.diff(scores) < 0).all()
    assert len(src.candidates(Request(None, np.zeros(0, np.int64), np.zeros(0, np.int64), 3))[0]) == 0
    with pytest.raises(ValueError, match="either `matrix`"):
        PipelineConfig.from_dict(base_config(sources=[{"name": "s", "kind": "sequential"}]))


def test_similar_items(pipe):
    items, scores, source = pipe.similar(5, 4)
    assert source.startswith("i2i") and len(items) == 4 and 5 not in items.tolist()
    assert ((items // PER_GROUP) == 0).all() and (np.diff(scores) <= 0).all()


# ---- re-ranking rules -------------------------------------------------------------------------------
def small_catalog(n: int = 6) -> ItemCatalog:
    return ItemCatalog(np.arange(n) + 100, np.ones(n, np.float32), np.linspace(0, 1, n, dtype=np.float32),
                       np.array(["a", "b"]), np.where(np.arange(n) < 3, 1, 2).astype(np.uint64),
                       np.where(np.arange(n) < 3, 0, 1).astype(np.int32))


def plain_request(k: int, exclude=()) -> Request:
    return Request(user=None, history=np.zeros(0, np.int64), exclude=np.asarray(sorted(exclude), np.int64), k=k)


def test_rerank_mmr_caps_promotion_freshness():
    cat = small_catalog()
    items = np.arange(6)
    scores = np.array([1.0, 0.99, 0.98, 0.5, 0.4, 0.3])
    vecs = np.array([[1, 0], [1, 0.01], [1, 0.02], [0, 1], [0.1, 1], [0.2, 1]], np.float32)
    plain = Reranker(RerankConfig(), cat).run(items, scores, plain_request(3))
    assert plain.items.tolist() == [0, 1, 2] and plain.rules == ["score"] * 3
    mmr = Reranker(RerankConfig(mmr_lambda=0.5, mmr_model="m"), cat, vecs).run(items, scores, plain_request(3))
    assert mmr.items.tolist()[:2] == [0, 3] and mmr.rules[1] == "mmr"  # diversity picks the other cluster
    capped = Reranker(RerankConfig(category_cap=2), cat).run(items, scores, plain_request(4))
    assert capped.items.tolist() == [0, 1, 3, 4] and capped.rules == ["score", "score", "category_cap", "category_cap"]
    cat.freshness = np.array([0, 0, 0, 0, 0, 1], np.float32)  # only item 5 is new
    fresh = Reranker(RerankConfig(freshness_weight=1.0), cat).run(items, scores, plain_request(2))
    assert fresh.items.tolist() == [0, 5] and fresh.rules == ["score", "freshness"]
    promo = Reranker(RerankConfig(promoted=[{"item": 105, "slot": 0}, {"item": 101, "slot": 2},
                                            {"item": 104, "slot": 1}]), cat,
                     promoted=[(5, 0), (1, 2), (4, 1)])
    out = promo.run(items, scores, plain_request(3, exclude=[4]))  # 104 is excluded: not promoted
    assert out.items.tolist() == [5, 0, 1] and out.rules == ["promoted", "score", "promoted"]
    assert np.isnan(out.scores[0]) and out.positions[0] == 5



def test_rerank_explores_items_with_little_history_and_learns_from_feedback():
    """Exploration slots: at most max_share of k go to pool items (popularity <= max_popularity),
    never to ineligible ones; feedback moves the bandit towards the item that gets clicked."""
    n = 12
    cat = small_catalog(n)
    cat.popularity = np.where(np.arange(n) >= 8, 0.0, 50.0).astype(np.float32)  # items 8-11: new
    items, scores = np.arange(8), np.linspace(1, 0.3, 8)
    rr = Reranker(RerankConfig(explore={"policy": "thompson", "max_share": 0.25, "max_popularity": 0}), cat)
    assert rr.explore_pool.tolist() == [8, 9, 10, 11]
    out = rr.run(items, scores, plain_request(8, exclude=[9]))
    assert out.items.tolist()[:6] == list(range(6)) and out.rules[:6] == ["score"] * 6
    assert out.rules[6:] == ["explore", "explore"] and set(out.items[6:].tolist()) <= {8, 10, 11}
    assert np.isnan(out.scores[6:]).all() and (out.positions[6:] == -1).all()
    # item 11 is clicked every time it is shown, the others never: it wins the slots
    for _ in range(200):
        shown = rr.run(items, scores, plain_request(8)).items[6:]
        rr.explorer.update(shown, (shown == 11).astype(np.int64))
    picks = [rr.run(items, scores, plain_request(8)).items[6:].tolist() for _ in range(50)]
    assert sum(11 in p for p in picks) >= 45
    with pytest.raises(ValueError, match="policy"):
        RerankConfig(explore={"policy": "ucb"})
    # the config round-trips through JSON as data
    cfg = PipelineConfig.from_dict(base_config(rerank={"explore": {"policy": "epsilon_greedy", "max_share": 0.1}}))
    assert PipelineConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def _greedy_reference(rr: Reranker, items, rel, final, k):
    """The MMR / cap / freshness greedy pick written plainly (recomputed masks and objective)."""
    cfg, cat = rr.config, rr.catalog
    cats, counts = cat.primary_category[items], {}
    vecs = rr.vectors[items] if cfg.mmr_lambda < 1 else None
    max_sim, taken, capped = np.zeros(len(items)), np.zeros(len(items)), np.zeros(len(items))
    picks, rules = [], []
    for _ in range(min(k, len(items))):
        ok = final + taken + capped
        top = int(np.argmax(ok))
        if ok[top] == -np.inf:
            break
        pick = top if vecs is None else int(np.argmax(cfg.mmr_lambda * final - (1 - cfg.mmr_lambda) * max_sim
                                                      + taken + capped))
        if pick != top:
            rule = "mmr"
        elif cfg.category_cap is not None and pick != int(np.argmax(final + taken)):
            rule = "category_cap"
        elif cfg.freshness_weight > 0 and pick != int(np.argmax(rel + taken)):
            rule = "freshness"
        else:
            rule = "score"
        picks.append(pick)
        rules.append(rule)
        taken[pick] = -np.inf
        c = int(cats[pick])
        if c >= 0:
            counts[c] = counts.get(c, 0) + 1
            if cfg.category_cap is not None and counts[c] >= cfg.category_cap:
                capped[cats == c] = -np.inf
        if vecs is not None:
            max_sim = np.maximum(max_sim, vecs @ vecs[pick])
    return picks, rules


def test_greedy_rerank_equals_plain_reference():
    """The in-place greedy (scaled similarity penalty, merged masks) picks exactly what the
    plain recomputation picks, with the same rules, over random candidates."""
    rng = np.random.default_rng(0)
    n = 60
    cat = ItemCatalog(np.arange(n) + 100, np.ones(n, np.float32), rng.random(n).astype(np.float32),
                      np.array(["a", "b", "c"]), np.ones(n, np.uint64), rng.integers(-1, 3, n).astype(np.int32))
    vecs = rng.normal(size=(n, 8)).astype(np.float32)
    configs = (RerankConfig(mmr_lambda=0.95, mmr_model="m", category_cap=5),
               RerankConfig(mmr_lambda=0.5, mmr_model="m"),
               RerankConfig(category_cap=2, freshness_weight=0.3),
               RerankConfig(mmr_lambda=0.7, mmr_model="m", category_cap=3, freshness_weight=0.5))
    for cfg in configs:
        rr = Reranker(cfg, cat, vecs)
        for _ in range(20):
            items = rng.permutation(n)[: rng.integers(1, n)]
            rel = rng.random(len(items))
            rel[rng.integers(0, len(items))] = rel.max()  # a tie
            final = rel + cfg.freshness_weight * cat.freshness[items]
            picks, rules = rr._greedy(items, rel, final, 10)
            ref_picks, ref_rules = _greedy_reference(rr, items, rel, final, 10)
            assert picks.tolist() == ref_picks and rules == ref_rules


def test_blend_normalisation_is_numpy_mean_std_bit_for_bit():
    from recstack.pipeline.rankers import BlendRanker

    class Fixed:
        def __init__(self, name, s):
            self.name, self.s = name, s

        def score(self, user, items, history, context):
            return self.s

    rng = np.random.default_rng(1)
    for n in (1, 3, 200, 381):
        parts = [(Fixed("a", rng.normal(size=n).astype(np.float32) * 50), 1.0),
                 (Fixed("b", rng.random(n)), 0.5), (Fixed("c", np.full(n, 2.0)), 2.0), (Fixed("d", None), 1.0)]
        expect = np.zeros(n)
        for r, w in parts:
            if r.s is not None:
                s = np.asarray(r.s, np.float64)
                expect += w * ((s - s.mean()) / s.std() if s.std() > 0 else np.zeros_like(s))
        got = BlendRanker("blend", parts).score(None, np.arange(n), np.zeros(0, np.int64), {})
        assert np.array_equal(got, expect.astype(np.float32))
    assert BlendRanker("b", [(Fixed("x", None), 1.0)]).score(None, np.arange(3), np.zeros(0, np.int64), {}) is None


# ---- quality ------------------------------------------------------------------------------------------
def test_ranking_metrics_by_hand():
    hits = np.array([[False, True, False], [False, False, False], [True, False, True]])
    m = ranking_metrics(hits, np.array([1, 1, 2]), ks=(2, 3))
    ndcg3 = (1 / np.log2(3) + 0 + (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))) / 3
    assert m["ndcg@3"] == pytest.approx(ndcg3)
    assert m["hr@2"] == pytest.approx(2 / 3) and m["recall@3"] == pytest.approx((1 + 0 + 1) / 3)


def test_ranking_stages_add_value_on_planted_data(world):
    """Retrieval alone (two-tower ANN) vs the full pipeline whose fine ranker knows the walk."""
    test = world["split"].test.csr()
    retrieval = PipelineConfig.from_dict(base_config(sources=base_config()["sources"][:1], coarse=None, fine=None))
    r0 = evaluate_pipeline(build_pipeline(retrieval, world["assets"]), test)
    r1 = evaluate_pipeline(build_pipeline(PipelineConfig.from_dict(base_config()), world["assets"]), test)
    assert r1["users"] == 90 and r1["ndcg@10"] > 0.95 and r1["ndcg@10"] > r0["ndcg@10"] + 0.05
    assert r1["ms.total"] > 0 and "ms.fine" in r1


# ---- CTR rankers trained on the candidates (issue 6) -----------------------------------------------
@pytest.fixture(scope="module")
def ctr_task(world):
    from recstack.pipeline.ranker_training import candidate_ranking_task, retrieval_candidates

    train = world["train"]
    cands = retrieval_candidates(world["assets"].model("tt"), train, n=20, popular=5)
    return train, cands, candidate_ranking_task(train, cands, n_retrieved=3, n_uniform=2, history_len=6)


def test_candidate_task_has_no_leakage(ctr_task):
    train, cands, task = ctr_task
    raw_u, raw_i = train.user_vocab.raw, train.item_vocab.raw
    when = {(raw_u[u], raw_i[i]): int(t) for u, i, t in zip(train.user, train.item, train.timestamp, strict=True)}
    seen = {}
    for u, i in zip(train.user, train.item, strict=True):
        seen.setdefault(raw_u[u], set()).add(raw_i[i])
    frame = task.train.vstack(task.valid)
    assert set(frame["label"].unique().to_list()) == {0.0, 1.0}
    assert task.info["positives"] == int(frame["label"].sum()) == len(train)  # every event, 15 per user
    for row in frame.iter_rows(named=True):
        u, i, t = row["user_id"], row["item_id"], row["timestamp"]
        assert all(when[(u, h)] < t for h in row["history"])  # history strictly before the event
        assert len(row["history"]) <= 6
        if row["label"] == 1.0:
            assert when[(u, i)] == t
        else:
            assert i not in seen[u]  # negatives are never one of the user's items
    # negatives come from what retrieval proposes for the user (+ uniform ones)
    uidx = {r: j for j, r in enumerate(raw_u)}
    iidx = {r: j for j, r in enumerate(raw_i)}
    neg = frame.filter(frame["label"] == 0.0)
    from_cands = [iidx[i] in cands[uidx[u]] for u, i in neg.select("user_id", "item_id").iter_rows()]
    assert np.mean(from_cands) > 0.4
    # validation = each user's last event (+ its negatives), the rest trains
    assert task.valid["label"].sum() == train.n_users


def test_ctr_rankers_in_the_pipeline_fast_path_and_bundle(ctr_task, world, tmp_path):
    from recstack.pipeline.ctr import CTRRanker, FastCTRRanker, load_ctr_ranker
    from recstack.pipeline.ranker_training import train_pipeline_rankers
    from recstack.serving.bundle import load_bundle, write_bundle

    train, _, task = ctr_task
    small = {"epochs": 2, "batch_size": 256}
    report = train_pipeline_rankers(task, tmp_path / "r", {**small, "dim": 4}, {**small, "dim": 8}, log=lambda m: None)
    assert set(report) == {"coarse_ctr", "fine_ctr"} and report["fine_ctr"]["model"] == "din"
    a = world["assets"]
    fast = load_ctr_ranker("fine_ctr", tmp_path / "r" / "fine_ctr", a.catalog, a.users)
    slow = load_ctr_ranker("fine_ctr", tmp_path / "r" / "fine_ctr", a.catalog, a.users, fast=False)
    assert isinstance(fast, FastCTRRanker) and isinstance(slow, CTRRanker)
    items = np.arange(a.catalog.n_items)
    assert fast.score(None, items, np.zeros(0, np.int64), {}) is None  # cold start: abstains
    for user, hist in ((3, a.users.history(3)), (None, np.array([0, 1, 2])), (5, np.zeros(0, np.int64))):
        np.testing.assert_allclose(fast.score(user, items, hist, {}), slow.score(user, items, hist, {}), atol=1e-5)
    # the DIN split (per-item / per-user tables, history embedded once per request) equals the
    # plain full forward: stored histories, request items on top, long / unknown-item histories
    assert fast.din_tables is not None
    rng = np.random.default_rng(0)
    cases = [(u, a.users.history(u)) for u in range(0, a.users.n_users, 9)]
    cases += [(3, np.concatenate([a.users.history(3), [7, 8]])), (None, rng.integers(0, a.catalog.n_items, 40)),
              (None, np.array([5])), (5, np.zeros(0, np.int64))]
    for user, hist in cases:
        sub = rng.permutation(items)[:50]
        with torch.inference_mode():
            full = torch.sigmoid(fast.module(fast.batch(user, sub, hist)).float()).numpy()
        np.testing.assert_allclose(fast.score(user, sub, hist, {}), full, atol=1e-6)
    # the FM (coarse) scores from per-item tables + one user row equal the full forward and the
    # generic path, also when the user side comes from the memo (second pass)
    fm_fast = load_ctr_ranker("coarse_ctr", tmp_path / "r" / "coarse_ctr", a.catalog, a.users)
    fm_slow = load_ctr_ranker("coarse_ctr", tmp_path / "r" / "coarse_ctr", a.catalog, a.users, fast=False)
    assert fm_fast.fm_tables is not None
    # user side = the user's load-time row (empty history) + the request's pooled history
    for _ in range(2):
        for user, hist in ((3, a.users.history(3)), (None, np.array([0, 1, 2])), (5, np.zeros(0, np.int64)),
                           (3, np.concatenate([a.users.history(3), [7]])), (4, a.users.history(4)[:2]),
                           (None, np.arange(a.catalog.n_items)[::-3])):
            sub = items[::-1][: 37]
            with torch.inference_mode():
                full = torch.sigmoid(fm_fast.module(fm_fast.batch(user, sub, hist)).float()).numpy()
            np.testing.assert_allclose(fm_fast.score(user, sub, hist, {}), full, atol=1e-6)
            np.testing.assert_allclose(fm_fast.score(user, sub, hist, {}), fm_slow.score(user, sub, hist, {}), atol=1e-5)
    cfg = base_config(rankers={"coarse_ctr": {"kind": "ctr", "extra": "coarse_ctr"},
                               "fine_ctr": {"kind": "ctr", "extra": "fine_ctr"}},
                      coarse={"ranker": "coarse_ctr", "keep": 40}, fine={"ranker": "fine_ctr", "keep": 20})
    extras = {n: tmp_path / "r" / n for n in ("coarse_ctr", "fine_ctr")}
    path = write_bundle(tmp_path / "b", PipelineConfig.from_dict(cfg), a.catalog, a.users, a.models,
                        a.indexes, a.matrices, extras, version="ctr")
    b = load_bundle(path)  # round trip: hashes checked, no pickle anywhere
    assert not list(path.rglob("*.pkl")) and (path / "extras" / "fine_ctr" / "weights.safetensors").is_file()
    assert (path / "extras" / "fine_ctr" / "pipeline").is_dir()
    p = b.pipeline
    assert all(isinstance(r, FastCTRRanker) for _, _, r in p.stages)
    req, _ = p.request(user_id="u4", k=5)
    res = p.run(req)
    assert len(res.items) == 5 and res.skipped == [] and res.counts["fine"] <= 20
    assert {"coarse", "fine"} <= set(res.timings_ms)
    for t in res.trace:  # every returned item carries its CTR scores (probabilities)
        assert 0.0 <= t.scores["coarse"] <= 1.0 and 0.0 <= t.scores["fine"] <= 1.0
    fine = np.array([t.scores["fine"] for t in res.trace])
    assert (np.diff(fine) <= 1e-6).all()  # neutral re-ranking: ordered by the DIN score
    anon = p.run(p.request(history=[1000, 1001], k=5)[0])  # anonymous session: scored from its history
    assert anon.skipped == [] and len(anon.items) == 5


# ---- deadlines (issue 22: degrade, do not collapse) -----------------------------------------------
BIG = {"retrieval": 100.0, "coarse": 1400.0, "fine": 1500.0, "rerank": 1000.0, "fallback": 50.0}
# with BIG budgets a request needs, at the start: 1050 ms (popular), 1100 (retrieval), 2500 (coarse),
# 4000 ms (fine); the bands are hundreds of ms wide, so the real stage times (ms) never matter


def test_budget_config_round_trip_and_validation(tmp_path):
    cfg = PipelineConfig.from_dict(base_config(budget_ms=BIG))
    assert cfg.budget_ms.fine == 1500.0
    assert PipelineConfig.load(cfg.save(tmp_path / "p.json")).budget_ms == cfg.budget_ms
    assert PipelineConfig.from_dict(base_config()).budget_ms.rerank > 0  # older configs: defaults
    for bad in ({"fine": -1.0}, {"fine": "fast"}, {"slow": 1.0}):
        with pytest.raises(ValueError, match="budget_ms"):
            PipelineConfig.from_dict(base_config(budget_ms=bad))


def test_ample_deadline_runs_exactly_as_without(pipe, world):
    users = world["assets"].users
    for u in range(0, 90, 9):
        kw = {"user_id": users.ids[u].item(), "k": 8}
        plain = pipe.run(pipe.request(**kw)[0])
        timed = pipe.run(pipe.request(**kw)[0], deadline=time.perf_counter() + 60)
        assert timed.degraded is None and timed.left_ms is None and timed.skipped == plain.skipped == []
        assert timed.items.tolist() == plain.items.tolist()
        assert np.array_equal(timed.scores, plain.scores)
        assert [t.scores for t in timed.trace] == [t.scores for t in plain.trace]


def test_short_deadline_skips_the_costliest_stages_first(world):
    p = build_pipeline(PipelineConfig.from_dict(base_config(budget_ms=BIG)), world["assets"])
    no_fine = build_pipeline(PipelineConfig.from_dict(base_config(budget_ms=BIG, fine=None)), world["assets"])
    assert [p.plan(ms) for ms in (5000, 3000, 2000, 1075, 500)] == [
        None, "skip_fine", "skip_ranking", "popular", "shed"]
    uid = world["assets"].users.ids[4].item()

    def run(left_ms):
        return p.run(p.request(user_id=uid, k=8)[0], deadline=time.perf_counter() + left_ms / 1e3)

    full = run(5000)
    assert full.degraded is None and full.skipped == []
    fine_cut = run(3000)  # coarse fits, fine does not: the answer is the coarse stage's order
    assert fine_cut.degraded == "skip_fine" and fine_cut.skipped == ["fine"] and 2000 < fine_cut.left_ms <= 3000
    assert fine_cut.items.tolist() == no_fine.run(no_fine.request(user_id=uid, k=8)[0]).items.tolist()
    assert all(t.scores["fine"] is None and t.scores["coarse"] is not None for t in fine_cut.trace)
    ranked_cut = run(2000)  # retrieval fits, no ranking stage does: merged retrieval order
    assert ranked_cut.degraded == "skip_ranking" and ranked_cut.skipped == ["coarse", "fine"]
    assert {"ann", "i2i"} & {s for t in ranked_cut.trace for s in t.sources}
    popular = run(1075)  # not even the personalised retrieval: the popular / fresh candidates
    assert popular.degraded == "popular" and popular.skipped == ["coarse", "fine"]
    assert all(set(t.sources) <= {"pop", "fresh"} for t in popular.trace)
    assert "source.ann" not in popular.timings_ms
    for res in (fine_cut, ranked_cut, popular):
        assert len(res.items) == 8 and res.note is None  # still k items
        assert not set(res.items.tolist()) & set(world["assets"].users.history(4).tolist())


def test_a_slow_stage_cuts_the_stages_after_it(world):
    """A ranking stage that overruns (injected: it sleeps 0.2 s) leaves no time for the fine
    stage, which is skipped although the plan at the start had room for it."""
    calls = []

    class Slow:
        name = "slow"

        def score(self, user, items, history, context):
            calls.append(len(items))
            time.sleep(0.2)
            return np.zeros(len(items), np.float32)

    register_ranker("slow_for_deadline", lambda name, spec, ctx: Slow())
    cfg = base_config(budget_ms={"retrieval": 5, "coarse": 10, "fine": 10, "rerank": 5, "fallback": 1},
                      rankers={**base_config()["rankers"], "slow": {"kind": "slow_for_deadline"}},
                      coarse={"ranker": "slow", "keep": 40})
    p = build_pipeline(PipelineConfig.from_dict(cfg), world["assets"])
    req = p.request(user_id=world["assets"].users.ids[2].item(), k=6)[0]
    t0 = time.perf_counter()
    res = p.run(req, deadline=t0 + 0.1)  # 100 ms: the plan fits every stage (30 ms + re-ranking)
    assert calls and res.degraded == "skip_fine" and res.skipped == ["fine"] and res.left_ms < 0
    assert len(res.items) == 6
    assert time.perf_counter() - t0 < 0.2 + 0.15  # the overrun, then only the re-ranking


# ---- dynamic micro-batching (issue 22): run_batch equals run, request by request -------------------
def mixed_requests(p, world, n: int = 24) -> list[Request]:
    """Known users (some with k above default_k or filters), anonymous histories, cold starts."""
    users, raw = world["assets"].users, world["assets"].catalog.ids
    out = []
    for j in range(n):
        if j % 6 == 5:
            out.append(p.request(k=4)[0])
        elif j % 6 == 4:
            out.append(p.request(history=raw[[j, j + 1, j + 2]].tolist(), k=7)[0])
        elif j % 6 == 3:
            out.append(p.request(user_id=users.ids[j].item(), k=25, exclude_items=raw[:5].tolist())[0])
        else:
            out.append(p.request(user_id=users.ids[j].item(), k=8, categories=["g1"] if j % 4 == 0 else ())[0])
    return out


def assert_same_result(batched, single, atol: float = 1e-5) -> None:
    assert not isinstance(batched, Exception), batched
    assert batched.items.tolist() == single.items.tolist()
    np.testing.assert_allclose(batched.scores, single.scores, atol=atol, rtol=0)
    assert [t.sources for t in batched.trace] == [t.sources for t in single.trace]
    assert [t.rule for t in batched.trace] == [t.rule for t in single.trace]
    for bt, st in zip(batched.trace, single.trace, strict=True):
        assert bt.scores.keys() == st.scores.keys()
        for key, v in st.scores.items():
            assert (v is None) == (bt.scores[key] is None)
            if v is not None:
                assert abs(bt.scores[key] - v) <= atol
    assert batched.counts == single.counts and batched.skipped == single.skipped
    assert (batched.note, batched.degraded, batched.cold_start) == (single.note, single.degraded, single.cold_start)


def test_run_batch_equals_run_request_by_request(pipe, world):
    reqs = mixed_requests(pipe, world)
    single = [pipe.run(r) for r in reqs]
    batched = pipe.run_batch(reqs)
    assert len(batched) == len(reqs)
    for b, s in zip(batched, single, strict=True):
        assert_same_result(b, s)
    assert {"source.ann", "coarse", "fine", "rerank", "total"} <= set(batched[0].timings_ms)
    assert pipe.run_batch([]) == []
    assert_same_result(pipe.run_batch(reqs[:1])[0], single[0])  # a batch of one


def test_batched_sources_and_rankers_equal_their_single_calls(pipe, world):
    from recstack.pipeline.rankers import score_many
    from recstack.pipeline.sources import candidates_many

    reqs = mixed_requests(pipe, world)
    for r in reqs:
        r.scale = max(1.0, r.k / pipe.config.default_k)
    for src in pipe.sources:
        for got, req in zip(candidates_many(src, reqs), reqs, strict=True):
            want = src.candidates(req)
            assert got[0].tolist() == want[0].tolist()
            np.testing.assert_allclose(got[1], want[1], atol=1e-5, rtol=0)
    items = [np.asarray(src_items, np.int64) for src_items in
             (np.arange(j % 7, 60, 2) if j % 5 else np.zeros(0, np.int64) for j in range(len(reqs)))]
    for _, _, ranker in pipe.stages:
        args = ([r.user for r in reqs], items, [r.history for r in reqs], [r.context for r in reqs])
        for got, *one in zip(score_many(ranker, *args), *args, strict=True):
            want = ranker.score(*one)
            assert (got is None) == (want is None)
            if want is not None:
                np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_run_batch_isolates_a_failing_request(world):
    """A source that fails for one request (k == 3 here) fails that request only, in the batched
    call (retried request by request) as in the ranking stage."""

    class Picky:
        name = "picky"

        def score(self, user, items, history, context):
            if len(items) and user == 7:
                raise RuntimeError("bad row for user 7")
            return np.zeros(len(items), np.float32)

        def score_batch(self, users, items, histories, contexts):
            if 7 in users:
                raise RuntimeError("one bad row fails the whole batched call")
            return [self.score(*a) for a in zip(users, items, histories, contexts, strict=True)]

    register_ranker("picky_for_batch", lambda name, spec, ctx: Picky())
    cfg = base_config(rankers={**base_config()["rankers"], "picky": {"kind": "picky_for_batch"}},
                      coarse={"ranker": "picky", "keep": 40})
    p = build_pipeline(PipelineConfig.from_dict(cfg), world["assets"])
    users = world["assets"].users
    reqs = [p.request(user_id=users.ids[u].item(), k=5)[0] for u in (2, 7, 9, 3)]
    bad_source = p.sources[1]
    orig = bad_source.candidates

    def candidates(req):
        if req.k == 3:
            raise ValueError("source failure for this request")
        return orig(req)

    bad_source.candidates = candidates
    bad_source.candidates_batch = lambda rs: [candidates(r) for r in rs]
    reqs.append(p.request(user_id=users.ids[11].item(), k=3)[0])
    out = p.run_batch(reqs)
    assert isinstance(out[1], RuntimeError) and "user 7" in str(out[1])
    assert isinstance(out[4], ValueError)
    for j in (0, 2, 3):
        assert_same_result(out[j], p.run(reqs[j]))


def test_run_batch_degrades_each_request_by_its_own_deadline(world):
    """One batch, four deadlines (bands hundreds of ms wide: real stage times never decide):
    each request gets what `run` gives it with the same time left."""
    p = build_pipeline(PipelineConfig.from_dict(base_config(budget_ms=BIG)), world["assets"])
    users = world["assets"].users
    reqs = [p.request(user_id=users.ids[u].item(), k=8)[0] for u in (4, 5, 6, 7)]
    now = time.perf_counter()
    lefts = (5000, 3000, 2000, 1075)
    out = p.run_batch(reqs, [now + ms / 1e3 for ms in lefts])
    assert [r.degraded for r in out] == [None, "skip_fine", "skip_ranking", "popular"]
    for res, req, ms in zip(out, reqs, lefts, strict=True):
        want = p.run(req, deadline=time.perf_counter() + ms / 1e3)
        assert res.items.tolist() == want.items.tolist() and res.skipped == want.skipped
        assert len(res.items) == 8
    assert all(set(t.sources) <= {"pop", "fresh"} for t in out[3].trace)


def test_batched_ctr_rankers_equal_their_single_scores(ctr_task, world, tmp_path):
    """FM (coarse) and DIN (fine) fast paths: one forward for all requests' candidates equals
    each request's own forward (histories of different lengths, anonymous, empty, cold start)."""
    from recstack.pipeline.ctr import load_ctr_ranker
    from recstack.pipeline.ranker_training import train_pipeline_rankers

    _, _, task = ctr_task
    small = {"epochs": 1, "batch_size": 256}
    train_pipeline_rankers(task, tmp_path / "r", {**small, "dim": 4}, {**small, "dim": 8}, log=lambda m: None)
    a = world["assets"]
    rng = np.random.default_rng(3)
    users = [3, None, 5, None, 8, 0, None]
    hists = [a.users.history(3), np.array([0, 1, 2]), np.zeros(0, np.int64), np.zeros(0, np.int64),
             np.concatenate([a.users.history(8), rng.integers(0, a.catalog.n_items, 30)]), a.users.history(0)[:1],
             rng.integers(0, a.catalog.n_items, 3)]
    items = [rng.permutation(a.catalog.n_items)[: 5 + 7 * j] for j in range(len(users))]
    items[2] = np.zeros(0, np.int64)
    for name in ("coarse_ctr", "fine_ctr"):
        r = load_ctr_ranker(name, tmp_path / "r" / name, a.catalog, a.users)
        assert (r.fm_tables if name == "coarse_ctr" else r.din_tables) is not None
        got = r.score_batch(users, items, hists, [{}] * len(users))
        for g, u, it, h in zip(got, users, items, hists, strict=True):
            want = r.score(u, it, h, {})
            assert (g is None) == (want is None)
            if want is not None:
                np.testing.assert_allclose(g, want, atol=1e-6, rtol=0)
        assert got[3] is None  # cold start abstains


@pytest.mark.parametrize("chunk", [1 << 16, 7])
def test_aggregate_rows_batch_is_bit_for_bit(world, monkeypatch, chunk):
    from recstack.pipeline import matrices
    from recstack.pipeline.matrices import aggregate_rows_batch

    monkeypatch.setattr(matrices, "_CHUNK_ENTRIES", chunk)  # 7: one request per chunk
    monkeypatch.setattr(matrices._recent, "cache", None)
    m = world["assets"].matrix("knn")
    rng = np.random.default_rng(0)
    seeds = [rng.integers(0, m.shape[0], n) for n in (1, 5, 3, 12, 1)]
    weights = [(0.9 ** np.arange(len(s))).astype(np.float32) for s in seeds]
    got = aggregate_rows_batch(m, seeds, weights)
    for g, s, w in zip(got, seeds, weights, strict=True):
        want = _aggregate_uncached(m, s, w)
        assert np.array_equal(g, want)
        assert not g.flags.writeable


def _aggregate_uncached(m, seeds, weights):
    from recstack.pipeline.matrices import _aggregate

    return _aggregate(m, np.asarray(seeds, np.int64), np.asarray(weights, np.float32))


def test_run_batch_plans_with_the_batch_size(world):
    """A stage measured at 1 s per request costs a batch of 4 about 4 s: with 5 s left the batch
    skips the fine stage that a lone request (plan: 4 s) would run."""
    p = build_pipeline(PipelineConfig.from_dict(base_config(budget_ms=BIG)), world["assets"])
    users = world["assets"].users
    reqs = [p.request(user_id=users.ids[u].item(), k=8)[0] for u in (4, 5, 6, 7)]
    p.batch_cost_ms["fine"] = 1000.0
    out = p.run_batch(reqs, [time.perf_counter() + 5.0] * 4)
    assert [r.degraded for r in out] == ["skip_fine"] * 4
    p.batch_cost_ms["fine"] = 1000.0
    assert p.run_batch(reqs[:1], [time.perf_counter() + 5.0])[0].degraded is None
    assert p.batch_cost_ms["retrieval"] > 0 and p.batch_cost_ms["rerank"] > 0  # measured as it runs


def test_evaluation_through_run_batch_gives_the_same_metrics(pipe, world):
    test = world["split"].test.csr()
    one = evaluate_pipeline(pipe, test, ks=(5, 10), per_user=True)
    batched = evaluate_pipeline(pipe, test, ks=(5, 10), per_user=True, batch_size=16)
    assert batched["users"] == one["users"] == 90
    for key in ("ndcg@10", "hr@10", "recall@10", "ndcg@5"):
        assert batched[key] == one[key]
        assert np.array_equal(batched["per_user"][key], one["per_user"][key])
