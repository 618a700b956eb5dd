"""NeuMF (He et al. 2017): forward passes against the paper's formulas, the pre-training
initialisation, negatives, learning on planted structure and exact save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_data import own_group_share, planted, random_data

from recstack.models import Recommender
from recstack.models import neumf as neumf_mod
from recstack.models.neumf import NeuMF, NeuMFModule

QUIET = {"device": "cpu", "progress": False}
pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
