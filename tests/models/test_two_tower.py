"""Two-tower and YouTube-DNN: exact checks of the plumbing against independent computations,
and small planted data sets the models must learn. (The feature encoders and histories they
are built on are tested in tests/features/test_entity_features.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recstack.data import from_raw
from recstack.data.dataset import FeatureTable
from recstack.models import Recommender
from recstack.models.two_tower import TwoTower
from recstack.models.youtube_dnn import YouTubeDNN

FAST = dict(dim=16, tower=(32,), id_dim=16, history_dim=16, batch_size=128, lr=5e-3,
            device="cpu", progress=False)


@pytest.fixture(autouse=True)
def _few_threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    yield
    torch.set_num_threads(n)


# ---- planted data: preference = user group matches item kind --------------------------------------
def planted(n_users=90, n_items=30, per_user=8, seed=0):
    rng = np.random.default_rng(seed)
    ugroup, igroup = np.arange(n_users) % 3, np.arange(n_items) % 3
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(np.flatnonzero(igroup == ugroup[u]), per_user, replace=False)
                            for u in range(n_users)])
    data = from_raw(users, items, timestamp=rng.permutation(len(users)))
    names = np.array(["a", "b", "c"])
    ig = igroup[data.item_vocab.raw]
    odd = (data.item_vocab.raw % 2).astype(np.int64)
    tag_off = np.arange(0, 2 * n_items + 1, 2)
    tag_val = np.stack([ig, 3 + odd], 1).ravel()  # tags: the kind's name and "odd"/"even"
    data.user_features = FeatureTable(
        n=n_users, categorical={"group": (ugroup[data.user_vocab.raw], names)},
        numeric={"age": rng.normal(30, 5, n_users).astype(np.float32)})
    data.item_features = FeatureTable(
        n=n_items, categorical={"kind": (ig, names)},
        multihot={"tags": (tag_off, tag_val, np.array(["a", "b", "c", "even", "odd"]))},
        numeric={"price": rng.normal(10, 2, n_items).astype(np.float32)})
    return data, ig


@pytest.fixture(scope="module")
def planted_data():
    return planted()


@pytest.fixture(scope="module")
def feature_model(planted_data):
    data, _ = planted_data
    return TwoTower(epochs=30, id_dropout=0.3, **FAST).fit(data)


def test_two_tower_cold_user_from_features_gets_matching_items(feature_model, planted_data):
    _, kind = planted_data
    for g, name in enumerate("abc"):
        items, scores = feature_model.recommend_new_user({"group": name, "age": 31.0}, k=10)
        assert (kind[items] == g).all(), f"group {name}: kinds {kind[items]}"
        assert np.all(np.diff(scores) <= 0)


def test_two_tower_cold_user_from_history(planted_data):
    data, kind = planted_data
    model = TwoTower(epochs=30, use_history=True, max_history=5, use_user_id=False,
                     use_user_features=False, **FAST).fit(data)
    for g in range(3):
        history = list(np.flatnonzero(kind == g)[:3])
        items, _ = model.recommend_new_user(history_items=history, k=5)
        assert not set(items) & set(history)
        assert (kind[items] == g).mean() >= 0.8, f"kind {g}: {kind[items]}"
    with pytest.raises(ValueError, match="without user features"):
        model.recommend_new_user({"group": "a"})


def test_two_tower_new_items_from_features(feature_model, planted_data):
    data, kind = planted_data
    model = TwoTower.load(_save(feature_model), device="cpu")  # leave the shared fixture alone
    new = model.add_items({"kind": ["b", "a"], "tags": [["b"], ["a"]], "price": [10.0, 10.0]})
    assert list(new) == [data.n_items, data.n_items + 1]
    items, _ = model.recommend_new_user({"group": "b"}, k=11)
    assert new[0] in items and new[1] not in items
    # training users of group b: the new b item is recommended, never a seen item
    users = np.flatnonzero(data.user_features.categorical["group"][0] == 1)
    top, _ = model.recommend(users, k=5)
    assert not model.seen_[users[:, None], top].toarray().any()
    assert (top == new[0]).any(1).mean() > 0.5


def test_two_tower_new_items_by_category_fallback(planted_data):
    data, kind = planted_data
    model = TwoTower(epochs=2, use_item_features=False, use_user_features=False, **FAST).fit(data)
    trained = model.item_embeddings()
    got = model.new_item_embeddings({"kind": ["b", "zzz"]}, by_category="kind")
    torch.testing.assert_close(got[0], F.normalize(trained[kind == 1].mean(0), dim=0))
    torch.testing.assert_close(got[1], F.normalize(trained.mean(0), dim=0))  # unseen value
    # multi-hot field: average over the new item's values of the per-value means
    odd = data.item_vocab.raw % 2 == 1
    got = model.new_item_embeddings({"tags": [["a", "odd"]]}, by_category="tags")
    want = (trained[kind == 0].mean(0) + trained[odd].mean(0)) / 2
    torch.testing.assert_close(got[0], F.normalize(want, dim=0))
    with pytest.raises(ValueError, match="by_category"):
        model.new_item_embeddings({"kind": ["b"]})


# ---- the training objective -----------------------------------------------------------------------
def test_in_batch_loss_applies_logq_and_masks_duplicates(planted_data):
    data, _ = planted_data
    model = TwoTower(epochs=1, temperature=0.2, **FAST).fit(data)
    m = model.module_
    u = torch.tensor([0, 1, 2, 3, 4, 5])
    i = torch.tensor([0, 1, 0, 2, 1, 0])  # duplicates of the positives within the batch
    loss = model._loss({"user": u, "item": i}, torch.Generator())
    with torch.no_grad():  # independent float64 reference
        q = m.query(m.user_features(u), None).double()
        v = m.item(m.item_features(i)).double()
        counts = np.bincount(data.item, minlength=data.n_items)
        logits = (q @ v.T).numpy() / 0.2 - np.log(counts[i.numpy()] / counts.sum())[None, :]
        ids = i.numpy()
        dup = (ids[:, None] == ids[None, :]) & ~np.eye(len(ids), dtype=bool)
        logits[dup] = -np.inf
        ref = np.mean(np.log(np.exp(logits).sum(1)) - np.diag(logits))
    assert abs(loss.item() - ref) < 1e-4
    model.logq = False
    assert abs(model._loss({"user": u, "item": i}, torch.Generator()).item() - ref) > 1e-3


@pytest.mark.parametrize("loss", ["mixed", "sampled", "bpr"])
def test_other_losses_train(planted_data, loss):
    data, _ = planted_data
    model = TwoTower(epochs=3, loss=loss, n_negatives=8, sampler="popularity", **FAST).fit(data)
    hist = model.train_result_.history
    assert all(np.isfinite(h["loss"]) for h in hist) and hist[-1]["loss"] < hist[0]["loss"]


# ---- exports and persistence ------------------------------------------------------------------------
def test_exported_embeddings_match_score_all_and_cache_follows_weights(planted_data):
    model = TwoTower(epochs=1, use_history=True, **FAST).fit(planted_data[0])
    users = torch.arange(7)
    emb = model.item_embeddings()
    torch.testing.assert_close(model.user_embeddings(users) @ emb.T, model.score_all(users))
    m = model.module_
    with torch.no_grad():
        fresh = m.item(m.item_features(torch.arange(model.n_items_)))
    torch.testing.assert_close(emb, fresh)
    batch = {"user": users, "item": users, "hist_end": model.module_.history.indptr[users]}
    model._loss(batch, torch.Generator())  # a training step begins
    with torch.no_grad():
        m.item_tower[0].weight.mul_(2.0)
        fresh = m.item(m.item_features(torch.arange(model.n_items_)))
    torch.testing.assert_close(model.item_embeddings(), fresh)
    assert not torch.allclose(model.item_embeddings(), emb)


def _save(model: Recommender) -> str:
    import tempfile

    return str(model.save(tempfile.mkdtemp()))


def test_two_tower_save_load_round_trip(planted_data):
    data, _ = planted_data
    model = TwoTower(epochs=3, use_history=True, id_dropout=0.2, **FAST).fit(data)
    model.add_items({"kind": ["c"], "price": [3.0]})
    users = np.arange(data.n_users)
    before = model.recommend(users, k=8)
    cold = model.recommend_new_user({"group": "a"}, [0, 3], k=5)
    loaded = Recommender.load(_save(model), device="cpu")
    assert isinstance(loaded, TwoTower) and loaded.n_items_ == data.n_items + 1
    after = loaded.recommend(users, k=8)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_allclose(before[1], after[1], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cold[0], loaded.recommend_new_user({"group": "a"}, [0, 3], k=5)[0])


# ---- YouTube DNN ----------------------------------------------------------------------------------
def reference_histories(users, items, times, max_len):
    """Per interaction: the user's items with a strictly earlier time (ties by row), last max_len."""
    out = []
    for r in range(len(users)):
        earlier = sorted((times[s], s) for s in range(len(users)) if users[s] == users[r] and times[s] < times[r])
        hist = [items[s] + 1 for _, s in earlier][-max_len:]
        out.append([0] * (max_len - len(hist)) + hist)
    return np.array(out)


def test_youtube_dnn_histories_hold_only_earlier_items():
    users = np.array([0, 0, 1, 0, 0, 1, 2, 0, 1, 0])
    items = np.array([5, 1, 2, 3, 1, 4, 0, 2, 5, 4])
    times = np.array([5, 3, 1, 3, 9, 1, 7, 2, 0, 11])  # ties at 3 (user 0) and 1 (user 1)
    data = from_raw(users, items, timestamp=times)  # raw ids == indices here
    model = YouTubeDNN(max_history=3, device="cpu", progress=False)
    model.device_, model.n_items_, model.seen_ = torch.device("cpu"), data.n_items, data.csr()
    model.module_ = model._build(model._setup(data))
    ex = model._examples(data)  # exactly what training consumes
    got = model.module_.history.bag(ex["user"], ex["hist_end"]).numpy()
    np.testing.assert_array_equal(got, reference_histories(users, items, times, 3))
    np.testing.assert_array_equal(ex["item"].numpy(), items)
    # serving: the whole history, most recent last
    serve = model.module_.history.bag(torch.tensor([0, 1, 2])).numpy()
    np.testing.assert_array_equal(serve, [[6, 2, 5], [6, 3, 5], [0, 0, 1]])  # item + 1

    # at most k examples per user, each keeping its own (full-sequence) history
    capped = YouTubeDNN(max_history=3, examples_per_user=2, device="cpu", progress=False)
    capped.device_, capped.n_items_, capped.seen_ = torch.device("cpu"), data.n_items, data.csr()
    capped.module_ = capped._build(capped._setup(data))
    ex = capped._examples(data)
    assert np.bincount(ex["user"].numpy()).tolist() == [2, 2, 1]
    ref = {(u, i, tuple(h)) for u, i, h in zip(users, items, reference_histories(users, items, times, 3).tolist(),
                                               strict=True)}
    bags = capped.module_.history.bag(ex["user"], ex["hist_end"]).tolist()
    assert {(u, i, tuple(h)) for u, i, h in zip(ex["user"].tolist(), ex["item"].tolist(), bags, strict=True)} <= ref


def test_youtube_dnn_learns_exports_and_round_trips(planted_data):
    data, kind = planted_data
    model = YouTubeDNN(dim=16, tower=(32,), history_dim=16, max_history=5, n_negatives=10,
                       use_example_age=True, epochs=30, batch_size=128, lr=5e-3, device="cpu",
                       progress=False).fit(data)
    users = torch.arange(data.n_users)
    torch.testing.assert_close(model.user_embeddings(users) @ model.item_embeddings().T,
                               model.score_all(users))
    for g, name in enumerate("abc"):
        items, _ = model.recommend_new_user({"group": name}, list(np.flatnonzero(kind == g)[:2]), k=5)
        assert (kind[items] == g).mean() >= 0.8, f"group {name}: {kind[items]}"
    loaded = Recommender.load(_save(model), device="cpu")
    np.testing.assert_array_equal(model.recommend(users.numpy(), k=5)[0],
                                  loaded.recommend(users.numpy(), k=5)[0])


def test_item_text_feeds_the_content_encoders_vectors(planted_data, monkeypatch):
    """`item_text=True` asks `recstack.content` for every item's sentence embedding and feeds it
    to the item tower (the encoder itself is optional: a deterministic stand-in here)."""
    import recstack.content as content

    data, _ = planted_data
    seen = {}

    def fake_vectors(d, cache_dir=None, fields=None):
        seen["n"] = d.n_items
        rng = np.random.default_rng(0)
        return rng.normal(size=(d.n_items, 6)).astype(np.float32)

    monkeypatch.setattr(content, "item_content_vectors", fake_vectors)
    model = TwoTower(epochs=1, item_text=True, **FAST).fit(data)
    assert seen["n"] == data.n_items
    dense = [d["name"] for d in model.meta_["item_schema"]["dense"]]
    assert dense == ["text"]  # a dense input of the item tower
    plain = TwoTower(epochs=1, **FAST).fit(data)
    assert [d["name"] for d in plain.meta_["item_schema"]["dense"]] == []
