"""Mult-VAE (Liang et al., WWW 2018) against the paper and its authors' code: the KL annealing
schedule (per step, capped, resumed exactly), the loss on a case computed by hand, dropout on the
normalised input, scoring from mu, the sync-free batch densification, float32 softmax under bf16
autocast, the defaults, and learning on generated data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from model_data import own_group_share, planted, random_data

from recstack.data import from_raw
from recstack.models import Recommender
from recstack.models.multvae import MultVAE, MultVAEModule, dense_rows

QUIET = {"device": "cpu", "progress": False}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_defaults_are_the_papers_architecture_and_training():
    p = MultVAE().get_params()
    assert (p["hidden"], p["latent"], p["dropout"]) == (600, 200, 0.5)
    assert (p["lr"], p["batch_size"], p["epochs"], p["weight_decay"], p["optimizer"]) == (1e-3, 500, 200, 0.0, "adam")
    assert p["plateau_factor"] == 1.0  # no learning-rate schedule
    # validation NDCG@20 every 5 epochs; 10 checks without a gain = 50 epochs past the best
    assert (p["monitor"], p["eval_every"], p["patience"]) == ("ndcg@20", 5, 10)
    assert (p["anneal_cap"], p["anneal_step"]) == (1.0, 1.0)  # chosen on validation
    m = MultVAEModule(50)
    assert [tuple(lin.weight.shape) for lin in (*m.encoder[::2], *m.decoder[::2])] == [
        (600, 50), (400, 600), (600, 200), (50, 600)]
    assert all(isinstance(a, torch.nn.Tanh) for a in (m.encoder[1], m.decoder[1]))
    biases = torch.cat([lin.bias for lin in (*m.encoder[::2], *m.decoder[::2])])
    assert biases.abs().max() <= 0.002 and 0.0005 < biases.std() < 0.0015  # truncated N(0, 0.001^2)


# ---- the annealing schedule ------------------------------------------------------------------------


def test_beta_grows_by_anneal_step_per_gradient_step_up_to_the_cap():
    data, _ = random_data()
    model = MultVAE(hidden=8, latent=4, anneal_step=1 / 200_000, anneal_cap=0.2, epochs=0, **QUIET).fit(data)
    m = model.module_.train()
    gen = torch.Generator().manual_seed(0)
    users = torch.arange(10)
    betas = []
    for _ in range(3):
        betas.append(float(model.beta()))
        model._loss({"user": users}, gen)  # one loss = one gradient step
    assert betas == pytest.approx([0.0, 5e-6, 1e-5], abs=1e-12)
    for t, expect in [(39_999, 0.199995), (40_000, 0.2), (45_000, 0.2), (10**9, 0.2)]:
        m.steps.fill_(t)
        assert float(model.beta()) == pytest.approx(expect, rel=1e-6)
    model.module_.eval()
    model._loss({"user": users}, gen)  # not a training step
    assert int(m.steps) == 10**9


def test_beta_at_the_cap_from_the_second_step_with_the_defaults():
    data, _ = random_data()
    model = MultVAE(hidden=8, latent=4, epochs=0, **QUIET).fit(data)
    model.module_.train()
    betas = []
    for _ in range(3):
        betas.append(float(model.beta()))
        model._loss({"user": torch.arange(5)}, torch.Generator().manual_seed(0))
    assert betas == [0.0, 1.0, 1.0]


def test_trainer_counts_one_step_per_batch_and_a_resume_keeps_the_schedule(tmp_path):
    data, _ = random_data()  # 30 users, 12 a batch: 3 steps an epoch
    kw = {"hidden": 8, "latent": 4, "anneal_step": 0.01, "anneal_cap": 0.5, "batch_size": 12, **QUIET}
    whole = MultVAE(epochs=4, **kw).fit(data)
    assert int(whole.module_.steps) == 12 and float(whole.beta()) == pytest.approx(0.12)
    ckpt = str(tmp_path / "ckpt")
    MultVAE(epochs=2, checkpoint_dir=ckpt, **kw).fit(data)  # interrupted after 2 epochs
    resumed = MultVAE(epochs=4, checkpoint_dir=ckpt, **kw).fit(data)
    assert int(resumed.module_.steps) == 12
    for k, v in whole.module_.state_dict().items():
        torch.testing.assert_close(resumed.module_.state_dict()[k], v, msg=k)


# ---- the loss ----------------------------------------------------------------------------------------


def test_loss_by_hand_multinomial_log_likelihood_plus_beta_kl():
    """Zero weights: mu, log sigma^2 and the logits are the biases, whatever the input and the
    noise; the loss is then known in closed form."""
    x = np.array([[1, 1, 0], [0, 0, 1]], dtype=np.float32)
    u, i = np.nonzero(x)
    data = from_raw(u, i, timestamp=np.arange(len(u)))
    model = MultVAE(hidden=2, latent=1, anneal_step=0.1, anneal_cap=0.2, epochs=0, **QUIET).fit(data)
    m = model.module_
    with torch.no_grad():
        for layer in (*m.encoder[::2], *m.decoder[::2]):
            layer.weight.zero_()
            layer.bias.zero_()
        m.encoder[2].bias.copy_(torch.tensor([0.5, math.log(0.25)]))  # mu = 0.5, sigma^2 = 0.25
        m.decoder[2].bias.copy_(torch.log(torch.tensor([0.5, 0.3, 0.2])))  # pi = (0.5, 0.3, 0.2)
    nll = np.array([-(math.log(0.5) + math.log(0.3)), -math.log(0.2)])
    kl = 0.5 * (0.25 + 0.5**2 - 1 - math.log(0.25))  # 0.5 (sigma^2 + mu^2 - 1 - log sigma^2)
    users = torch.tensor([0, 1])
    m.train()  # dropout and sampling on: no effect with zero weights
    m.steps.fill_(1)  # beta = 0.1
    loss = model._loss({"user": users}, torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(float(np.mean(nll + 0.1 * kl)), rel=1e-6)  # mean over users
    assert int(m.steps) == 2
    loss = model._loss({"user": users}, torch.Generator().manual_seed(0))  # beta = 0.2 (the cap)
    assert loss.item() == pytest.approx(float(np.mean(nll + 0.2 * kl)), rel=1e-6)
    assert float(np.mean(nll)) == pytest.approx(1.753279, abs=1e-6) and kl == pytest.approx(0.443147, abs=1e-6)


def test_softmax_is_float32_under_bf16_autocast():
    data, _ = random_data(n_users=40, n_items=300, density=0.05)
    model = MultVAE(hidden=16, latent=4, anneal_cap=0.3, epochs=0, **QUIET).fit(data)
    model.module_.eval()
    users = torch.arange(40)
    ref = model._loss({"user": users}, torch.Generator())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = model._loss({"user": users}, torch.Generator())
        logits, mu, logvar = model.module_(dense_rows(model.indptr_, model.indices_, users, data.n_items))
    assert logits.dtype == torch.bfloat16 and mu.dtype == logvar.dtype == torch.float32
    assert got.dtype == torch.float32 and torch.isfinite(got)
    assert got.item() == pytest.approx(ref.item(), rel=2e-2)


# ---- input: normalisation and dropout ----------------------------------------------------------------


def _encoder_input(m: MultVAEModule, x: torch.Tensor) -> torch.Tensor:
    seen = []
    h = m.encoder[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[0].detach()))
    try:
        m(x, torch.Generator().manual_seed(0))
    finally:
        h.remove()
    return seen[0]


def test_input_is_l2_normalised_then_dropped_out():
    torch.manual_seed(0)
    m = MultVAEModule(200, hidden=8, latent=2, dropout=0.5)
    x = (torch.rand(64, 200) < 0.3).float()
    x[0] = 0.0
    x[0, 7] = 1.0  # a one-item history
    unit = x / x.norm(dim=1, keepdim=True)
    torch.testing.assert_close(_encoder_input(m.eval(), x), unit)  # no dropout when scoring
    torch.manual_seed(1)
    h = _encoder_input(m.train(), x)
    kept = h != 0
    torch.testing.assert_close(h[kept], (unit / 0.5)[kept])  # survivors scaled by 1 / (1 - p)
    assert not h[x == 0].any()
    share = kept[x > 0].float().mean().item()
    assert 0.45 < share < 0.55  # about half of the user's items dropped


# ---- scoring: z = mu, deterministic ------------------------------------------------------------------


def test_scoring_decodes_mu_and_is_deterministic():
    data, x = random_data(seed=5)
    model = MultVAE(hidden=16, latent=4, epochs=2, batch_size=8, **QUIET).fit(data)
    m = model.module_
    users = torch.arange(data.n_users)
    s1, s2 = model.score_all(users), model.score_all(users)
    assert torch.equal(s1, s2)
    with torch.no_grad():
        rows = torch.as_tensor(x)
        mu, _ = m.eval().encode(rows)
        torch.testing.assert_close(s1, m.decoder(mu), rtol=1e-5, atol=1e-6)
        m.train()
        sampled = m(rows, torch.Generator().manual_seed(0))[0]
        m.eval()
    assert not torch.allclose(sampled, s1)  # training decodes a sample, scoring does not


# ---- batches from the CSR on the device, no host sync ------------------------------------------------


@pytest.mark.parametrize("n_rows", [1, 7, 30, 50])
def test_dense_rows_with_a_bound_matches_the_exact_densification(n_rows):
    rng = np.random.default_rng(n_rows)
    m = rng.random((50, 40)) < rng.random((50, 1)) * 0.6
    m[3] = False  # an empty row
    csr = sp.csr_matrix(m)
    indptr, indices = torch.as_tensor(csr.indptr).long(), torch.as_tensor(csr.indices).long()
    rows = torch.randperm(50, generator=torch.Generator().manual_seed(n_rows))[:n_rows]
    bound = int(np.sort(np.diff(csr.indptr))[::-1][:n_rows].sum())
    exact = dense_rows(indptr, indices, rows, 40)
    np.testing.assert_array_equal(exact.numpy(), m[rows.numpy()].astype(np.float32))
    for b in (bound, bound + 13):
        got = dense_rows(indptr, indices, rows, 40, max_nnz=b)
        assert got.shape == (n_rows, 40) and got.is_contiguous()
        torch.testing.assert_close(got, exact)


def test_training_batches_use_the_bound_of_the_longest_rows():
    data, x = random_data(n_users=30, n_items=20, density=0.4, seed=2)
    model = MultVAE(hidden=8, latent=4, batch_size=7, epochs=0, **QUIET).fit(data)
    model._examples(data)
    assert model.max_batch_nnz_ == int(np.sort(x.sum(1))[::-1][:7].sum())


# ---- learning ----------------------------------------------------------------------------------------


def test_short_fit_beats_random_recall_on_generated_clusters():
    """Four user groups, each consuming items of its own quarter of the catalogue; one held-out
    item per user must come back in the top 10 far more often than at random (10 / 60)."""
    rng = np.random.default_rng(0)
    n_users, n_items, groups = 80, 60, 4
    per = n_items // groups
    rows, held = [], []
    for u in range(n_users):
        g = u % groups
        items = g * per + rng.choice(per, 7, replace=False)
        rows.append(items[:-1])
        held.append(items[-1])
    u = np.repeat(np.arange(n_users), 6)
    i = np.concatenate(rows)
    # every item must appear in train for the vocabulary: add one anchor user per missing item
    seen = set(i.tolist())
    extra = [it for it in range(n_items) if it not in seen]
    uu = np.concatenate([u, n_users + np.arange(len(extra))])
    ii = np.concatenate([i, np.array(extra, dtype=i.dtype)])
    data = from_raw(uu, ii, timestamp=np.arange(len(uu)))
    model = MultVAE(hidden=32, latent=8, lr=1e-2, batch_size=16, epochs=30, **QUIET).fit(data)
    recs, _ = model.recommend(np.arange(n_users), k=10)
    recall = float(np.mean([held[v] in recs[v] for v in range(n_users)]))
    assert recall >= 0.4 > 10 / n_items * 2


# ---- the earlier checks: shapes, loss, schedule, learning, save/load -----------------------------


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
