"""MF / LightGCN's graphed-step pieces that run without a GPU: the weighted loss of a padded
batch, the batch-ego L2 penalty, and the plan that says when the CUDA graph applies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.data.dataset import Interactions, from_raw
from recstack.models import MF, LightGCN
from recstack.models.pair_step import GraphedPairStep, plan


def _data(seed: int = 0, n_users: int = 30, n_items: int = 40, n: int = 300) -> Interactions:
    """Random interactions covering every user and item id (encoded ids = raw ids)."""
    rng = np.random.default_rng(seed)
    users = np.concatenate([np.arange(n_users), rng.integers(0, n_users, n)])
    items = np.concatenate([np.arange(n_items) % n_items, rng.integers(0, n_items, n + n_users - n_items)])
    return from_raw(users, items)


@pytest.mark.parametrize("cls", [MF, LightGCN])
@pytest.mark.parametrize("loss", ["bpr", "bce", "softmax", "ccl"])
def test_padding_rows_of_weight_zero_change_neither_loss_nor_gradients(cls, loss):
    m = cls(dim=8, loss=loss, n_negatives=3, reg=1e-2, epochs=1, batch_size=16, device="cpu", progress=False)
    m.fit(_data())
    u, i = torch.tensor([1, 2, 3, 4]), torch.tensor([5, 6, 7, 8])
    neg = torch.tensor([[9, 10, 11], [12, 13, 14], [15, 16, 17], [18, 19, 20]])
    hits = torch.zeros(4, 3, dtype=torch.bool)

    def grads(loss_value):
        m.module_.zero_grad(set_to_none=True)
        loss_value.backward()
        return [p.grad.clone() for p in m.module_.parameters() if p.grad is not None]

    plain = m._pair_loss(u, i, neg, hits)
    g_plain = grads(plain)
    pad = 3  # padding rows point at other users and items: their weight 0 must silence them
    u2, i2 = torch.cat([u, torch.tensor([0, 21, 22])]), torch.cat([i, torch.tensor([1, 2, 3])])
    neg2 = torch.cat([neg, torch.tensor([[4, 5, 6]] * pad)])
    w = torch.tensor([1.0] * 4 + [0.0] * pad)
    padded = m._pair_loss(u2, i2, neg2, torch.zeros(7, 3, dtype=torch.bool), w)
    g_padded = grads(padded)
    torch.testing.assert_close(padded, plain)
    for a, b in zip(g_plain, g_padded, strict=True):
        torch.testing.assert_close(a, b)


def test_ego_penalty_is_the_papers_formula():
    m = MF(dim=4, loss="bpr", n_negatives=2, reg=0.5, epochs=1, batch_size=8, device="cpu", progress=False)
    m.fit(_data())
    u, i, neg = torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([[4, 5], [6, 7]])
    p, q = m.module_.user.weight.detach(), m.module_.item.weight.detach()
    want = 0.0
    for b in range(2):
        want += (p[u[b]].square().sum() + q[i[b]].square().sum()
                 + 0.5 * (q[neg[b, 0]].square().sum() + q[neg[b, 1]].square().sum()))
    want = 0.5 / 2 * want / 2
    torch.testing.assert_close(m._ego_penalty(u, i, neg), want)
    assert MF(reg=0.0)._ego_penalty(u, i, neg) == 0.0


def test_graph_loss_draws_negatives_off_the_users_positives():
    m = MF(dim=8, loss="bpr", n_negatives=4, epochs=1, batch_size=16, device="cpu", progress=False).fit(_data())
    batch = {"user": torch.arange(16) % 30, "item": torch.arange(16) % 40, "weight": torch.ones(16)}
    loss = m._graph_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_plan_says_why_the_graph_does_not_apply():
    m = MF(device="cpu", shared_negatives=True, grad_clip=1.0)
    p = plan(m, torch.device("cpu"))
    assert not p.used
    assert "not CUDA" in p.reason and "shared_negatives" in p.reason and "grad_clip" in p.reason
    assert plan(MF(cuda_graph="never"), torch.device("cpu")).reason == "cuda_graph=never"
    with pytest.raises(ValueError, match="cuda_graph=always, but the graphed step does not apply: device cpu"):
        plan(MF(cuda_graph="always"), torch.device("cpu"))


class _Recorder(torch.nn.Module):
    """A stand-in model whose "loss" records each batch the epoch hands it."""

    name = "recorder"

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.module_, self.batches = self, []

    def _invalidate_tables(self) -> None:
        pass

    def _graph_loss(self, batch):
        self.batches.append({k: v.clone() for k, v in batch.items()})
        return (self.w.sum() - 1.0).square() * batch["weight"].sum() + batch["weight"].sum()


@pytest.mark.parametrize("n", [10, 12, 1])
def test_the_epoch_visits_every_example_once_in_perm_order_and_pads_the_last_batch(n):
    from recstack.training.trainer import TrainConfig

    rec = _Recorder()
    step = GraphedPairStep(rec, TrainConfig(batch_size=4, lr=0.1), use_graph=False)
    examples = {"user": torch.arange(n) * 10, "item": torch.arange(n) * 100}
    for epoch in range(2):  # the second epoch reuses the buffers with a new order
        rec.batches.clear()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(epoch))
        total = step.run_epoch(examples, perm)
        n_batches = -(-n // 4)
        assert len(rec.batches) == n_batches
        users = torch.cat([b["user"] for b in rec.batches])
        weights = torch.cat([b["weight"] for b in rec.batches])
        assert weights.tolist() == [1.0] * n + [0.0] * (4 * n_batches - n)
        assert users[:n].tolist() == (perm * 10).tolist()
        assert torch.equal(torch.cat([b["item"] for b in rec.batches])[:n], perm * 100)
        # the summed batch losses, as the trainer's own loop returns them
        assert float(total) > 0
    assert step.steps == 2 * n_batches


def test_mf_trains_through_the_epoch_step_and_learns(monkeypatch):
    """The trainer's EpochStep path (here eager, on the CPU) trains MF as well as its plain path."""
    from recstack.models.pair_step import GraphedPairStep as Step

    data = _groups()
    kw = dict(dim=16, loss="bpr", n_negatives=4, lr=0.05, batch_size=64, epochs=8, device="cpu", progress=False,
              seed=0)
    monkeypatch.setattr(MF, "_train_step", lambda self: Step(self, self.train_config, use_graph=False))
    m = MF(**kw).fit(data)
    assert m.train_result_.epochs_run == 8 and len(m.train_result_.history) == 8
    losses = [h["loss"] for h in m.train_result_.history]
    assert losses[-1] < 0.5 * losses[0]
    # every user's top 10 lies in its own half of the catalogue
    top, _ = m.recommend(np.arange(data.n_users), k=10, exclude_seen=False)
    half = data.n_items // 2
    own = [(np.asarray(t) // half == u % 2).mean() for u, t in enumerate(top)]
    assert np.mean(own) > 0.9


def _groups(n_users: int = 40, n_items: int = 60, per_user: int = 12) -> Interactions:
    """Two user groups, each consuming items from its own half of the catalogue."""
    rng = np.random.default_rng(0)
    users, items = [], []
    for u in range(n_users):
        chosen = rng.choice(n_items // 2, size=per_user, replace=False) + (u % 2) * (n_items // 2)
        users += [u] * per_user
        items += list(chosen)
    return from_raw(np.array(users), np.array(items))


def test_lightgcn_defaults_are_the_papers():
    p = LightGCN().get_params()
    assert (p["loss"], p["n_negatives"], p["lr"], p["batch_size"], p["dim"], p["n_layers"], p["reg"]) == \
        ("bpr", 1, 1e-3, 2048, 64, 3, 1e-4)
    assert p["normalize"] is False and p["init_std"] == 0.1
