"""DLRM's fast training path (`recstack.models.ctr.fast_path`): it makes the plain path's updates
(CPU: the fused ops run eagerly with their PyTorch references), it is chosen only where it
applies, and it says why not otherwise."""

import dataclasses
import json

import pytest
import torch

from recstack.features.pipeline import BagLayout, Layout
from recstack.models.ctr.fast_path import FusedDLRMStep, plan
from recstack.models.ctr.models.dlrm import DLRMConfig, DLRMNet
from recstack.models.registry import create_model
from recstack.training.trainer import TrainConfig
from recstack.workflow.ctr import synthetic_criteo_task


@pytest.fixture(scope="module")
def task():
    return synthetic_criteo_task("synthetic-criteo:12000?max_cardinality=300")


def _fit(task, mode, **kw):
    m = create_model("dlrm", device="cpu", sparse=True, batch_size=500, epochs=2, patience=0,
                     progress=False, fast_path=mode, **kw)
    return m.fit(task)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_fast_path_fit_makes_the_plain_paths_updates(task):
    fast, plain = _fit(task, "always"), _fit(task, "never")
    assert fast.fast_path_.used and not fast.fast_path_.graph
    assert not plain.fast_path_.used and plain.fast_path_.reason == "fast_path=never"
    a, b = fast.module_.state_dict(), plain.module_.state_dict()
    assert a.keys() == b.keys()  # the fitted model is the plain one: same weights, same files
    for k in a:
        if k != "embed.table.weight":
            torch.testing.assert_close(a[k], b[k], atol=2e-4, rtol=1e-3)
    # row-wise Adagrad divides by sqrt of a row's accumulated squared gradient: a row touched
    # once moves by lr * g / |g|, so float rounding in near-zero gradients shows in a few rows
    assert _rel(a["embed.table.weight"], b["embed.table.weight"]) < 1e-3
    va, vb = fast.evaluate(task.valid), plain.evaluate(task.valid)
    assert abs(va["auc"] - vb["auc"]) < 1e-4 and abs(va["logloss"] - vb["logloss"]) < 1e-4
    la = [h["loss"] for h in fast.train_result_.history]
    lb = [h["loss"] for h in plain.train_result_.history]
    assert la == pytest.approx(lb, rel=1e-4)
    # the optimiser's state (what checkpoints hold) has the plain path's layout and values
    sa = fast.module_.embed.table.weight
    assert sa.shape == plain.module_.embed.table.weight.shape


def test_one_fused_step_equals_one_plain_step_exactly_enough():
    torch.manual_seed(0)
    sizes = [30, 7, 50, 12]
    layout = Layout(cat_names=[f"C{i}" for i in range(4)], cat_sizes=sizes, num_names=["I1", "I2", "I3"])
    cfg = DLRMConfig(dim=8, sparse=True, bottom=(16,), top=(16,), init_std=0.1, dropout=0.0)
    train = TrainConfig(lr=1e-2, amp=False)
    fast_net, plain_net = DLRMNet(layout, cfg), DLRMNet(layout, cfg)
    plain_net.load_state_dict(fast_net.state_dict())
    step = FusedDLRMStep(fast_net, train, embedding_lr=cfg.embedding_lr)
    opt = plain_net.make_optimizer(train)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        codes = torch.stack([torch.randint(0, s, (64,)) for s in sizes], 1)
        codes[:10] = codes[0]  # duplicate rows: merged before the update on both paths
        batch = {"cat": codes, "num": torch.randn(64, 3), "label": torch.randint(0, 2, (64,)).float()}
        loss_fast = step(step.prepare(batch, gen))
        loss_plain = plain_net.loss(plain_net(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss_plain.backward()
        opt.step()
        torch.testing.assert_close(loss_fast, loss_plain.detach(), atol=1e-6, rtol=1e-5)
    for (k, pa), pb in zip(fast_net.state_dict().items(), plain_net.state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-5, rtol=1e-4, msg=k)
    # the accumulator the fast path updated is the plain optimiser's state layout
    acc_fast = step.table_opt.state[fast_net.embed.table.weight]["sum"]
    acc_plain = opt.optimizers[0].state[plain_net.embed.table.weight]["sum"]
    torch.testing.assert_close(acc_fast, acc_plain, atol=1e-6, rtol=1e-4)
    assert json.loads(json.dumps(step.optimizer.state_dict()["optimizers"][0]["param_groups"]))  # checkpointable


def _net(**layout_kw):
    base = dict(cat_names=["C1", "C2"], cat_sizes=[10, 20], num_names=["I1"])
    return DLRMNet(Layout(**(base | layout_kw)), DLRMConfig(dim=16, sparse=True))


@pytest.mark.parametrize(("change", "why"), [
    ({"mode": "never"}, "fast_path=never"),
    ({"cfg": {"sparse": False}}, "sparse=false"),
    ({"layout": {"num_names": []}}, "numeric features and categorical fields only"),
    ({"layout": {"bags": [BagLayout("hist", 20, 5, None)]}}, "no bags"),
    ({"train": {"grad_clip": 1.0}}, "grad_clip"),
    ({"train": {"optimizer": "sgd"}}, "optimizer=sgd"),
    ({"distributed": True}, "torch.distributed"),
    ({}, "on the CPU"),
])
def test_plan_says_why_the_fast_path_is_not_taken(change, why):
    net = _net(**change.get("layout", {}))
    cfg = dataclasses.replace(net.cfg, **change.get("cfg", {}))
    train = TrainConfig(**change.get("train", {}))
    p = plan(net, cfg, train, torch.device("cpu"), mode=change.get("mode", "auto"),
             distributed=change.get("distributed", False))
    assert not p.used and why in p.reason and why in p.describe()


def test_plan_on_cuda_takes_graph_and_kernels_unless_something_rules_them_out(monkeypatch):
    from recstack.models.ctr import fast_path

    monkeypatch.setattr(fast_path, "HAVE_TRITON", True)
    net, cuda = _net(), torch.device("cuda")
    p = plan(net, net.cfg, TrainConfig(plateau_factor=1.0), cuda)
    assert p.used and p.graph and p.kernels == "triton" and p.reason == ""
    p = plan(net, net.cfg, TrainConfig(plateau_factor=0.5), cuda)
    assert p.used and not p.graph and "learning-rate schedule" in p.reason
    p = plan(net, dataclasses.replace(net.cfg, dim=24), TrainConfig(plateau_factor=1.0), cuda)
    assert p.used and p.kernels == "pytorch" and "power of two" in p.reason
    monkeypatch.setattr(fast_path, "HAVE_TRITON", False)
    p = plan(net, net.cfg, TrainConfig(plateau_factor=1.0), cuda)
    assert p.used and p.kernels == "pytorch" and "Triton is not installed" in p.reason
    with pytest.raises(ValueError, match="fast_path must be one of"):
        plan(net, net.cfg, TrainConfig(), cuda, mode="on")


def test_fast_path_value_is_checked_by_the_model_contract():
    with pytest.raises(ValueError, match="fast_path"):
        create_model("dlrm", fast_path="sometimes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA graph path needs a CUDA device")
def test_cuda_fast_path_fits_like_the_plain_path(task):
    def fit(mode):
        m = create_model("dlrm", device="cuda", sparse=True, batch_size=1000, epochs=2, patience=0,
                         progress=False, fast_path=mode, dim=16)
        return m.fit(task)

    fast, plain = fit("auto"), fit("never")
    assert fast.fast_path_.used and fast.fast_path_.graph
    va, vb = fast.evaluate(task.valid), plain.evaluate(task.valid)
    assert abs(va["auc"] - vb["auc"]) < 5e-3, (va, vb)  # bf16 activations on both paths: within noise
