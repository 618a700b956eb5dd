"""NeuMF (He et al. 2017) and Mult-VAE (Liang et al. 2018): forward passes against the papers'
formulas, the pre-training initialisation, the loss by hand, the KL annealing, learning on
planted structure and exact save/load."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recstack.data import from_raw
from recstack.models import Recommender
from recstack.models import neumf as neumf_mod
from recstack.models.multvae import MultVAE, dense_rows
from recstack.models.neumf import NeuMF, NeuMFModule

QUIET = {"device": "cpu", "progress": False}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # the models here are tiny: a second intra-op thread only adds synchronisation overhead
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def planted(n_per_group: int = 20, n_half: int = 15, per_user: int = 8, seed: int = 0):
    """Two user groups; group g only consumes items of half g of the catalogue."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(2 * n_per_group):
        g = u // n_per_group
        own = rng.choice(n_half, per_user, replace=False)
        own[0] = u % n_half  # every item gets at least one user
        users += [u] * per_user
        items += list(g * n_half + own)
    data = from_raw(np.array(users), np.array(items), timestamp=np.arange(len(users)))
    group = np.arange(2 * n_per_group) // n_per_group
    return data, group, n_half


def own_group_share(model: Recommender, group: np.ndarray, n_half: int, k: int = 5) -> float:
    recs, _ = model.recommend(np.arange(len(group)), k=k)
    return float(((recs // n_half) == group[:, None]).mean())


def random_data(n_users: int = 30, n_items: int = 20, density: float = 0.25, seed: int = 0):
    rng = np.random.default_rng(seed)
    m = rng.random((n_users, n_items)) < density
    m[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    m[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    u, i = np.nonzero(m)
    return from_raw(u, i, timestamp=np.arange(len(u))), m.astype(np.float32)


# ---- NeuMF ---------------------------------------------------------------------------------------


def paper_logits(m: NeuMFModule, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """The paper's equations for aligned (u, i) pairs, with an explicit concatenation."""
    parts = []
    if m.use_gmf:
        parts.append(m.gmf_user(u) * m.gmf_item(i))
    if m.use_mlp:
        h = torch.cat([m.mlp_user(u), m.mlp_item(i)], -1)
        for layer in m.tower:
            h = torch.relu(layer(h))
        parts.append(h)
    return (torch.cat(parts, -1) @ m.out.weight.T + m.out.bias).squeeze(-1)


@pytest.mark.parametrize("mode", ["gmf", "mlp", "neumf"])
def test_neumf_forward_shapes_and_paper_formula(mode, monkeypatch):
    data, _ = random_data()
    model = NeuMF(mode=mode, dim=4, mlp_layers=(8, 6, 3), epochs=0, **QUIET).fit(data)
    m = model.module_
    users = torch.tensor([0, 3, 7])
    items = torch.randint(0, data.n_items, (3, 5))
    assert m(users[:, None], items).shape == (3, 5)
    uu, ii = torch.meshgrid(torch.arange(data.n_users), torch.arange(data.n_items), indexing="ij")
    expected = paper_logits(m, uu.reshape(-1), ii.reshape(-1)).reshape(data.n_users, data.n_items)
    full = model.score_all(torch.arange(data.n_users))
    assert full.shape == (data.n_users, data.n_items)
    torch.testing.assert_close(full, expected.detach(), rtol=1e-5, atol=1e-6)
    # tiny score blocks: many user and item chunks, same scores
    monkeypatch.setattr(neumf_mod, "_SCORE_BLOCK", 7 * m.max_width)
    torch.testing.assert_close(model.score_all(torch.arange(data.n_users)), full, rtol=1e-5, atol=1e-6)


def test_neumf_output_layer_from_pretrained_follows_the_formula():
    torch.manual_seed(0)
    n_users, n_items, alpha = 9, 11, 0.3
    gmf = NeuMFModule(n_users, n_items, "gmf", dim=4)
    mlp = NeuMFModule(n_users, n_items, "mlp", mlp_layers=(8, 4, 2))
    for m in (gmf, mlp):  # non-trivial heads, as after training
        torch.nn.init.normal_(m.out.weight)
        torch.nn.init.normal_(m.out.bias)
    fused = NeuMFModule.from_pretrained(gmf, mlp, alpha)
    torch.testing.assert_close(fused.out.weight, torch.cat([alpha * gmf.out.weight, (1 - alpha) * mlp.out.weight], 1))
    torch.testing.assert_close(fused.out.bias, alpha * gmf.out.bias + (1 - alpha) * mlp.out.bias)
    torch.testing.assert_close(fused.gmf_user.weight, gmf.gmf_user.weight)
    torch.testing.assert_close(fused.mlp_item.weight, mlp.mlp_item.weight)
    torch.testing.assert_close(fused.tower[1].weight, mlp.tower[1].weight)
    u, i = torch.arange(n_users)[:, None], torch.arange(n_items)[None, :]
    torch.testing.assert_close(fused(u, i), alpha * gmf(u, i) + (1 - alpha) * mlp(u, i))


def test_neumf_pretrain_pipeline_starts_from_both_models():
    data, _ = random_data(seed=1)
    kw = {"dim": 4, "mlp_layers": (8, 4), "epochs": 2, "batch_size": 64, **QUIET}
    # finetune_lr=0: the fused model stays at its initialisation, which must then equal
    # 0.5 GMF + 0.5 MLP trained alone under the same seed and config
    fused = NeuMF(pretrain=True, finetune_lr=0.0, **kw).fit(data)
    gmf = NeuMF(mode="gmf", **kw).fit(data)
    mlp = NeuMF(mode="mlp", **kw).fit(data)
    assert set(fused.pretrain_results_) == {"gmf", "mlp"} and fused.module_.mode == "neumf"
    assert fused.train_config.lr == 1e-3  # the stage configs do not leak into the model's
    users = torch.arange(data.n_users)
    torch.testing.assert_close(fused.score_all(users), 0.5 * gmf.score_all(users) + 0.5 * mlp.score_all(users),
                               rtol=1e-4, atol=1e-5)


def test_neumf_gradients_reach_both_paths():
    data, _ = random_data()
    model = NeuMF(dim=4, mlp_layers=(8, 4), epochs=0, **QUIET).fit(data)
    model.module_.train()
    examples = model._examples(data)
    gen = torch.Generator().manual_seed(0)
    model._loss({k: v[:32] for k, v in examples.items()}, gen).backward()
    for name, p in model.module_.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_neumf_negatives_exclude_training_items():
    data, x = random_data(density=0.5)
    model = NeuMF(epochs=0, **QUIET).fit(data)
    model._examples(data)
    users = torch.arange(data.n_users).repeat(20)
    neg = model.sampler_.sample(users, 4).numpy()
    assert not x[users.numpy()[:, None], neg].any()


@pytest.mark.parametrize("kw", [{"mode": "gmf"}, {"mode": "mlp"}, {"mode": "neumf"},
                                {"pretrain": True, "finetune_lr": 3e-3, "epochs": 20}])
def test_neumf_learns_planted_groups(kw):
    data, group, n_half = planted()
    # init_std 0.1 rather than the paper's 0.01: on 320 interactions the MLP otherwise has too
    # few steps to leave the "every ReLU on or off" regime, where it is additive in user and
    # item and cannot express the groups
    kw = {"mlp_layers": (64, 32, 16), "lr": 3e-3, "batch_size": 32, "epochs": 40, "init_std": 0.1} | kw
    model = NeuMF(**kw, **QUIET).fit(data)
    assert own_group_share(model, group, n_half) >= 0.9


def test_neumf_save_load_roundtrip(tmp_path):
    data, _ = random_data(seed=2)
    model = NeuMF(dim=4, mlp_layers=(8, 4), epochs=2, batch_size=64, **QUIET).fit(data)
    before = model.recommend(np.arange(data.n_users), k=6)
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m", device="cpu")
    assert type(loaded) is NeuMF and tuple(loaded.mlp_layers) == (8, 4)
    after = loaded.recommend(np.arange(data.n_users), k=6)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_neumf_rejects_bad_settings():
    data, _ = random_data()
    with pytest.raises(ValueError, match="mode"):
        NeuMF(mode="ncf", epochs=0, **QUIET).fit(data)
    with pytest.raises(ValueError, match="mlp_layers"):
        NeuMF(mode="mlp", mlp_layers=(7, 4), epochs=0, **QUIET).fit(data)


# ---- Mult-VAE ------------------------------------------------------------------------------------


def test_dense_rows_matches_scipy():
    _, x = random_data()
    csr = sp.csr_matrix(x)
    rows = torch.tensor([5, 0, 5, 29, 3])
    got = dense_rows(torch.as_tensor(csr.indptr).long(), torch.as_tensor(csr.indices).long(), rows, x.shape[1])
    np.testing.assert_array_equal(got.numpy(), x[rows.numpy()])


def test_multvae_shapes_and_loss_by_hand():
    data, x = random_data(n_users=8, n_items=6, density=0.4)
    model = MultVAE(hidden=4, latent=2, anneal_step=1e-3, epochs=0, **QUIET).fit(data)
    m = model.module_.eval()  # no dropout, z = mu: the loss is deterministic
    m.steps.fill_(100)  # beta = 0.1
    users = torch.tensor([6, 1, 3])
    logits, mu, logvar = m(dense_rows(model.indptr_, model.indices_, users, data.n_items))
    assert logits.shape == (3, 6) and mu.shape == logvar.shape == (3, 2)
    loss = model._loss({"user": users}, torch.Generator()).item()

    w = {k: v.double().numpy() for k, v in m.state_dict().items() if k != "steps"}
    xb = x[users.numpy()].astype(np.float64)
    h = xb / np.linalg.norm(xb, axis=1, keepdims=True)
    h = np.tanh(h @ w["encoder.0.weight"].T + w["encoder.0.bias"]) @ w["encoder.2.weight"].T + w["encoder.2.bias"]
    mu_, lv = h[:, :2], h[:, 2:]
    out = np.tanh(mu_ @ w["decoder.0.weight"].T + w["decoder.0.bias"]) @ w["decoder.2.weight"].T + w["decoder.2.bias"]
    log_softmax = out - np.log(np.exp(out).sum(1, keepdims=True))
    nll = -(log_softmax * xb).sum(1)
    kl = 0.5 * (np.exp(lv) + mu_**2 - 1 - lv).sum(1)
    assert loss == pytest.approx(float(np.mean(nll + 0.1 * kl)), rel=1e-5)
    assert int(m.steps) == 100  # evaluating the loss is not a training step
    # scoring = decoder logits from the training row at z = mu
    np.testing.assert_allclose(model.score_all(users).numpy(), out, rtol=1e-4, atol=1e-5)


def test_multvae_kl_annealing_schedule():
    data, _ = random_data()
    model = MultVAE(hidden=8, latent=4, anneal_step=0.05, anneal_cap=0.2, epochs=0, **QUIET).fit(data)
    model.module_.train()
    users = torch.arange(10)
    betas = []
    for _ in range(7):
        betas.append(float(model.beta()))
        model._loss({"user": users}, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(betas, [0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2], atol=1e-7)
    # through the trainer: one step per batch of users (30 users, 12 per batch -> 3 a epoch)
    model = MultVAE(hidden=8, latent=4, anneal_step=0.01, batch_size=12, epochs=4, **QUIET).fit(data)
    assert int(model.module_.steps) == 12
    assert float(model.beta()) == pytest.approx(0.12)


def test_multvae_learns_planted_groups():
    data, group, n_half = planted()
    model = MultVAE(hidden=32, latent=8, lr=1e-2, batch_size=8, epochs=40, anneal_step=1e-3,
                    **QUIET).fit(data)
    assert own_group_share(model, group, n_half) >= 0.9


def test_multvae_save_load_roundtrip(tmp_path):
    data, _ = random_data(seed=3)
    model = MultVAE(hidden=16, latent=4, batch_size=10, epochs=3, **QUIET).fit(data)
    before = model.recommend(np.arange(data.n_users), k=6)
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m", device="cpu")
    assert type(loaded) is MultVAE and int(loaded.module_.steps) == int(model.module_.steps)
    after = loaded.recommend(np.arange(data.n_users), k=6)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])


def test_multvae_scores_from_the_training_row_only():
    rng = np.random.default_rng(4)
    x = rng.random((12, 10)) < 0.4
    x[:, 0] = True
    x[1] = x[0]  # users 0 and 1: the same training row
    u, i = np.nonzero(x)
    data = from_raw(u, i, timestamp=np.arange(len(u)))
    model = MultVAE(hidden=16, latent=4, epochs=2, batch_size=5, **QUIET).fit(data)
    s = model.score_all(torch.tensor([0, 1, 2]))
    torch.testing.assert_close(s[0], s[1])  # nothing user-specific besides the row
    assert not torch.allclose(s[0], s[2])
    assert torch.equal(model.score_all(torch.tensor([0, 1, 2])), s)  # deterministic: no dropout, z = mu
