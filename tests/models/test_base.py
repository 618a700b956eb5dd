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
