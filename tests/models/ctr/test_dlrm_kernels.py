"""The Triton kernels of `recstack.models.ctr.dlrm_kernels` against their PyTorch references, on
fresh random inputs. They run on a CUDA device with Triton, or on the CPU under Triton's
interpreter (``TRITON_INTERPRET=1``); otherwise they are skipped (the references themselves are
checked against the plain DLRM step in test_fused_table.py)."""

import pytest
import torch

from recstack.models.ctr import dlrm_kernels as K

if not K.HAVE_TRITON or not (K._INTERPRET or torch.cuda.is_available()):
    pytest.skip("needs Triton on a CUDA device or TRITON_INTERPRET=1", allow_module_level=True)

DEVICE = "cpu" if K._INTERPRET else "cuda"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("batch", [37, 64])
def test_interaction_kernels_match_reference(batch):
    g = torch.Generator().manual_seed(batch)
    f, d, n_rows = 26, 32, 300
    w = torch.randn(n_rows, d, generator=g).to(torch.bfloat16).to(DEVICE)
    x = torch.randn(batch, d, generator=g).to(torch.bfloat16).to(DEVICE)
    rows = torch.randint(0, n_rows, (batch, f), generator=g).to(DEVICE)
    out = K.interaction_forward(x, w, rows)
    ref = K.interaction_forward_torch(x, w, rows)
    assert out.shape == (batch, K.interaction_width(f, d)) and torch.isfinite(out).all()
    assert torch.equal(out[:, :d], x) and _rel(out, ref) < 1e-2
    grad = torch.randn(out.shape, generator=g).to(torch.bfloat16).to(DEVICE)
    dx, de = K.interaction_backward(grad, x, w, rows)
    dxr, der = K.interaction_backward_torch(grad, x, w, rows)
    assert de.shape == (batch * f, d) and _rel(dx, dxr) < 1e-2 and _rel(de, der) < 1e-2


def test_segment_sum_and_update_match_reference():
    g = torch.Generator().manual_seed(0)
    n_rows, d = 500, 64
    rows = torch.randint(0, n_rows, (200, 13), generator=g)
    rows[:150, 2] = 7  # one segment spanning several blocks of the kernel
    rows = rows.to(DEVICE)
    grads = torch.randn(rows.numel(), d, generator=g).to(torch.bfloat16).to(DEVICE)
    s = K.sort_rows(rows, n_rows)
    got = K.segment_sum(grads, s)
    want = torch.zeros(n_rows, d, dtype=torch.float64).index_add_(
        0, rows.reshape(-1).cpu(), grads.double().cpu())[s.unique.cpu()]
    torch.testing.assert_close(got.double().cpu(), want, atol=1e-4, rtol=1e-5)
    w = torch.randn(n_rows, d, generator=g).to(torch.bfloat16).to(DEVICE)
    acc = torch.rand(n_rows, generator=g).to(DEVICE)
    w_ref, acc_ref = w.clone(), acc.clone()
    K.rowwise_adagrad_update(w, acc, s.unique, got, 0.1, 1e-8)
    a2 = acc_ref.index_select(0, s.unique) + got.square().mean(1)
    acc_ref.index_copy_(0, s.unique, a2)
    w2 = w_ref.index_select(0, s.unique).float() - got * (0.1 / (a2.sqrt() + 1e-8)).unsqueeze(1)
    w_ref.index_copy_(0, s.unique, w2.to(w_ref.dtype))
    torch.testing.assert_close(acc, acc_ref)
    torch.testing.assert_close(w.float(), w_ref.float(), atol=1e-2, rtol=1e-2)  # 1 bf16 ulp
    untouched = torch.ones(n_rows, dtype=torch.bool, device=DEVICE)
    untouched[s.unique] = False
    assert torch.equal(w[untouched], w_ref[untouched])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
def test_graphed_fast_step_trains_like_the_eager_fast_step():
    import copy

    from recstack.features.pipeline import Layout
    from recstack.models.ctr.fast_path import FusedDLRMStep
    from recstack.models.ctr.models.dlrm import DLRMConfig, DLRMNet
    from recstack.training.trainer import TrainConfig

    torch.manual_seed(0)
    sizes = [50, 7, 300, 20]
    layout = Layout(cat_names=[f"C{i}" for i in range(4)], cat_sizes=sizes, num_names=["I1", "I2"])
    eager = DLRMNet(layout, DLRMConfig(dim=32, sparse=True, bottom=(16,), top=(16,), init_std=0.1,
                                       dropout=0.0)).cuda()
    graphed = copy.deepcopy(eager)
    train = TrainConfig(lr=1e-2)
    step_e = FusedDLRMStep(eager, train, 0.1, graph=False)
    step_g = FusedDLRMStep(graphed, train, 0.1, graph=True, warmup=2)
    gen = torch.Generator(device="cuda")
    w_start = eager.embed.table.weight.detach().clone()
    for i in range(7):  # 2 eager warm-up steps, the capture, replays, and a batch of another size
        n = 100 if i == 5 else 256
        batch = {"cat": torch.stack([torch.randint(0, s, (n,)) for s in sizes], 1).cuda(),
                 "num": torch.randn(n, 2).cuda(), "label": torch.randint(0, 2, (n,)).float().cuda()}
        loss_e = step_e(step_e.prepare(batch, gen))
        loss_g = step_g(step_g.prepare(batch, gen))
        torch.testing.assert_close(loss_g, loss_e, atol=1e-4, rtol=1e-3)
    assert step_g.graph is not None and step_e.graph is None
    for pe, pg in zip(eager.parameters(), graphed.parameters(), strict=True):
        torch.testing.assert_close(pg, pe, atol=1e-3, rtol=1e-2)
    assert (graphed.embed.table.weight != w_start).any(1).sum() > 100  # the table did train
