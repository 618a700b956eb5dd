"""Graph-filter CF (GF-CF, BSPM) checked against dense numpy/scipy computations on small data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.linalg import expm

from recstack.data import from_raw
from recstack.models import BSPM, GFCF, Recommender


def small_data(n_users=50, n_items=30, density=0.2, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.random((n_users, n_items)) < density
    m[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    m[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    u, i = np.nonzero(m)
    data = from_raw(u, i)
    # the dense matrix in index order (vocabularies sort raw ids, which are 0..n-1 here)
    x = np.zeros((data.n_users, data.n_items))
    x[data.user, data.item] = 1.0
    return data, x


def dense_filters(x: np.ndarray, rank: int):
    du, di = x.sum(1), x.sum(0)
    rt = x / np.sqrt(du)[:, None] / np.sqrt(di)[None, :]
    p = rt.T @ rt
    w, v = np.linalg.eigh(p)
    v = v[:, np.argsort(-w)[:rank]]
    low = (x / np.sqrt(di)) @ v @ v.T * np.sqrt(di)
    return p, low


def test_gfcf_equals_linear_plus_ideal_low_pass():
    data, x = small_data()
    p, low = dense_filters(x, rank=6)
    model = GFCF(rank=6, beta=0.3, power_iters=40, device="cpu").fit(data)
    got = model.score_all(torch.arange(data.n_users)).numpy()
    np.testing.assert_allclose(got, x @ p + 0.3 * low, atol=2e-4)


def test_bspm_sharpening_matches_matrix_exponential():
    data, x = small_data(seed=1)
    p, low = dense_filters(x, rank=5)
    # many RK4 steps: the sharpened state converges to y0 expm(-T P~)
    model = BSPM(rank=5, beta=0.2, sharpen_time=2.0, sharpen_steps=20, combine="last",
                 power_iters=40, device="cpu").fit(data)
    got = model.score_all(torch.arange(data.n_users)).numpy()
    y0 = x @ p + 0.2 * low
    np.testing.assert_allclose(got, y0 @ expm(-2.0 * p), atol=2e-4)


def test_bspm_time_point_mean_and_blurring_euler_steps():
    data, x = small_data(seed=2)
    p, _ = dense_filters(x, rank=1)
    model = BSPM(rank=0, blur_time=1.0, blur_steps=2, sharpen_time=1.0, sharpen_steps=1,
                 combine="mean", device="cpu").fit(data)
    got = model.score_all(torch.arange(data.n_users)).numpy()
    b1 = x + 0.5 * (x @ p - x)
    b2 = b1 + 0.5 * (b1 @ p - b1)
    f = lambda s: -s @ p  # noqa: E731
    k1 = f(b2); k2 = f(b2 + 0.5 * k1); k3 = f(b2 + 0.5 * k2); k4 = f(b2 + k3)  # noqa: E702
    s1 = b2 + (k1 + 2 * k2 + 2 * k3 + k4) / 6
    np.testing.assert_allclose(got, (b1 + b2 + s1) / 3, atol=2e-4)


def test_bspm_euler_sharpening_is_one_linear_step_per_step():
    data, x = small_data(seed=3)
    p, low = dense_filters(x, rank=4)
    model = BSPM(rank=4, beta=0.2, sharpen_time=2.5, sharpen_steps=2, sharpen_solver="euler",
                 power_iters=40, device="cpu").fit(data)
    got = model.score_all(torch.arange(data.n_users)).numpy()
    y = x @ p + 0.2 * low
    for _ in range(2):
        y = y - 1.25 * (y @ p)
    np.testing.assert_allclose(got, y, atol=2e-4)
    with pytest.raises(ValueError, match="sharpen_solver"):
        BSPM(sharpen_solver="midpoint", device="cpu").fit(data)


def test_bspm_recommend_save_load_roundtrip(tmp_path):
    data, x = small_data(seed=3)
    model = BSPM(rank=4, device="cpu").fit(data)
    items, scores = model.recommend(np.arange(data.n_users), k=5)
    assert not x[np.arange(data.n_users)[:, None], items].any()
    loaded = Recommender.load(model.save(tmp_path / "m"), device="cpu")
    assert isinstance(loaded, BSPM)
    items2, scores2 = loaded.recommend(np.arange(data.n_users), k=5)
    np.testing.assert_array_equal(items, items2)
    np.testing.assert_allclose(scores, scores2, rtol=1e-5)


def test_bspm_rejects_bad_settings():
    data, _ = small_data()
    with pytest.raises(ValueError, match="combine"):
        BSPM(combine="max", device="cpu").fit(data)
    with pytest.raises(ValueError, match="steps"):
        BSPM(sharpen_steps=0, device="cpu").fit(data)


def test_blend_is_weighted_sum_of_standardised_scores_and_roundtrips(tmp_path):
    from recstack.models import EASE, Blend

    data, _ = small_data(seed=4)
    members = [{"model": "gfcf", "params": {"rank": 4}}, {"model": "ease", "params": {"l2": 10.0}}]
    blend = Blend(members=members, weights=[1.0, 0.5], device="cpu").fit(data)
    users = torch.arange(data.n_users)
    a = GFCF(rank=4, device="cpu").fit(data).score_all(users).double().numpy()
    b = EASE(l2=10.0, device="cpu").fit(data).score_all(users).double().numpy()
    z = lambda s: (s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(blend.score_all(users).numpy(), z(a) + 0.5 * z(b), rtol=1e-4, atol=1e-4)
    loaded = Recommender.load(blend.save(tmp_path / "b"), device="cpu")
    np.testing.assert_allclose(loaded.score_all(users).numpy(), blend.score_all(users).numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="weights"):
        Blend(members=members, weights=[1.0], device="cpu").fit(data)
