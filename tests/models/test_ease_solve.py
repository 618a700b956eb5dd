"""EASE's in-place solve equals the textbook one (issue 21)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import recstack.models.ease as ease_module
from recstack.data import from_raw
from recstack.models import EASE
from recstack.models.ease import gram_into, solve_torch


def _x(n_users: int, n_items: int, density: float, seed: int = 0) -> sp.csr_matrix:
    x = sp.random(n_users, n_items, density=density, format="csr", random_state=seed, dtype=np.float32)
    x.data[:] = 1
    return x


def reference_b(x: sp.csr_matrix, l2: float) -> np.ndarray:
    """Steck's EASE in float64 with a plain inverse: B = I - P diag(1 / diag P)."""
    g = (x.T @ x).toarray().astype(np.float64) + l2 * np.eye(x.shape[1])
    p = np.linalg.inv(g)
    return np.eye(x.shape[1]) - p / np.diag(p)


@pytest.mark.parametrize("l2", [5.0, 500.0])
def test_the_solve_in_place_on_cpu_tensors_equals_the_inverse_based_reference(l2):
    x = _x(400, 300, 0.05)
    ref = reference_b(x, l2)
    g = torch.empty(300, 300)
    ptr = g.data_ptr()
    b = solve_torch(gram_into(x, g, l2))
    assert b.data_ptr() == ptr
    assert np.abs(b.numpy() - ref).max() <= 1e-5 * np.abs(ref).max()
    assert torch.all(b.diagonal() == 0)


def test_gram_is_built_block_by_block_into_numpy_and_torch(monkeypatch):
    monkeypatch.setattr(ease_module, "GRAM_BLOCK_ENTRIES", 7 * 101)  # blocks of 7 rows, the last short
    x = _x(80, 101, 0.1)
    want = (x.T @ x).toarray() + 3.0 * np.eye(101, dtype=np.float32)
    np.testing.assert_array_equal(gram_into(x, np.full((101, 101), np.nan, np.float32), 3.0), want)
    np.testing.assert_array_equal(gram_into(x, torch.full((101, 101), float("nan")), 3.0).numpy(), want)


def test_ease_fit_matches_the_reference_and_has_a_zero_diagonal():
    x = _x(500, 250, 0.04, seed=3).tocoo()
    data = from_raw(x.row, x.col)
    model = EASE(l2=100.0, device="cpu").fit(data)
    ref = reference_b(data.csr(), 100.0)
    b = model.B_.numpy()
    assert b.dtype == np.float32
    assert np.abs(b - ref).max() <= 1e-5 * np.abs(ref).max()
    assert np.all(np.diag(b) == 0)
    # scoring: x_u B
    users = np.arange(10)
    np.testing.assert_allclose(model.score_all(torch.as_tensor(users)).numpy(),
                               data.csr()[users] @ b, rtol=1e-5, atol=1e-6)


def test_a_failed_cholesky_says_increase_l2():
    with pytest.raises(np.linalg.LinAlgError, match="increase l2"):
        solve_torch(torch.from_numpy(-np.eye(4, dtype=np.float32)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fit_equals_the_cpu_fit_and_records_device_memory():
    x = _x(3_000, 2_000, 0.01, seed=4).tocoo()
    data = from_raw(x.row, x.col)
    cpu = EASE(l2=200.0, device="cpu").fit(data)
    gpu = EASE(l2=200.0, device="cuda").fit(data)
    assert gpu.B_.device.type == "cuda"
    scale = cpu.B_.abs().max().item()
    assert (gpu.B_.cpu() - cpu.B_).abs().max().item() <= 1e-4 * scale
    assert torch.all(gpu.B_.diagonal() == 0)
    memory = gpu.fit_info_["memory"]
    unit = 4 * data.n_items**2
    # the device never held more than the estimate (and no more than two dense matrices)
    assert memory["device_peak_gib"] <= memory["device_estimate_gib"] + 1e-3
    assert torch.cuda.max_memory_allocated() <= 2 * unit + 4 * data.n_items * 8192 + (64 << 20)
    items, _ = gpu.recommend_indices(np.arange(5), k=10)
    ref_items, _ = cpu.recommend_indices(np.arange(5), k=10)
    assert (items == ref_items).mean() > 0.9

