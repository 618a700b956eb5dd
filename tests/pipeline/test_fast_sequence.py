"""The serving path of SASRec retrieval (`recstack.pipeline.fast_sequence.FastSASRec`): the same
items in the same order as the model's `recommend_sequence_indices`, scores to float rounding,
alone and in batches of mixed lengths; prepared per model, so a new bundle's source serves the
new weights; other models keep their own path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.data import from_raw
from recstack.models import GRU4Rec, SASRec
from recstack.pipeline.fast_sequence import FastSASRec
from recstack.pipeline.request import Request
from recstack.pipeline.sources import SequenceModelSource, candidates_many

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(device="cpu", dim=16, n_heads=2, n_blocks=2, max_len=8, batch_size=16, progress=False,
             patience=0, epochs=2)
N_ITEMS = 40


def _data(seed: int = 0, n_users: int = 60):
    rng = np.random.default_rng(seed)
    rows = [(u, int(rng.integers(N_ITEMS)), t) for u in range(n_users) for t in range(int(rng.integers(2, 16)))]
    u, i, t = (np.array(c) for c in zip(*rows, strict=True))
    return from_raw(u, i, timestamp=t)


@pytest.fixture(scope="module")
def sasrec():
    m = SASRec(**SMALL, seed=0).fit(_data())
    m.module_.eval()
    return m


def _histories(n_items: int, seed: int = 1, count: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    # lengths 1 .. 2 x max_len: shorter than the window, equal, and cut to it
    return [rng.integers(0, n_items, size=int(n)) for n in rng.integers(1, 17, size=count)]


def _same(a_items, a_scores, b_items, b_scores):
    np.testing.assert_array_equal(a_items, b_items)
    np.testing.assert_allclose(a_scores, b_scores, rtol=1e-5, atol=1e-5)


def test_fast_sasrec_equals_the_model_one_history_at_a_time(sasrec):
    fast = FastSASRec.try_build(sasrec)
    assert fast is not None
    for h in _histories(sasrec.n_items_):
        k = 20
        _same(*sasrec.recommend_sequence_indices([h], k=k), *fast.recommend([h], k))


@pytest.mark.parametrize("batch", [2, 5, 40])
def test_fast_sasrec_equals_the_model_in_batches_of_mixed_lengths(sasrec, batch):
    fast = FastSASRec.try_build(sasrec)
    hs = _histories(sasrec.n_items_, seed=batch)[:batch]
    _same(*sasrec.recommend_sequence_indices(hs, k=sasrec.n_items_), *fast.recommend(hs, sasrec.n_items_))


def test_the_source_serves_its_own_model_after_a_swap(sasrec):
    """A source (a bundle's pipeline) prepares its model's weights when built: a new bundle's
    source answers from the new weights, the old one's keeps the old."""
    other = SASRec(**SMALL, seed=1).fit(_data(seed=7))
    other.module_.eval()
    old, new = SequenceModelSource("s", sasrec, n=10), SequenceModelSource("s", other, n=10)
    assert old.fast is not None and new.fast is not None and old.fast is not new.fast
    h = np.array([1, 5, 7, 2], np.int64)
    req = Request(user=None, history=h, k=10, exclude=np.zeros(0, np.int64))
    for src, model in ((old, sasrec), (new, other)):
        items, scores = src.candidates(req)
        ref_items, ref_scores = model.recommend_sequence_indices([h], k=10)
        _same(items, scores, ref_items[0].astype(np.int64), ref_scores[0])
    assert not np.array_equal(old.candidates(req)[0], new.candidates(req)[0])


def test_the_batched_source_equals_the_one_request_source(sasrec):
    src = SequenceModelSource("s", sasrec, n=10)
    reqs = [Request(user=None, history=h, k=10, exclude=np.zeros(0, np.int64))
            for h in _histories(sasrec.n_items_, seed=9, count=12)]
    for (bi, bs), r in zip(candidates_many(src, reqs), reqs, strict=True):
        oi, os_ = src.candidates(r)
        _same(bi, bs, oi, os_)


def test_other_models_and_training_mode_keep_their_own_path(sasrec):
    gru = GRU4Rec(device="cpu", dim=16, max_len=8, batch_size=16, progress=False, patience=0, epochs=1).fit(_data())
    assert FastSASRec.try_build(gru) is None
    assert SequenceModelSource("g", gru, n=5).fast is None
    sasrec.module_.train()
    try:
        assert FastSASRec.try_build(sasrec) is None
    finally:
        sasrec.module_.eval()
    with torch.inference_mode():
        assert FastSASRec.try_build(object()) is None
