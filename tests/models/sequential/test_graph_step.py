"""The CUDA-graphed training step of the sequence models: what can be checked without a GPU.

The graph itself needs CUDA (its speed and equal validation figures are measured by
benchmarks/bench_seq_speed.py, docs/benchmarks.md); here: its loss equals the plain step's,
the padding of a short batch changes nothing, and `plan` refuses with the reason.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.data import from_raw
from recstack.models import BERT4Rec, Caser, GRU4Rec, SASRec
from recstack.models.sequential.bsarec import BSARec
from recstack.models.sequential.graph_step import GraphedSequenceStep, plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = dict(device="cpu", dim=16, dropout=0.0, max_len=8, batch_size=16, progress=False,
             patience=0, epochs=1)


def _data(n_users: int = 40, n_items: int = 15, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = [(u, int(rng.integers(n_items)), t) for u in range(n_users) for t in range(int(rng.integers(2, 14)))]
    u, i, t = (np.array(c) for c in zip(*rows, strict=True))
    return from_raw(u, i, timestamp=t)


@pytest.mark.parametrize("cls", [SASRec, BSARec, BERT4Rec, GRU4Rec, Caser])
def test_all_positions_loss_equals_the_plain_loss(cls):
    model = cls(**SMALL).fit(_data())
    examples = model._examples(_data())
    batch = {k: v[:16] for k, v in examples.items()}
    gen = torch.Generator().manual_seed(3)
    model.module_.eval()  # no dropout: both losses see the same network
    plain = model._loss(batch, torch.Generator().manual_seed(3))
    inputs, targets = model._inputs_targets(batch, gen)
    dense = model._all_positions_loss(inputs, targets, batch["user"])
    assert torch.isclose(plain, dense, rtol=1e-5, atol=1e-6), (plain, dense)
    n = int((targets > 0).sum())
    assert n < targets.numel()  # the cap below leaves out padding positions only
    for cap in (n, n + 7):  # any cap with room for every target: the same loss
        capped = model._all_positions_loss(inputs, targets, batch["user"], cap=cap)
        assert torch.isclose(plain, capped, rtol=1e-5, atol=1e-6), (cap, plain, capped)
    fewer = model._all_positions_loss(inputs, targets, batch["user"], cap=n - 1)
    assert not torch.isclose(plain, fewer, rtol=1e-6, atol=0)  # a target left out shows


def test_padding_a_short_batch_changes_neither_loss_nor_gradients():
    model = SASRec(**SMALL).fit(_data())
    model.module_.eval()
    step = GraphedSequenceStep.__new__(GraphedSequenceStep)  # prepare() alone needs no CUDA
    step.model, step.batch_size = model, 16
    examples = model._examples(_data())
    short = {k: v[:5] for k, v in examples.items()}
    prepared = step.prepare(short, torch.Generator().manual_seed(0))
    assert prepared["inputs"].shape[0] == 16 and (prepared["inputs"][5:] == 0).all()
    assert prepared["n_targets"] == int((prepared["targets"] > 0).sum()) > 0
    assert (prepared["targets"][5:] == 0).all()

    def loss_and_grads(inputs, targets, user):
        model.module_.zero_grad()
        loss = model._all_positions_loss(inputs, targets, user)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.module_.parameters() if p.grad is not None]

    base = model._inputs_targets(short, torch.Generator().manual_seed(0))
    l0, g0 = loss_and_grads(*base, short["user"])
    l1, g1 = loss_and_grads(prepared["inputs"], prepared["targets"], prepared["user"])
    assert torch.isclose(l0, l1, rtol=1e-6)
    for a, b in zip(g0, g1, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_plan_says_why_not_and_always_refuses_in_one_line():
    model = SASRec(**SMALL).fit(_data())
    p = plan(model, model.n_items_, model.max_len, torch.device("cpu"))
    assert not p.used and "not CUDA" in p.reason
    sampled = SASRec(**SMALL, loss="sampled").fit(_data())
    assert "loss=sampled" in plan(sampled, sampled.n_items_, 8, torch.device("cpu")).reason
    never = SASRec(**SMALL, cuda_graph="never").fit(_data())
    assert plan(never, never.n_items_, 8, torch.device("cpu")).reason == "cuda_graph=never"
    with pytest.raises(ValueError, match=r"^sasrec: cuda_graph=always, but .*not CUDA"):
        SASRec(**SMALL, cuda_graph="always").fit(_data())
    assert model.graph_plan_.to_dict() == {"used": False, "reason": "device cpu is not CUDA"}
