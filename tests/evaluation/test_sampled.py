"""Sampled-negatives protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from reference_ties import ref_tie_key

from recstack.evaluation import (
    RANKING_METRICS,
    embedding_pair_scorer,
    evaluate_ranking,
    evaluate_sampled,
    sample_negatives,
)
from recstack.evaluation import sampled as sampled_mod


def random_binary(rng: np.random.Generator, shape, density: float) -> sp.csr_matrix:
    return sp.csr_matrix((rng.random(shape) < density).astype(np.float32))


def make_data(seed: int = 0, n_users: int = 30, n_items: int = 200):
    rng = np.random.default_rng(seed)
    test = random_binary(rng, (n_users, n_items), 0.03)
    exclude = random_binary(rng, (n_users, n_items), 0.1)
    exclude = sp.csr_matrix(exclude - exclude.multiply(test))
    return test, exclude


class Recorder:
    """pair_score_fn wrapper remembering every call's inputs."""

    def __init__(self, score_matrix: torch.Tensor):
        self.s = score_matrix
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        self.calls.append((users.cpu().numpy().copy(), items.cpu().numpy().copy()))
        return self.s[users.unsqueeze(1), items]


def test_keys_prefixed_and_protocol():
    test, exclude = make_data()
    scores = torch.rand(30, 200, generator=torch.Generator().manual_seed(0))
    res = evaluate_sampled(Recorder(scores), test, exclude, n_negatives=20, ks=(1, 5), device="cpu")
    assert res.protocol == "sampled(20,uniform)"
    assert set(res.per_user) == {f"sampled_{m}@{k}" for m in RANKING_METRICS for k in (1, 5)}
    assert all(key.startswith("sampled_") for key in res.summary())
    full = evaluate_ranking(lambda u: scores[u], test, exclude, device="cpu")
    assert not any(key.startswith("sampled_") for key in full.per_user)


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
def test_negatives_avoid_test_and_exclude(sampling):
    test, exclude = make_data(1)
    rec = Recorder(torch.rand(30, 200, generator=torch.Generator().manual_seed(1)))
    pop = np.arange(200, dtype=np.float64) % 7  # some items have popularity 0
    res = evaluate_sampled(
        rec,
        test,
        exclude,
        n_negatives=50,
        sampling=sampling,
        item_popularity=pop if sampling == "popularity" else None,
        device="cpu",
        memory_budget_mb=0.05,  # several scoring calls
    )
    assert len(rec.calls) > 1
    seen_pairs = []
    for users, items in rec.calls:
        assert items.shape[1] == 51
        for u, row in zip(users, items, strict=True):
            pos, negs = row[0], row[1:]
            assert test[u, pos] != 0
            banned = set(test[u].indices) | set(exclude[u].indices)
            assert not banned & set(negs.tolist())
            assert len(set(negs.tolist())) == 50  # distinct
            if sampling == "popularity":
                assert (pop[negs] > 0).all()
            seen_pairs.append((u, pos))
    assert sorted(seen_pairs) == sorted(zip(*test.nonzero(), strict=True))
    assert res.protocol == f"sampled(50,{sampling})"


def test_perfect_scorer():
    test, exclude = make_data(2)
    perfect = torch.from_numpy(test.toarray())  # 1 for test items, 0 elsewhere
    ks = (1, 5, 10)
    res = evaluate_sampled(Recorder(perfect), test, exclude, n_negatives=30, ks=ks, device="cpu")
    for k in ks:
        for m in RANKING_METRICS:
            # precision@K = hits/K and there is a single target per list
            expected = 1.0 / k if m == "precision" else 1.0
            np.testing.assert_allclose(res.per_user[f"sampled_{m}@{k}"], expected, err_msg=m)
    res1 = evaluate_sampled(Recorder(perfect), test, exclude, n_negatives=30, ks=(1,), device="cpu")
    assert all(v == 1.0 for v in res1.summary().values())


def test_matches_slow_reference_on_captured_candidates():
    test, exclude = make_data(3)
    g = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 3, (30, 200), generator=g).float()  # many ties
    rec = Recorder(scores)
    ks = (1, 3, 10)
    res = evaluate_sampled(rec, test, exclude, n_negatives=9, ks=ks, device="cpu")
    per_user: dict[int, list[dict[str, float]]] = {}
    for users, items in rec.calls:
        for u, row in zip(users, items, strict=True):
            s = scores[u].tolist()
            ranked = sorted(row.tolist(), key=lambda i: (-s[i], -ref_tie_key(int(u), i)))
            rank = ranked.index(row[0]) + 1
            vals = {}
            for k in ks:
                hit = rank <= k
                vals[f"sampled_recall@{k}"] = float(hit)
                vals[f"sampled_hr@{k}"] = float(hit)
                vals[f"sampled_precision@{k}"] = hit / k
                vals[f"sampled_ndcg@{k}"] = hit / math.log2(rank + 1)
                vals[f"sampled_mrr@{k}"] = hit / rank
                vals[f"sampled_map@{k}"] = hit / rank
            per_user.setdefault(int(u), []).append(vals)
    for row, u in enumerate(res.users):
        for key in res.per_user:
            expected = np.mean([v[key] for v in per_user[int(u)]])
            assert res.per_user[key][row] == pytest.approx(expected, abs=1e-12), key


def test_deterministic_and_budget_independent():
    test, exclude = make_data(4)
    fn = embedding_pair_scorer(torch.randn(30, 8), torch.randn(200, 8))
    a = evaluate_sampled(fn, test, exclude, n_negatives=40, seed=7, device="cpu")
    b = evaluate_sampled(
        fn, test, exclude, n_negatives=40, seed=7, device="cpu", memory_budget_mb=0.01
    )
    c = evaluate_sampled(fn, test, exclude, n_negatives=40, seed=8, device="cpu")
    for key in a.per_user:
        np.testing.assert_array_equal(a.per_user[key], b.per_user[key])
    assert any(not np.array_equal(a.per_user[k], c.per_user[k]) for k in a.per_user)


def test_popularity_default_from_exclude_and_errors():
    test, exclude = make_data(5)
    fn = embedding_pair_scorer(torch.randn(30, 4), torch.randn(200, 4))
    res = evaluate_sampled(fn, test, exclude, n_negatives=10, sampling="popularity", device="cpu")
    assert res.protocol == "sampled(10,popularity)"
    with pytest.raises(ValueError, match="popularity"):
        evaluate_sampled(fn, test, None, sampling="popularity", device="cpu")
    with pytest.raises(ValueError, match="sampling"):
        evaluate_sampled(fn, test, exclude, sampling="bogus", device="cpu")
    with pytest.raises(ValueError, match="fewer than"):
        evaluate_sampled(fn, test, exclude, n_negatives=190, device="cpu")


@pytest.mark.parametrize("rounds", [0, 1, 64])
def test_sampler_exhausted_pool_is_exact(rounds, monkeypatch):
    # Each row may use exactly 10 of 12 items; with few rejection rounds the exact
    # per-row fallback takes over and must still return distinct allowed items.
    monkeypatch.setattr(sampled_mod, "_MAX_ROUNDS", rounds)
    forbidden = sp.csr_matrix(np.array([[1, 1] + [0] * 10, [0] * 10 + [1, 1]]))
    forbidden.sort_indices()
    rows = np.array([0, 1, 0, 1, 0])
    negs = sample_negatives(rows, forbidden, 10, np.random.default_rng(0))
    for r, row in zip(rows, negs, strict=True):
        assert sorted(row.tolist()) == sorted(set(range(12)) - set(forbidden[r].indices))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    test, exclude = make_data(6)
    scores = torch.randint(0, 3, (30, 200), generator=torch.Generator().manual_seed(6)).float()
    cpu = evaluate_sampled(Recorder(scores), test, exclude, n_negatives=20, device="cpu")
    gpu = evaluate_sampled(Recorder(scores.cuda()), test, exclude, n_negatives=20, device="cuda")
    for key in cpu.per_user:
        np.testing.assert_allclose(gpu.per_user[key], cpu.per_user[key], atol=1e-12)


def test_constant_scorer_gets_chance_rank_among_sampled_negatives():
    # A negative tied with the positive is ahead of it by the tie hash, not by item index:
    # a constant scorer puts the positive at a uniform rank among the N + 1 candidates.
    n_users, n_items, n_neg, k = 3000, 500, 49, 10
    users = np.arange(n_users)
    test = sp.csr_matrix((np.ones(n_users), (users, users % 3)), shape=(n_users, n_items))

    def constant(u: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return torch.zeros(items.shape)

    res = evaluate_sampled(constant, test, n_negatives=n_neg, ks=(k,), device="cpu")
    assert res.ties == "random(seed=0)"
    p = k / (n_neg + 1)
    se = math.sqrt(p * (1 - p) / n_users)
    assert abs(res.summary()[f"sampled_hr@{k}"] - p) <= 3 * se
    # the old rule: the positives (items 0-2) beat almost every sampled negative
    old = evaluate_sampled(constant, test, n_negatives=n_neg, ks=(k,), device="cpu", ties="index")
    assert old.summary()[f"sampled_hr@{k}"] == 1.0
