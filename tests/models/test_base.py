"""Baselines: each checked against an independent dense numpy computation on small data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recstack.data import from_raw
from recstack.models import EASE, ItemKNN, MostPopular, Recommender, available_models


def random_data(n_users=40, n_items=25, density=0.2, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.random((n_users, n_items)) < density
    m[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # every user has an item
    m[rng.integers(0, n_users, n_items), np.arange(n_items)] = True  # every item has a user
    u, i = np.nonzero(m)
    return from_raw(u, i, timestamp=np.arange(len(u))), m.astype(np.float64)


def test_registry_lists_baselines():
    assert {"pop", "itemknn", "ease"} <= set(available_models())


def test_pop_scores_are_item_counts_and_recommend_excludes_seen():
    data, x = random_data()
    model = MostPopular(device="cpu").fit(data)
    scores = model.score_all(torch.arange(3)).numpy()
    np.testing.assert_allclose(scores[0], x.sum(0))
    items, _ = model.recommend(np.arange(data.n_users), k=5)
    assert not x[np.arange(data.n_users)[:, None], items].any(), "a seen item was recommended"
    # the recommended list equals popularity order among unseen items, ties -> lower index
    u = 0
    unseen = [j for j in sorted(range(data.n_items), key=lambda j: (-x[:, j].sum(), j)) if not x[u, j]]
    assert list(items[u]) == unseen[:5]


def test_ease_matches_closed_form():
    data, x = random_data()
    lam = 3.0
    model = EASE(l2=lam, device="cpu").fit(data)
    g = x.T @ x + lam * np.eye(x.shape[1])
    p = np.linalg.inv(g)
    b = np.eye(x.shape[1]) - p / np.diag(p)[None, :]
    np.testing.assert_allclose(np.diag(b), 0, atol=1e-8)
    expected = x @ b
    got = model.score_all(torch.arange(data.n_users)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_ease_refuses_huge_catalogue_with_clear_message():
    data, _ = random_data()
    with pytest.raises(ValueError, match="max_items"):
        EASE(max_items=10, device="cpu").fit(data)


@pytest.mark.parametrize("k", [3, 100])
def test_itemknn_matches_bruteforce_cosine(k):
    data, x = random_data(seed=1)
    shrink = 2.0
    model = ItemKNN(k=k, shrink=shrink, block=7, device="cpu").fit(data)
    co = x.T @ x
    norms = np.sqrt(x.sum(0))
    sim = co / (norms[:, None] * norms[None, :] + shrink)
    np.fill_diagonal(sim, 0)
    # keep each item's top-k neighbours (ties towards the lower index)
    kept = np.zeros_like(sim)
    for i in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda j: (-sim[i, j], j))[: min(k, sim.shape[1] - 1)]
        kept[i, order] = sim[i, order]
    kept[kept < 0] = 0
    expected = x @ kept
    got = model.score_all(torch.arange(data.n_users)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [MostPopular, ItemKNN, EASE])
def test_save_load_roundtrip_without_pickle(tmp_path, cls):
    data, _ = random_data(seed=2)
    model = cls(device="cpu").fit(data)
    before = model.recommend(np.arange(data.n_users), k=7)
    model.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["config.json", "vocab.item.parquet", "vocab.user.parquet", "weights.safetensors"]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"] == cls.name
    loaded = Recommender.load(tmp_path / "m", device="cpu")
    assert type(loaded) is cls
    after = loaded.recommend(np.arange(data.n_users), k=7)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_allclose(before[1], after[1], rtol=1e-6)


def test_score_pairs_agree_with_score_all():
    data, _ = random_data(seed=3)
    model = EASE(l2=1.0, device="cpu").fit(data)
    rng = np.random.default_rng(0)
    users = rng.integers(0, data.n_users, 50)
    items = rng.integers(0, data.n_items, 50)
    full = model.score_all(torch.arange(data.n_users)).numpy()
    np.testing.assert_allclose(model.score(users, items), full[users, items], rtol=1e-6)


def test_unfitted_and_bad_params_raise():
    with pytest.raises(RuntimeError, match="fit"):
        EASE().recommend(0)
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        EASE().set_params(lamda=3)


# ---- fit takes scipy sparse, pandas / polars / Arrow frames as well as Interactions -----------
def test_fit_on_a_sparse_matrix_recommends_column_indices_for_row_indices():
    import scipy.sparse as sp

    data, x = random_data(seed=4)
    csr = sp.csr_matrix(x)
    direct = EASE(l2=2.0, device="cpu").fit(csr)
    ref = EASE(l2=2.0, device="cpu").fit(data)  # from_raw of the same nonzeros: ids are 0..n-1
    users = np.arange(data.n_users)
    items, scores = direct.recommend(users, k=5)
    ref_items, ref_scores = ref.recommend(users, k=5)
    np.testing.assert_array_equal(items, ref_items)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)
    assert not x[users[:, None], items].any()  # the matrix's nonzeros are the seen items


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow"])
def test_fit_on_a_frame_keeps_raw_ids(kind):
    pd = pytest.importorskip("pandas")
    import polars as pl
    import pyarrow as pa

    data, _ = random_data(seed=5)
    users = np.array([f"user-{u}" for u in data.user], dtype=object)
    items = data.item * 10 + 1000
    cols = {"user_id": users, "item_id": items}
    src = {"pandas": pd.DataFrame, "polars": pl.DataFrame, "arrow": pa.table}[kind](cols)
    model = ItemKNN(device="cpu").fit(src)
    ref = ItemKNN(device="cpu").fit(from_raw(users, items))
    got, _ = model.recommend(["user-3", "user-0"], k=4)
    want, _ = ref.recommend(["user-3", "user-0"], k=4)
    np.testing.assert_array_equal(got, want)
    assert set(got.ravel().tolist()) <= set(items.tolist())


def test_neural_fit_takes_a_matrix_and_a_frame_as_validation_data():
    import polars as pl
    import scipy.sparse as sp

    from recstack.models import MF

    data, x = random_data(seed=6)
    rng = np.random.default_rng(0)
    held = (rng.random(x.shape) < 0.05) & (x == 0)
    kw = dict(dim=8, epochs=2, batch_size=64, n_negatives=8, device="cpu", monitor="recall@5")
    m1 = MF(**kw).fit(sp.csr_matrix(x), valid=sp.csr_matrix(held.astype(np.float32)))
    assert len(m1.train_result_.history) == 2 and "valid_recall@5" in m1.train_result_.history[0]
    u, i = np.nonzero(held)
    m2 = MF(**kw).fit(sp.csr_matrix(x), valid=pl.DataFrame({"user_id": u, "item_id": i}))
    same = ("recall@5", "ndcg@5")  # same seed, same validation pairs: the same figures
    assert [m2.train_result_.best_metrics[k] for k in same] == pytest.approx(
        [m1.train_result_.best_metrics[k] for k in same])
