"""The shared trainer: exact resume, early stopping, logs, optimiser groups; LightGCN's graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from recstack.data import from_raw
from recstack.data.transforms import split
from recstack.models import MF, LightGCN, Recommender
from recstack.models.lightgcn import normalized_adjacency
from recstack.training.trainer import TrainConfig, build_optimizer


def planted(n_users=80, n_items=40, per_user=8, seed=0):
    """Two user groups, each consuming items from its own half of the catalogue."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(n_users):
        half = (u % 2) * (n_items // 2)
        chosen = rng.choice(n_items // 2, size=per_user, replace=False) + half
        users += [u] * per_user
        items += list(chosen)
    return from_raw(np.array(users), np.array(items), timestamp=np.arange(len(users)))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_mf(**kw):
    base = dict(dim=16, loss="softmax", n_negatives=8, lr=0.05, batch_size=64, device="cpu",
                progress=False, monitor="ndcg@10", patience=0, seed=3)
    return MF(**(base | kw))


def test_resume_gives_exactly_the_uninterrupted_result(tmp_path):
    sp = split(planted(), "loo")
    full = make_mf(epochs=6).fit(sp.train, valid=sp.valid)

    ckpt = tmp_path / "ckpt"
    first = make_mf(epochs=3, checkpoint_dir=str(ckpt)).fit(sp.train, valid=sp.valid)
    assert first.train_result_.epochs_run == 3 and (ckpt / "last" / "state.safetensors").exists()
    resumed = make_mf(epochs=6, checkpoint_dir=str(ckpt)).fit(sp.train, valid=sp.valid)

    assert resumed.train_result_.epochs_run == 6
    assert [h["loss"] for h in resumed.train_result_.history] == [h["loss"] for h in full.train_result_.history]
    assert resumed.train_result_.best_metrics == full.train_result_.best_metrics
    for (k, a), (_, b) in zip(full.module_.state_dict().items(), resumed.module_.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_early_stopping_keeps_best_epoch_and_logs_jsonl(tmp_path):
    sp = split(planted(seed=1), "loo")
    log = tmp_path / "log.jsonl"
    m = make_mf(epochs=30, patience=2, lr=0.2, log_path=str(log)).fit(sp.train, valid=sp.valid)
    res = m.train_result_
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(rows) == res.epochs_run and rows[0]["epoch"] == 1
    values = [r["valid_ndcg@10"] for r in rows]
    assert res.best_metrics["ndcg@10"] == max(values)
    assert res.best_epoch == values.index(max(values)) + 1
    # stopped because of patience (2 evaluations without improvement), or ran to the end
    assert res.epochs_run == 30 or res.epochs_run == res.best_epoch + 2


def test_mf_learns_planted_groups():
    data = planted(seed=2)
    m = make_mf(epochs=15, normalize=True, temperature=0.2).fit(data)
    items, _ = m.recommend(np.arange(data.n_users), k=5)
    own = (items // 20) == (np.arange(data.n_users)[:, None] % 2)
    assert own.mean() > 0.9


def test_weight_decay_skips_biases_and_embeddings_unless_asked():
    module = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 2))
    opt = build_optimizer(module, TrainConfig(weight_decay=0.1))
    decayed = [p for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]]
    assert len(decayed) == 1 and decayed[0] is module[1].weight
    opt = build_optimizer(module, TrainConfig(weight_decay=0.1, decay_embeddings=True))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed == {id(module[0].weight), id(module[1].weight)}
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(module, TrainConfig(optimizer="nope"))


def test_lightgcn_propagation_matches_dense_formula_and_roundtrips(tmp_path):
    data = planted(n_users=12, n_items=10, per_user=3, seed=4)
    m = LightGCN(n_layers=2, dim=4, normalize=False, epochs=1, batch_size=8, device="cpu", progress=False).fit(data)
    x = data.csr().toarray()
    a = np.block([[np.zeros((12, 12)), x], [x.T, np.zeros((10, 10))]])
    d = a.sum(1)
    norm = a / np.sqrt(np.outer(d, d))
    np.testing.assert_allclose(normalized_adjacency(data.csr()).toarray(), norm, rtol=1e-6)
    e0 = torch.cat([m.module_.user.weight, m.module_.item.weight]).detach().double().numpy()
    final = (e0 + norm @ e0 + norm @ norm @ e0) / 3
    expected = final[:12] @ final[12:].T
    got = m.score_all(torch.arange(12)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    m.save(tmp_path / "lgcn")
    loaded = Recommender.load(tmp_path / "lgcn", device="cpu")
    np.testing.assert_allclose(loaded.score_all(torch.arange(12)).numpy(), got, rtol=1e-6)


def test_lightgcn_gradient_matches_dense_autograd():
    data = planted(n_users=6, n_items=5, per_user=2, seed=5)
    m = LightGCN(n_layers=2, dim=3, epochs=1, batch_size=4, device="cpu", progress=False).fit(data)
    dense = torch.tensor(normalized_adjacency(data.csr()).toarray(), dtype=torch.float64)
    w_u, w_i = m.module_.user.weight, m.module_.item.weight
    m.module_.zero_grad()
    u, i = m._tables()
    (u.sum() * 2 + (i**2).sum()).backward()
    got = torch.cat([w_u.grad, w_i.grad]).clone()
    e0 = torch.cat([w_u, w_i]).detach().double().requires_grad_(True)
    final = (e0 + dense @ e0 + dense @ (dense @ e0)) / 3
    (final[:6].sum() * 2 + (final[6:] ** 2).sum()).backward()
    np.testing.assert_allclose(got.numpy(), e0.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss", ["softmax", "bpr", "ccl"])
def test_mf_shared_negatives_learn_planted_groups(loss):
    data = planted(seed=6)
    m = make_mf(epochs=15, normalize=True, temperature=0.2, loss=loss, shared_negatives=True,
                n_negatives=16).fit(data)
    items, _ = m.recommend(np.arange(data.n_users), k=5)
    own = (items // 20) == (np.arange(data.n_users)[:, None] % 2)
    assert own.mean() > 0.9


def test_shared_negatives_mask_the_users_own_positives():
    data = planted(seed=7)
    m = make_mf(epochs=1, shared_negatives=True, n_negatives=40).fit(data)
    x = data.csr()
    batch = {"user": torch.arange(4), "item": torch.as_tensor(x.indices[x.indptr[:4]]).long()}
    # with all 40 items as shared negatives, each user's positives must be masked: the loss equals
    # a softmax over the positive and the user's non-positive items only (negatives' logits
    # corrected by -log q = +log 40 for the uniform sampler)
    m.sampler_.draw = lambda n, generator=None: torch.arange(40)
    got = m._loss(batch, torch.Generator()).item()
    p, q = m.embeddings()
    seen = x.toarray()[:4].astype(bool)
    logits = (p[:4] @ q.T / m.temperature).detach()
    pos = logits[torch.arange(4), batch["item"]]
    neg = (logits + np.log(40)).masked_fill(torch.as_tensor(seen), float("-inf"))
    expected = (torch.logsumexp(torch.cat([pos[:, None], neg], 1), 1) - pos).mean().item()
    assert abs(got - expected) < 1e-4
