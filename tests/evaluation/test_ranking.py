"""Full-ranking evaluation: hand-computed cases, a slow reference, ties, chunking."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_ties import ref_tie_key

from recstack.evaluation import (
    RANKING_METRICS,
    RankingResult,
    embedding_scorer,
    evaluate_ranking,
    topk,
)
from recstack.evaluation import ranking as ranking_mod

# ---------------------------------------------------------------------------------------
# Independent slow reference: plain Python, sorted() with key (-score, item).
# ---------------------------------------------------------------------------------------


def ref_ranking(
    scores: list[float], excluded: set[int], user: int = 0, ties: str = "index", seed: int = 0
) -> list[int]:
    """Items ranked by score desc, then the tie rule; excluded items removed.

    ``index``: lower index first; ``random``: larger :func:`ref_tie_key` first.
    """
    cand = [i for i in range(len(scores)) if i not in excluded]
    if ties == "index":
        return sorted(cand, key=lambda i: (-scores[i], i))
    return sorted(cand, key=lambda i: (-scores[i], -ref_tie_key(user, i, seed)))


def ref_metrics(ranked: list[int], targets: set[int], k: int) -> dict[str, float]:
    top = ranked[:k]
    hits = [item in targets for item in top]
    n_hits = sum(hits)
    dcg = sum(1.0 / math.log2(r + 2) for r, h in enumerate(hits) if h)
    idcg = sum(1.0 / math.log2(r + 2) for r in range(min(len(targets), k)))
    mrr = 0.0
    for r, h in enumerate(hits):
        if h:
            mrr = 1.0 / (r + 1)
            break
    ap, seen = 0.0, 0
    for r, h in enumerate(hits):
        if h:
            seen += 1
            ap += seen / (r + 1)
    return {
        "recall": n_hits / len(targets),
        "hr": float(n_hits > 0),
        "precision": n_hits / k,
        "ndcg": dcg / idcg,
        "mrr": mrr,
        "map": ap / min(len(targets), k),
    }


def ref_evaluate(
    score_matrix: np.ndarray, test: sp.csr_matrix, exclude: sp.csr_matrix | None, ks,
    ties: str = "random", seed: int = 0,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    users = [u for u in range(test.shape[0]) if test[u].nnz > 0]
    out: dict[str, list[float]] = {}
    for u in users:
        targets = set(test[u].indices.tolist())
        excluded = set(exclude[u].indices.tolist()) if exclude is not None else set()
        ranked = ref_ranking(score_matrix[u].tolist(), excluded, u, ties, seed)
        for k in ks:
            for name, v in ref_metrics(ranked, targets, k).items():
                out.setdefault(f"{name}@{k}", []).append(v)
    return np.array(users), {k: np.array(v) for k, v in out.items()}


def matrix_scorer(score_matrix: np.ndarray):
    """score_fn over a fixed dense score matrix (advanced indexing returns a copy)."""
    s = torch.as_tensor(score_matrix, dtype=torch.float32)

    def fn(users: torch.Tensor) -> torch.Tensor:
        return s.to(users.device)[users]

    return fn


def random_binary(rng: np.random.Generator, shape, density: float) -> sp.csr_matrix:
    return sp.csr_matrix((rng.random(shape) < density).astype(np.float32))


# ---------------------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------------------

# user 0: ranking 0 (.9), 2 (.8), 4 (.7), 3 (.3), 5 (.2), 1 (.1); T = {0, 4}
# user 1: item 1 (.9) excluded -> ranking 3 (.8), 0 (.5), 2 (.4), 5 (.3), 4 (.1); T = {2, 5}
# user 2: no test items -> not evaluated
HAND_SCORES = np.array(
    [
        [0.9, 0.1, 0.8, 0.3, 0.7, 0.2],
        [0.5, 0.9, 0.4, 0.8, 0.1, 0.3],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    ]
)
HAND_TEST = sp.csr_matrix(np.array([[1, 0, 0, 0, 1, 0], [0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]]))
HAND_EXCL = sp.csr_matrix(np.array([[0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0]]))
IDCG2 = 1.0 + 1.0 / math.log2(3)  # two ideal hits at ranks 1, 2

HAND_EXPECTED = {
    # user 0, K=1: hit at rank 1 -> recall 1/2, precision 1, ndcg 1/1, mrr 1, map 1/min(2,1)
    (0, 1): dict(recall=0.5, hr=1.0, precision=1.0, ndcg=1.0, mrr=1.0, map=1.0),
    # user 0, K=3: hits at ranks 1 and 3 -> ndcg (1 + 1/log2 4)/IDCG2, map (1/1 + 2/3)/2
    (0, 3): dict(
        recall=1.0,
        hr=1.0,
        precision=2 / 3,
        ndcg=(1.0 + 1.0 / math.log2(4)) / IDCG2,
        mrr=1.0,
        map=(1.0 + 2 / 3) / 2,
    ),
    # user 0, K=5: same hits; precision 2/5, the rest unchanged
    (0, 5): dict(
        recall=1.0,
        hr=1.0,
        precision=2 / 5,
        ndcg=(1.0 + 1.0 / math.log2(4)) / IDCG2,
        mrr=1.0,
        map=(1.0 + 2 / 3) / 2,
    ),
    # user 1, K=1: item 3 is not a target -> all zero
    (1, 1): dict(recall=0.0, hr=0.0, precision=0.0, ndcg=0.0, mrr=0.0, map=0.0),
    # user 1, K=3: hit at rank 3 (item 2) -> ndcg (1/log2 4)/IDCG2, mrr 1/3, map (1/3)/2
    (1, 3): dict(recall=0.5, hr=1.0, precision=1 / 3, ndcg=0.5 / IDCG2, mrr=1 / 3, map=(1 / 3) / 2),
    # user 1, K=5: hits at ranks 3 and 4 -> ndcg (1/2 + 1/log2 5)/IDCG2, map (1/3 + 2/4)/2
    (1, 5): dict(
        recall=1.0,
        hr=1.0,
        precision=2 / 5,
        ndcg=(0.5 + 1.0 / math.log2(5)) / IDCG2,
        mrr=1 / 3,
        map=(1 / 3 + 2 / 4) / 2,
    ),
}


def test_hand_computed_metrics():
    res = evaluate_ranking(
        matrix_scorer(HAND_SCORES), HAND_TEST, HAND_EXCL, ks=(1, 3, 5), device="cpu"
    )
    assert isinstance(res, RankingResult)
    assert res.protocol == "full"
    np.testing.assert_array_equal(res.users, [0, 1])
    assert set(res.per_user) == {f"{m}@{k}" for m in RANKING_METRICS for k in (1, 3, 5)}
    for (row, k), expected in HAND_EXPECTED.items():
        for name, value in expected.items():
            got = res.per_user[f"{name}@{k}"][row]
            assert got == pytest.approx(value, abs=1e-12), (row, k, name)
    summary = res.summary()
    assert summary["ndcg@3"] == pytest.approx(((1.5 / IDCG2) + 0.5 / IDCG2) / 2)
    assert summary["recall@1"] == pytest.approx(0.25)


def test_hand_ndcg_example_from_spec():
    # hits at ranks 1 and 3, |T| = 2, K = 3: (1 + 1/log2 4) / (1 + 1/log2 3)
    scores = np.array([[3.0, 2.0, 1.0, 0.0]])
    test = sp.csr_matrix(np.array([[1, 0, 1, 0]]))
    res = evaluate_ranking(matrix_scorer(scores), test, ks=(3,), metrics=("ndcg",), device="cpu")
    assert list(res.per_user) == ["ndcg@3"]
    assert res.per_user["ndcg@3"][0] == pytest.approx(
        (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    )


def test_k_larger_than_catalogue_and_return_topk():
    # 3 items, K = 5: the two missing slots are misses and are padded with -1.
    scores = np.array([[0.1, 0.3, 0.2]])
    test = sp.csr_matrix(np.array([[0, 0, 1]]))
    res = evaluate_ranking(matrix_scorer(scores), test, ks=(5,), device="cpu", return_topk=True)
    np.testing.assert_array_equal(res.topk, [[1, 2, 0, -1, -1]])
    assert res.per_user["precision@5"][0] == pytest.approx(1 / 5)
    assert res.per_user["mrr@5"][0] == pytest.approx(1 / 2)
    assert res.per_user["ndcg@5"][0] == pytest.approx(1 / math.log2(3))


# ---------------------------------------------------------------------------------------
# Ties
# ---------------------------------------------------------------------------------------


def test_all_equal_scores_return_lowest_indices_in_order():
    scores = torch.zeros(4, 50)
    vals, idx = topk(scores, 7)
    assert idx.tolist() == [list(range(7))] * 4
    assert vals.tolist() == [[0.0] * 7] * 4


def test_boundary_tie_selects_lowest_indices():
    scores = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.0, 2.0]])
    assert topk(scores, 2)[1].tolist() == [[1, 2]]
    assert topk(scores, 3)[1].tolist() == [[1, 2, 3]]
    assert topk(scores, 5)[1].tolist() == [[1, 2, 3, 5, 0]]
    # Reverse position: ties inside the selected set are still ordered by index.
    scores = torch.tensor([[5.0, 1.0, 5.0, 1.0, 5.0]])
    assert topk(scores, 4)[1].tolist() == [[0, 2, 4, 1]]


def test_neg_inf_never_ahead_of_finite():
    scores = torch.tensor([[-math.inf, 1.0, -math.inf, -math.inf, 0.5]])
    vals, idx = topk(scores, 4)
    assert idx.tolist() == [[1, 4, 0, 2]]
    assert vals[0, :2].tolist() == [1.0, 0.5]
    assert torch.isneginf(vals[0, 2:]).all()


def test_topk_k_clipped_and_zero():
    scores = torch.tensor([[0.0, 1.0]])
    assert topk(scores, 5)[1].tolist() == [[1, 0]]
    v, i = topk(scores, 0)
    assert v.shape == (1, 0) and i.shape == (1, 0)


@pytest.mark.parametrize("k", [1, 3, 8, 29, 30])
def test_topk_integer_scores_match_reference(k, monkeypatch):
    # Small fix-up batches so the batched path is exercised too.
    monkeypatch.setattr(ranking_mod, "_FIXUP_ELEMENTS", 64)
    g = torch.Generator().manual_seed(k)
    scores = torch.randint(0, 4, (40, 30), generator=g).float()
    scores[scores == 0] = -math.inf  # some "excluded" entries
    vals, idx = topk(scores, k)
    for r in range(scores.shape[0]):
        row = scores[r].tolist()
        expected = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]
        assert idx[r].tolist() == expected
        assert vals[r].tolist() == [row[i] for i in expected]


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 6),
    st.integers(1, 25),
    st.integers(1, 30),
    st.integers(0, 2**31 - 1),
)
def test_topk_property(rows, cols, k, seed):
    rng = np.random.default_rng(seed)
    arr = rng.integers(-2, 3, (rows, cols)).astype(np.float32)
    vals, idx = topk(torch.from_numpy(arr), k)
    user_ids = rng.integers(0, 10**6, rows)
    _, ridx = topk(torch.from_numpy(arr), k, tie_users=torch.from_numpy(user_ids), tie_seed=seed)
    for r in range(rows):
        expected = sorted(range(cols), key=lambda i: (-arr[r, i], i))[:k]
        assert idx[r].tolist() == expected
        u = int(user_ids[r])
        expected = sorted(range(cols), key=lambda i: (-arr[r, i], -ref_tie_key(u, i, seed)))[:k]
        assert ridx[r].tolist() == expected


def test_tied_scorer_under_the_index_rule_recommends_lowest_indices():
    n_users, n_items = 5, 12
    test = sp.csr_matrix(np.eye(n_users, n_items))
    res = evaluate_ranking(
        lambda u: torch.ones(len(u), n_items),
        test,
        ks=(3,),
        device="cpu",
        return_topk=True,
        ties="index",
    )
    assert res.ties == "index"
    np.testing.assert_array_equal(res.topk, np.tile([0, 1, 2], (n_users, 1)))
    # user u's target is item u: hit iff u < 3, at rank u + 1
    np.testing.assert_allclose(res.per_user["mrr@3"], [1, 1 / 2, 1 / 3, 0, 0])


def test_tied_scorer_under_the_random_rule_follows_the_documented_hash():
    n_users, n_items = 5, 12
    test = sp.csr_matrix(np.eye(n_users, n_items))
    res = evaluate_ranking(
        lambda u: torch.ones(len(u), n_items), test, ks=(3,), device="cpu", return_topk=True
    )
    assert res.ties == "random(seed=0)"
    for u in range(n_users):
        expected = sorted(range(n_items), key=lambda i: -ref_tie_key(u, i))[:3]
        assert res.topk[u].tolist() == expected
    # another seed, another (deterministic) order
    res7 = evaluate_ranking(
        lambda u: torch.ones(len(u), n_items), test, ks=(3,), device="cpu", return_topk=True,
        tie_seed=7,
    )
    assert res7.ties == "random(seed=7)"
    assert res7.topk[0].tolist() == sorted(range(n_items), key=lambda i: -ref_tie_key(0, i, 7))[:3]
    assert not np.array_equal(res7.topk, res.topk)


@pytest.mark.parametrize("k", [5, 10])
def test_constant_scorer_gets_chance_hit_rate_not_credit_for_low_ids(k):
    # Acceptance (a): every test item sits at one of the k lowest indices, nothing is
    # excluded, every score is equal. The old rule (lower index first) gave HR@k = 1.0; a tie
    # rule that gives no credit must give the chance value k/n (within 3 standard errors).
    n_users, n_items = 6000, 1000
    users = np.arange(n_users)
    test = sp.csr_matrix(
        (np.ones(n_users), (users, users % k)), shape=(n_users, n_items)
    )
    res = evaluate_ranking(lambda u: torch.zeros(len(u), n_items), test, ks=(k,), device="cpu")
    p = k / n_items
    se = math.sqrt(p * (1 - p) / n_users)
    assert abs(res.summary()[f"hr@{k}"] - p) <= 3 * se, res.summary()
    old = evaluate_ranking(
        lambda u: torch.zeros(len(u), n_items), test, ks=(k,), device="cpu", ties="index"
    )
    assert old.summary()[f"hr@{k}"] == 1.0


def test_untied_scores_give_the_same_topk_as_before():
    # Acceptance (b): with no ties the rule never acts: the same lists and metrics as the old
    # rule and as a plain sort.
    rng = np.random.default_rng(4)
    n_users, n_items = 200, 700
    scores = rng.permutation(n_users * n_items).reshape(n_users, n_items).astype(np.float64)
    test = random_binary(rng, (n_users, n_items), 0.02)
    exclude = random_binary(rng, (n_users, n_items), 0.1)
    exclude = sp.csr_matrix(exclude - exclude.multiply(test))
    kw = dict(ks=(1, 10, 50), device="cpu", return_topk=True, memory_budget_mb=0.05)
    new = evaluate_ranking(matrix_scorer(scores), test, exclude, **kw)
    old = evaluate_ranking(matrix_scorer(scores), test, exclude, ties="index", **kw)
    np.testing.assert_array_equal(new.topk, old.topk)
    for key in new.per_user:
        np.testing.assert_array_equal(new.per_user[key], old.per_user[key])
    masked = np.where(exclude.toarray() > 0, -np.inf, scores)[new.users]
    np.testing.assert_array_equal(new.topk, np.argsort(-masked, axis=1, kind="stable")[:, :50])


# ---------------------------------------------------------------------------------------
# Against the reference on random tied data, with exclusion and chunking
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ties", ["random", "index"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_random_ties(seed, ties):
    rng = np.random.default_rng(seed)
    n_users, n_items = 37, 23
    scores = rng.integers(0, 5, (n_users, n_items)).astype(np.float64)  # heavy ties
    test = random_binary(rng, (n_users, n_items), 0.15)
    exclude = random_binary(rng, (n_users, n_items), 0.3)
    exclude = sp.csr_matrix(exclude - exclude.multiply(test))  # disjoint from test
    ks = (1, 2, 5, 10, 23)

    users, expected = ref_evaluate(scores, test, exclude, ks, ties=ties, seed=seed)
    full = evaluate_ranking(
        matrix_scorer(scores), test, exclude, ks=ks, device="cpu", ties=ties, tie_seed=seed
    )
    # ~3 users per chunk: 23 items * 4 bytes * 3 = 276 bytes
    chunked = evaluate_ranking(
        matrix_scorer(scores),
        test,
        exclude,
        ks=ks,
        device="cpu",
        memory_budget_mb=276 / 2**20,
        return_topk=True,
        ties=ties,
        tie_seed=seed,
    )
    np.testing.assert_array_equal(full.users, users)
    for key, ref in expected.items():
        np.testing.assert_allclose(full.per_user[key], ref, rtol=0, atol=1e-12, err_msg=key)
        np.testing.assert_array_equal(chunked.per_user[key], full.per_user[key], err_msg=key)
    # returned top-k lists equal the reference ranking (truncated, -1 padded)
    for row, u in enumerate(users):
        ranked = ref_ranking(
            scores[u].tolist(), set(exclude[u].indices.tolist()), int(u), ties, seed
        )[:23]
        got = [i for i in chunked.topk[row].tolist() if i >= 0]
        assert got[: len(ranked)] == ranked


def test_explicit_users_order_and_validation():
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 3, (10, 15)).astype(np.float64)
    dense = (rng.random((10, 15)) < 0.3).astype(np.float32)
    dense[3] = 0
    test = sp.csr_matrix(dense)
    sel = np.array([7, 2, 9])
    _, ref = ref_evaluate(scores, test, None, (4,))
    default = evaluate_ranking(matrix_scorer(scores), test, ks=(4,), device="cpu")
    assert 3 not in default.users
    picked = evaluate_ranking(matrix_scorer(scores), test, ks=(4,), users=sel, device="cpu")
    np.testing.assert_array_equal(picked.users, sel)
    pos = {u: i for i, u in enumerate(default.users)}
    for key in picked.per_user:
        np.testing.assert_array_equal(
            picked.per_user[key], default.per_user[key][[pos[u] for u in sel]]
        )
    with pytest.raises(ValueError, match="no test items"):
        evaluate_ranking(matrix_scorer(scores), test, users=[3], device="cpu")


def test_overlap_warns_and_target_cannot_be_hit():
    scores = np.array([[3.0, 2.0, 1.0]])
    test = sp.csr_matrix(np.array([[1, 0, 0]]))
    exclude = sp.csr_matrix(np.array([[1, 0, 0]]))
    with pytest.warns(UserWarning, match="exclude"):
        res = evaluate_ranking(matrix_scorer(scores), test, exclude, ks=(3,), device="cpu")
    assert res.per_user["hr@3"][0] == 0.0


def test_excluded_target_in_neg_inf_slot_is_not_a_hit():
    # Only one item is rankable, K = 2: slot 2 holds the excluded target with -inf score.
    scores = np.array([[0.0, 1.0]])
    test = sp.csr_matrix(np.array([[1, 0]]))
    exclude = sp.csr_matrix(np.array([[1, 0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate_ranking(
            matrix_scorer(scores), test, exclude, ks=(2,), device="cpu", return_topk=True
        )
    assert res.per_user["recall@2"][0] == 0.0
    np.testing.assert_array_equal(res.topk, [[1, -1]])  # excluded filler is not reported


def test_score_fn_view_is_not_modified():
    cache = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    before = cache.clone()
    test = sp.csr_matrix(np.ones((3, 4)))
    exclude = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate_ranking(lambda u: cache[: len(u)], test, exclude, ks=(2,), device="cpu")
    assert torch.equal(cache, before)


def test_errors():
    test = sp.csr_matrix(np.eye(3))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_ranking(lambda u: torch.full((len(u), 3), math.nan), test, device="cpu")
    with pytest.raises(ValueError, match="must return"):
        evaluate_ranking(lambda u: torch.zeros(len(u), 2), test, device="cpu")
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate_ranking(lambda u: torch.zeros(len(u), 3), test, metrics=("auc",), device="cpu")
    with pytest.raises(ValueError, match="ks"):
        evaluate_ranking(lambda u: torch.zeros(len(u), 3), test, ks=(0,), device="cpu")
    with pytest.raises(ValueError, match="shape"):
        evaluate_ranking(
            lambda u: torch.zeros(len(u), 3), test, exclude=sp.csr_matrix((3, 4)), device="cpu"
        )


def test_embedding_scorer_matches_dense_and_reference():
    g = torch.Generator().manual_seed(0)
    ue, ie = torch.randn(20, 4, generator=g), torch.randn(30, 4, generator=g)
    rng = np.random.default_rng(0)
    test = random_binary(rng, (20, 30), 0.1)
    exclude = random_binary(rng, (20, 30), 0.2)
    exclude = sp.csr_matrix(exclude - exclude.multiply(test))
    fn = embedding_scorer(ue, ie)
    np.testing.assert_allclose(
        fn(torch.tensor([3, 1])).numpy(), (ue[[3, 1]] @ ie.T).numpy(), rtol=1e-6
    )
    res = evaluate_ranking(fn, test, exclude, ks=(3, 10), device="cpu", memory_budget_mb=1e-3)
    users, ref = ref_evaluate((ue @ ie.T).numpy(), test, exclude, (3, 10))
    np.testing.assert_array_equal(res.users, users)
    for key, values in ref.items():
        np.testing.assert_allclose(res.per_user[key], values, atol=1e-12, err_msg=key)


def test_empty_test_matrix():
    res = evaluate_ranking(lambda u: torch.zeros(len(u), 4), sp.csr_matrix((3, 4)), device="cpu")
    assert len(res) == 0
    assert all(math.isnan(v) for v in res.summary().values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("ties", ["random", "index"])
def test_cuda_matches_cpu_exactly(ties):
    # Acceptance (c): tied scores give the same top-k (and metrics) on CPU and CUDA.
    rng = np.random.default_rng(11)
    n_users, n_items = 300, 500
    scores = rng.integers(0, 6, (n_users, n_items)).astype(np.float64)
    test = random_binary(rng, (n_users, n_items), 0.02)
    exclude = random_binary(rng, (n_users, n_items), 0.1)
    exclude = sp.csr_matrix(exclude - exclude.multiply(test))
    kw = dict(ks=(1, 5, 20), memory_budget_mb=0.1, return_topk=True, ties=ties)
    cpu = evaluate_ranking(matrix_scorer(scores), test, exclude, device="cpu", **kw)
    gpu = evaluate_ranking(matrix_scorer(scores), test, exclude, device="cuda", **kw)
    np.testing.assert_array_equal(cpu.topk, gpu.topk)
    for key in cpu.per_user:
        np.testing.assert_allclose(gpu.per_user[key], cpu.per_user[key], atol=1e-12)
    s = torch.from_numpy(scores).float()
    users = torch.arange(n_users) if ties == "random" else None
    np.testing.assert_array_equal(
        topk(s, 37, tie_users=users)[1].numpy(),
        topk(s.cuda(), 37, tie_users=None if users is None else users.cuda())[1].cpu().numpy(),
    )
    # the hash itself, bit for bit, on a large grid
    u = torch.arange(0, 3_000_000, 997).reshape(-1, 1)
    i = torch.arange(0, 200_000, 13).reshape(1, -1)
    from recstack.evaluation.ranking import tie_keys

    assert torch.equal(tie_keys(u, i, 5), tie_keys(u.cuda(), i.cuda(), 5).cpu())
