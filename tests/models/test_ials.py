"""iALS (recstack.models.ials): the CG row solves against exact least squares, the loss going
down every sweep, learning a planted structure, save / load, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recstack.data import from_raw
from recstack.models import ials as ials_module
from recstack.models.ials import IALS, _blocks, _row_reg, solve_side
from recstack.models.pop import MostPopular
from recstack.models.registry import create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _groups(n_users: int = 90, n_items: int = 45, per_user: int = 10, seed: int = 0):
    """Users in three groups, each drawing its items from its own third of the catalogue
    (plus a popular item everyone has): (train Interactions, held-out item per user)."""
    rng = np.random.default_rng(seed)
    third = n_items // 3
    users, items, held = [], [], []
    for u in range(n_users):
        g = u % 3
        chosen = rng.choice(np.arange(g * third, (g + 1) * third), size=per_user + 1, replace=False)
        held.append(int(chosen[-1]))
        for i in [*chosen[:-1].tolist(), 0]:
            users.append(u)
            items.append(i)
    pairs = np.unique(np.array([users, items]).T, axis=0)
    data = from_raw(pairs[:, 0], pairs[:, 1])
    return data, np.array(held)


def _exact(other: np.ndarray, m: sp.csr_matrix, alpha: float, reg: np.ndarray) -> np.ndarray:
    """Row by row, (G + alpha Y_u^T Y_u + lambda_u I)^-1 (1 + alpha) Y_u^T 1 with torch.linalg.solve."""
    y = torch.as_tensor(other, dtype=torch.float64)
    gram = y.T @ y
    out = []
    for u in range(m.shape[0]):
        yu = y[torch.as_tensor(m.indices[m.indptr[u]:m.indptr[u + 1]], dtype=torch.int64)]
        a = gram + alpha * yu.T @ yu + reg[u] * torch.eye(y.shape[1], dtype=torch.float64)
        b = (1.0 + alpha) * yu.sum(0)
        out.append(torch.linalg.solve(a, b))
    return torch.stack(out).numpy()


@pytest.mark.parametrize("scaling", ["none", "frequency"])
def test_cg_run_to_convergence_is_the_exact_least_squares_solution(scaling):
    data, _ = _groups(n_users=12, n_items=24, per_user=5)  # lists of 1 to 12: both product paths
    params = dict(factors=4, cg_steps=40, dtype="float64", alpha=3.0, seed=1, init_std=0.3,
                  regularization=0.1 if scaling == "none" else 0.01, reg_scaling=scaling, reg_exponent=0.5)
    one = IALS(iterations=1, device="cpu", **params).fit(data)
    two = IALS(iterations=2, device="cpu", **params).fit(data)
    m = data.csr()
    reg_u = _row_reg(m, params["regularization"], scaling, 0.5, 3.0)
    reg_i = _row_reg(m.T.tocsr(), params["regularization"], scaling, 0.5, 3.0)
    if scaling == "frequency":  # lambda (|I| + alpha |I_u|)^nu, by hand
        np.testing.assert_allclose(reg_u, 0.01 * (m.shape[1] + 3.0 * np.diff(m.indptr)) ** 0.5)
    # sweep 2's users solve exactly given sweep 1's items; its items given its users
    np.testing.assert_allclose(two.user_factors_.numpy(), _exact(one.item_factors_.numpy(), m, 3.0, reg_u),
                               atol=1e-4)
    np.testing.assert_allclose(two.item_factors_.numpy(),
                               _exact(two.user_factors_.numpy(), m.T.tocsr(), 3.0, reg_i), atol=1e-4)


@pytest.mark.parametrize("short", [0, 100])
def test_blocks_of_any_size_give_the_same_solve(short, monkeypatch):
    """Padding and grouping are bookkeeping only: one row per block = one block for all, with
    the batched matrix products (short=0) and the elementwise ones (short=100) alike."""
    monkeypatch.setattr(ials_module, "SHORT_LISTS", short)
    data, _ = _groups(n_users=30, n_items=15, per_user=4)
    m = data.csr()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(m.shape[0], 5, generator=gen, dtype=torch.float64)
    y = torch.randn(m.shape[1], 5, generator=gen, dtype=torch.float64)
    y = torch.cat([y, y.new_zeros(1, 5)])  # solve_side's padding row
    reg = np.full(m.shape[0], 0.2)
    results = []
    for budget in (1, 7, 10**6):
        blocks = _blocks(m, reg, torch.device("cpu"), torch.float64, budget=budget)
        assert sorted(torch.cat([b.rows for b in blocks]).tolist()) == list(range(m.shape[0]))
        x = x0.clone()
        solve_side(x, y, blocks, alpha=2.0, cg_steps=3)
        results.append(x)
    torch.testing.assert_close(results[0], results[1])
    torch.testing.assert_close(results[0], results[2])


@pytest.mark.parametrize("scaling", ["none", "frequency"])
def test_the_objective_decreases_every_sweep(scaling):
    data, _ = _groups()
    reg = 0.05 if scaling == "none" else 1e-3
    losses = [IALS(factors=8, iterations=k, regularization=reg, reg_scaling=scaling, alpha=10.0,
                   init_std=0.1, device="cpu").fit(data).objective() for k in range(1, 7)]
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses


def test_it_learns_a_planted_structure_better_than_popularity():
    data, held = _groups()
    users = np.arange(data.n_users)

    def hit_rate(model) -> float:
        top, _ = model.recommend_indices(users, k=5)
        truth = data.item_vocab.encode(held)
        return float((top == truth[:, None]).any(1).mean())

    ials = hit_rate(IALS(factors=8, iterations=10, alpha=10.0, device="cpu").fit(data))
    pop = hit_rate(MostPopular(device="cpu").fit(data))
    assert ials > 0.5 and ials > pop + 0.2, (ials, pop)


def test_save_load_round_trip(tmp_path):
    data, _ = _groups()
    model = IALS(factors=6, iterations=3, reg_scaling="frequency", regularization=1e-3, device="cpu").fit(data)
    model.save(tmp_path / "m")
    loaded = IALS.load(tmp_path / "m", device="cpu")
    assert loaded.get_params() == model.get_params()
    users = torch.arange(data.n_users)
    torch.testing.assert_close(loaded.score_all(users), model.score_all(users), rtol=0, atol=0)
    assert loaded.objective() == pytest.approx(model.objective())


@pytest.mark.parametrize("key,value,words", [
    ("factors", 0, "factors"), ("regularization", -1.0, "regularization"), ("alpha", -0.5, "alpha"),
    ("cg_steps", 0, "cg_steps"), ("reg_scaling", "l2", "reg_scaling"), ("reg_exponent", 2.0, "reg_exponent"),
    ("dtype", "float16", "dtype"), ("iterations", -1, "iterations"),
])
def test_bad_hyper_parameters_are_one_line_errors(key, value, words):
    with pytest.raises(ValueError, match=words) as e:
        create_model("ials", **{key: value})
    assert "\n" not in str(e.value)
