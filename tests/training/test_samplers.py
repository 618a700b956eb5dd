"""Negative samplers: exclusion, distributions, logQ, hard-negative mining, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.stats import chisquare

from recstack.losses import in_batch_softmax_loss
from recstack.training import (
    HardNegativeSampler,
    InBatchSampler,
    PopularitySampler,
    PositiveSet,
    UniformSampler,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
N_DRAWS = 200_000


def dense_positives(n_users: int = 40, n_items: int = 30, seed: int = 0) -> sp.csr_matrix:
    """Users with many positives (between 50% and all-but-one of the catalogue)."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n_users, n_items), dtype=np.float32)
    for u in range(n_users):
        k = rng.integers(n_items // 2, n_items)  # at most n_items - 1 -> a negative always exists
        rows[u, rng.choice(n_items, size=k, replace=False)] = 1.0
    return sp.csr_matrix(rows)


def score_table(n_users: int, n_items: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n_users, n_items, generator=torch.Generator().manual_seed(seed))


def table_score_fn(table: torch.Tensor):
    def score(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        t = table.to(users.device)
        return t[users.unsqueeze(1).expand_as(items), items]

    return score


# ---- PositiveSet ------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_positive_set_contains_matches_dense(device: str) -> None:
    m = dense_positives()
    ps = PositiveSet(m, device)
    users = torch.arange(m.shape[0]).unsqueeze(1)
    items = torch.arange(m.shape[1]).unsqueeze(0)
    got = ps.contains(users, items)
    assert got.device.type == device
    assert np.array_equal(got.cpu().numpy(), m.toarray() > 0)
    assert ps.degree.cpu().tolist() == m.getnnz(axis=1).tolist()
    assert len(ps) == m.nnz
    # from_pairs with duplicates, empty set
    u, i = m.nonzero()
    ps2 = PositiveSet.from_pairs(np.r_[u, u], np.r_[i, i], *m.shape)
    assert torch.equal(ps2.keys, ps.keys.cpu())
    empty = PositiveSet(sp.csr_matrix((3, 4)))
    assert not empty.contains(torch.tensor([0, 2]), torch.tensor([1, 3])).any()


# ---- exclusion --------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["uniform", "popularity"])
def test_exclusion_never_violated(device: str, kind: str) -> None:
    m = dense_positives()
    n_users, n_items = m.shape
    if kind == "uniform":
        s = UniformSampler(n_items, exclude=m, device=device, seed=0)
    else:
        counts = np.random.default_rng(1).integers(1, 500, n_items)
        s = PopularitySampler(counts, alpha=0.75, exclude=m, device=device, seed=0)
    users = torch.arange(n_users, device=device).repeat(5)
    neg = s.sample(users, 200)
    assert neg.shape == (len(users), 200) and neg.dtype == torch.long and neg.device.type == device
    dense = torch.as_tensor(m.toarray() > 0, device=device)
    assert not dense[users.unsqueeze(1), neg].any()
    assert ((neg >= 0) & (neg < n_items)).all()


@pytest.mark.parametrize("kind", ["uniform", "popularity"])
def test_exact_fallback_when_rejection_gives_up(kind: str) -> None:
    n_items = 50
    m = sp.lil_matrix((3, n_items))
    m[0, :] = 1
    m[0, 17] = 0  # user 0: one negative only
    m[1, :40] = 1  # user 1: popular items taken
    m = sp.csr_matrix(m)
    m.eliminate_zeros()
    if kind == "uniform":
        s = UniformSampler(n_items, exclude=m, seed=3, max_rounds=1)
    else:
        s = PopularitySampler(np.arange(n_items, 0, -1), alpha=1.0, exclude=m, seed=3, max_rounds=1)
    neg = s.sample(torch.tensor([0, 1, 2]), 500)
    assert (neg[0] == 17).all()
    assert (neg[1] >= 40).all()
    # the fallback draws from the renormalised distribution: all 10 free items show up
    assert set(neg[1].tolist()) == set(range(40, 50))


def test_user_with_every_item_raises() -> None:
    m = sp.csr_matrix(np.ones((2, 5)))
    s = UniformSampler(5, exclude=m)
    with pytest.raises(ValueError, match="every item"):
        s.sample(torch.tensor([0, 1]), 3)
    # popularity: zero-count items cannot be drawn, so positives on the rest saturate the user
    m2 = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 0, 0]]))
    p = PopularitySampler([5, 3, 0, 0], exclude=m2)
    with pytest.raises(ValueError, match=r"users \[0\]"):
        p.sample(torch.tensor([0, 1]), 2)
    assert (p.sample(torch.tensor([1]), 10) == 1).all()


# ---- distributions and logQ -------------------------------------------------------------------
def test_uniform_distribution_and_logq() -> None:
    n_items = 100
    s = UniformSampler(n_items, seed=0)
    draws = s.sample(torch.zeros(1000, dtype=torch.long), N_DRAWS // 1000).reshape(-1)
    freq = np.bincount(draws.numpy(), minlength=n_items)
    assert chisquare(freq).pvalue > 1e-3
    assert torch.allclose(s.logq(torch.tensor([0, 5, 99])), torch.full((3,), -np.log(n_items)))


def test_popularity_distribution_and_logq() -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 1000, 60).astype(float)
    counts[[3, 10]] = 0
    alpha = 0.75
    s = PopularitySampler(counts, alpha=alpha, seed=1)
    draws = s.sample(torch.zeros(1, dtype=torch.long), N_DRAWS).reshape(-1).numpy()
    freq = np.bincount(draws, minlength=len(counts))
    p = counts**alpha / (counts**alpha).sum()
    assert freq[3] == 0 and freq[10] == 0  # zero-count items never drawn
    nz = p > 0
    assert chisquare(freq[nz], N_DRAWS * p[nz]).pvalue > 1e-3
    # logq == log-frequency, where an item is drawn often enough to measure it
    logq = s.logq(torch.arange(len(counts))).numpy()
    assert np.allclose(logq[nz], np.log(p[nz]), atol=1e-5)
    well = freq > 1000
    assert np.abs(np.log(freq[well] / N_DRAWS) - logq[well]).max() < 0.1
    # alpha = 0 -> uniform over all items
    u = PopularitySampler(counts, alpha=0.0)
    assert torch.allclose(u.logq(torch.arange(60)), torch.full((60,), -np.log(60)))


def test_per_user_logq_after_exclusion() -> None:
    counts = np.array([40.0, 30, 10, 10, 5, 5])
    m = sp.csr_matrix(np.array([[1, 0, 1, 0, 0, 0]]))
    s = PopularitySampler(counts, alpha=1.0, exclude=m, seed=4)
    draws = s.sample(torch.zeros(1, dtype=torch.long), N_DRAWS).reshape(-1).numpy()
    freq = np.bincount(draws, minlength=6) / N_DRAWS
    p = counts / counts.sum()
    cond = np.where([0, 1, 0, 1, 1, 1], p, 0) / (1 - p[0] - p[2])
    assert np.abs(freq - cond).max() < 5e-3
    lq = s.logq(torch.arange(6).unsqueeze(0), torch.tensor([0])).numpy()[0]
    free = [1, 3, 4, 5]
    assert np.allclose(lq[free], np.log(cond[free]), atol=1e-5)
    # uniform: 1 / (#non-positives)
    us = UniformSampler(6, exclude=m)
    assert torch.allclose(
        us.logq(torch.tensor([[1, 3]]), torch.tensor([0])), torch.full((1, 2), -np.log(4))
    )


def test_in_batch_sampler_logq_and_negatives() -> None:
    m = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 0]]))
    s = InBatchSampler.from_matrix(m)
    counts = np.array([3, 1, 1, 0])
    items, logq = s(torch.tensor([0, 2, 1]))
    assert items.tolist() == [0, 2, 1]
    assert np.allclose(logq.numpy(), np.log(counts[[0, 2, 1]] / 5))
    assert torch.isfinite(s.logq(torch.tensor([3])))  # zero count clamped, stays finite
    assert InBatchSampler.negatives(torch.tensor([5, 6, 7])).tolist() == [[6, 7], [5, 7], [5, 6]]
    # empirical: batch positives drawn from the interactions follow exp(logq)
    u, i = m.nonzero()
    draws = i[np.random.default_rng(0).integers(0, len(i), N_DRAWS)]
    freq = np.bincount(draws, minlength=4)[:3] / N_DRAWS
    assert np.abs(np.log(freq) - s.logq(torch.arange(3)).numpy()).max() < 0.02
    # plugs into the loss
    q, v = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.isfinite(in_batch_softmax_loss(q, v, item_ids=items, logq=logq))


# ---- hard negatives ---------------------------------------------------------------------------
def brute_force_top(scores: np.ndarray, cands: list[int], positives: set[int], n: int) -> list[int]:
    uniq = sorted({c for c in cands if c not in positives}, key=lambda c: -scores[c])
    return uniq[:n]


def test_mine_matches_brute_force() -> None:
    m = sp.random(20, 30, density=0.3, format="csr", random_state=5)
    table = score_table(20, 30)
    hs = HardNegativeSampler(table_score_fn(table), n_candidates=25, n=4, exclude=m)
    users = torch.arange(20)
    cands = torch.randint(0, 30, (20, 25), generator=torch.Generator().manual_seed(0))
    cands[:, :5] = cands[:, 5:10]  # force repeats
    dense = m.toarray() > 0
    got = hs.mine(users, cands, 4)
    for u in range(20):
        pos = set(np.flatnonzero(dense[u]).tolist())
        assert got[u].tolist() == brute_force_top(table[u].numpy(), cands[u].tolist(), pos, 4)
        assert not any(dense[u, c] for c in got[u].tolist())


def test_mine_raises_without_enough_negatives() -> None:
    m = sp.csr_matrix(np.array([[1, 1, 0]]))
    hs = HardNegativeSampler(table_score_fn(score_table(1, 3)), n_candidates=3, n=2, exclude=m)
    with pytest.raises(ValueError, match="fewer than"):
        hs.mine(torch.tensor([0]), torch.tensor([[0, 1, 2]]), 2)


@pytest.mark.parametrize("device", DEVICES)
def test_hard_sample_equals_mining_of_its_candidates(device: str) -> None:
    m = dense_positives(n_users=16, n_items=200, seed=2)
    table = score_table(16, 200, seed=1)
    fn = table_score_fn(table)
    hs = HardNegativeSampler(fn, n_candidates=50, n=5, exclude=m, device=device, seed=7)
    users = torch.arange(16, device=device)
    got = hs.sample(users)
    # same seed -> the same candidates the sampler drew internally
    cands = UniformSampler(200, exclude=m, device=device, seed=7).sample(users, 50)
    dense = m.toarray() > 0
    for u in range(16):
        pos = set(np.flatnonzero(dense[u]).tolist())
        assert got[u].tolist() == brute_force_top(table[u].numpy(), cands[u].tolist(), pos, 5)
    s = table[users.cpu().unsqueeze(1), got.cpu()]
    assert (s[:, :-1] >= s[:, 1:]).all()  # best first


def test_hard_from_topk() -> None:
    m = dense_positives(n_users=10, n_items=30, seed=3)
    m = sp.csr_matrix(np.where(np.arange(30) < 10, m.toarray(), 0))  # leave >= 20 negatives
    m.eliminate_zeros()
    table = score_table(10, 30, seed=2)
    dense = m.toarray() > 0
    users = torch.arange(10)
    exact = HardNegativeSampler(
        table_score_fn(table), n_candidates=6, n=6, exclude=m, from_topk=True
    )
    got = exact.sample(users)
    for u in range(10):
        pos = set(np.flatnonzero(dense[u]).tolist())
        assert got[u].tolist() == brute_force_top(table[u].numpy(), list(range(30)), pos, 6)
    sub = HardNegativeSampler(
        table_score_fn(table), n_candidates=6, n=3, exclude=m, from_topk=True, seed=0
    )
    picked = sub.sample(users)
    assert picked.shape == (10, 3)
    for u in range(10):
        assert set(picked[u].tolist()) <= set(got[u].tolist())
        assert len(set(picked[u].tolist())) == 3
    too_many = HardNegativeSampler(
        table_score_fn(table), n_candidates=25, n=1, exclude=m, from_topk=True
    )
    with pytest.raises(ValueError, match="fewer than"):
        too_many.sample(users)


def test_hard_sampler_is_no_grad() -> None:
    w = torch.randn(5, 4, requires_grad=True)
    emb = torch.randn(12, 4)

    def fn(users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (w[users].unsqueeze(1) * emb[items]).sum(-1)

    out = HardNegativeSampler(fn, n_items=12, n_candidates=8, n=2, seed=0).sample(torch.arange(5))
    assert out.shape == (5, 2) and not out.requires_grad


# ---- determinism ------------------------------------------------------------------------------
def _all_samplers(seed: int | None = None, generator: torch.Generator | None = None):
    m = dense_positives()
    counts = np.arange(1, 31)
    fn = table_score_fn(score_table(40, 30))
    return [
        UniformSampler(30, exclude=m, seed=seed, generator=generator),
        PopularitySampler(counts, exclude=m, seed=seed, generator=generator),
        HardNegativeSampler(fn, n_candidates=10, n=3, exclude=m, seed=seed, generator=generator),
        HardNegativeSampler(
            fn,
            n_candidates=8,
            n=3,
            exclude=sp.csr_matrix((40, 30)),
            from_topk=True,
            seed=seed,
            generator=generator,
        ),
    ]


def _draw(s, users: torch.Tensor) -> torch.Tensor:
    return s.sample(users) if isinstance(s, HardNegativeSampler) else s.sample(users, 20)


def test_determinism_with_seed_and_generator() -> None:
    users = torch.arange(40)
    a = [_draw(s, users) for s in _all_samplers(seed=11)]
    b = [_draw(s, users) for s in _all_samplers(seed=11)]
    c = [_draw(s, users) for s in _all_samplers(seed=12)]
    for x, y, z in zip(a, b, c, strict=True):
        assert torch.equal(x, y)
        assert not torch.equal(x, z)
    # explicit generators
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for s1, s2 in zip(_all_samplers(generator=g1), _all_samplers(generator=g2), strict=True):
        assert torch.equal(_draw(s1, users), _draw(s2, users))
    # per-call generator overrides; global RNG when nothing is given
    s = UniformSampler(30)
    x = s.sample(users, 5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, s.sample(users, 5, generator=torch.Generator().manual_seed(1)))
    torch.manual_seed(3)
    y = s.sample(users, 5)
    torch.manual_seed(3)
    assert torch.equal(y, s.sample(users, 5))


@pytest.mark.parametrize("device", DEVICES)
def test_sample_fixed_marks_exactly_the_draws_left_on_a_positive(device):
    x = dense_positives()
    s = UniformSampler(x.shape[1], exclude=x, device=device, seed=0)
    users = torch.arange(x.shape[0], device=device).repeat(50)
    for rounds in (0, 1, 3):
        items, still = s.sample_fixed(users, 7, rounds=rounds)
        assert items.shape == still.shape == (len(users), 7)
        truth = torch.as_tensor(x.toarray()[users.cpu().numpy()[:, None], items.cpu().numpy()] > 0)
        assert torch.equal(still.cpu(), truth)
    # with more rounds fewer draws stay on a positive (dense users: about 3/4 of items are positives)
    left = [float(s.sample_fixed(users, 7, rounds=r)[1].float().mean()) for r in (0, 4)]
    assert left[0] > 0.4 and left[1] < 0.5 * left[0]


def test_sample_fixed_on_sparse_users_is_uniform_over_non_positives():
    n_items = 50
    x = sp.csr_matrix(([1.0, 1.0], ([0, 0], [3, 7])), shape=(1, n_items))
    s = UniformSampler(n_items, exclude=x, seed=1)
    items, still = s.sample_fixed(torch.zeros(N_DRAWS // 10, dtype=torch.long), 10, rounds=3)
    kept = items[~still]
    assert len(kept) > 0.999 * items.numel()
    counts = np.bincount(kept.numpy(), minlength=n_items)
    assert counts[3] == counts[7] == 0
    free = np.delete(counts, [3, 7])
    assert chisquare(free).pvalue > 1e-3
