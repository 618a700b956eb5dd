"""Beyond-accuracy metrics by hand on tiny matrices."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp

from recstack.evaluation import coverage, gini, intra_list_diversity, novelty, popularity_bias


def test_coverage_and_gini():
    recs = np.array([[0, 1], [0, 2]])
    assert coverage(recs, 4) == pytest.approx(3 / 4)
    # counts [2, 1, 1, 0] sorted [0, 1, 1, 2]; sum (2i - 5) x_i = 0 - 1 + 1 + 6 = 6
    # G = 6 / (4 * 4)
    assert gini(recs, 4) == pytest.approx(6 / 16)
    assert gini(np.array([[0, 1], [2, 3]]), 4) == pytest.approx(0.0)
    # one item takes everything: (n - 1) / n
    assert gini(np.array([[0], [0]]), 2) == pytest.approx(0.5)
    # -1 padding ignored
    assert coverage(np.array([[0, -1]]), 2) == pytest.approx(0.5)


def test_novelty():
    pop = np.array([4, 2, 1, 0])
    # self-information -log2(pop/4): 0, 1, 2, and pop 0 treated as 1 -> 2
    # user 0 mean (0 + 1)/2 = .5, user 1 mean (2 + 2)/2 = 2 -> 1.25
    assert novelty(np.array([[0, 1], [2, 3]]), pop, 4) == pytest.approx(1.25)


VECS = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]])


def test_intra_list_diversity_by_hand():
    recs = np.array([[0, 1, 2], [0, 3, -1]])
    # user 0: pairs (0,1) cos 0, (0,2) and (1,2) cos 1/sqrt2 -> mean dist (1 + 2(1 - 1/sqrt2))/3
    # user 1: (0,3) same direction -> 0
    u0 = (1 + 2 * (1 - 1 / math.sqrt(2))) / 3
    assert intra_list_diversity(recs, VECS) == pytest.approx((u0 + 0.0) / 2)
    # multi-hot genres giving the same directions: item0 {A}, item1 {B}, item2 {A,B}, item3 {A}
    genres = sp.csr_matrix(np.array([[1, 0], [0, 1], [1, 1], [1, 0]]))
    assert intra_list_diversity(recs, genres) == pytest.approx((u0 + 0.0) / 2)


def test_intra_list_diversity_matches_pairwise_loop():
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(30, 5))
    vecs[3] = 0.0  # zero vector: cosine 0 with everything
    recs = rng.integers(0, 30, (12, 6))
    recs[0, 0] = 3
    per_user = []
    for row in recs:
        d = []
        for i, j in itertools.combinations(row, 2):
            a, b = vecs[i], vecs[j]
            na, nb = np.linalg.norm(a), np.linalg.norm(b)
            cos = 0.0 if na == 0 or nb == 0 else a @ b / (na * nb)
            d.append(1 - cos)
        per_user.append(np.mean(d))
    assert intra_list_diversity(recs, vecs) == pytest.approx(np.mean(per_user), abs=1e-12)


def test_popularity_bias():
    pop = np.array([10.0, 5.0, 3.0, 1.0, 1.0])
    recs = np.array([[0, 1], [2, 3]])
    # head = top ceil(.2 * 5) = 1 item -> item 0
    # ARP: mean(7.5, 2) = 4.75; APLT: mean(1/2, 2/2) = .75
    out = popularity_bias(recs, pop)
    assert out == pytest.approx({"arp": 4.75, "aplt": 0.75})
    # history: user 0 {0} mean pop 10 -> (7.5 - 10)/10 = -.25
    #          user 1 {1, 2} mean pop 4 -> (2 - 4)/4 = -.5  -> lift -.375
    hist = sp.csr_matrix(np.array([[1, 0, 0, 0, 0], [0, 1, 1, 0, 0]]))
    out = popularity_bias(recs, pop, hist)
    assert out["popularity_lift"] == pytest.approx(-0.375)
    assert out["arp"] == pytest.approx(4.75)
