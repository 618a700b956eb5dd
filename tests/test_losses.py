"""Losses against hand-computed formulas (plain Python math) plus key properties."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from recstack.losses import (
    accidental_hits,
    bce_loss,
    bpr_loss,
    cosine_contrastive_loss,
    full_softmax_loss,
    in_batch_softmax_loss,
    info_nce_loss,
    mixed_logq,
    mixed_negative_loss,
    sampled_softmax_loss,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def lse(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


def t(x: object) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def close(a: torch.Tensor, b: float | torch.Tensor, tol: float = 1e-5) -> bool:
    return torch.allclose(a.detach().cpu().float(), torch.as_tensor(b).float(), atol=tol, rtol=tol)


# ---- pointwise / pairwise ---------------------------------------------------------------------
POS = [1.0, -0.5]
NEG = [[0.2, -1.0, 0.7], [2.0, 0.3, -0.4]]


def test_bce_matches_formula() -> None:
    per_sum = [
        -math.log(sig(p)) - sum(math.log(1 - sig(n)) for n in ns)
        for p, ns in zip(POS, NEG, strict=True)
    ]
    per_mean = [
        -math.log(sig(p)) - sum(math.log(1 - sig(n)) for n in ns) / len(ns)
        for p, ns in zip(POS, NEG, strict=True)
    ]
    assert close(bce_loss(t(POS), t(NEG)), sum(per_sum) / 2)
    assert close(bce_loss(t(POS), t(NEG), neg_reduction="mean"), sum(per_mean) / 2)
    assert close(bce_loss(t(POS), t(NEG), reduction="none"), per_sum)
    # one negative given as [B]
    one = [-math.log(sig(p)) - math.log(1 - sig(ns[0])) for p, ns in zip(POS, NEG, strict=True)]
    assert close(bce_loss(t(POS), t([r[0] for r in NEG])), sum(one) / 2)


def test_bce_stable_for_large_logits() -> None:
    loss = bce_loss(t([1000.0, -1000.0]), t([[-1000.0], [1000.0]]))
    assert torch.isfinite(loss)
    assert close(loss, 1000.0 * 2 / 2, tol=1e-3)


def test_bpr_matches_formula() -> None:
    per = [sum(-math.log(sig(p - n)) for n in ns) / len(ns) for p, ns in zip(POS, NEG, strict=True)]
    assert close(bpr_loss(t(POS), t(NEG)), sum(per) / 2)
    assert close(bpr_loss(t(POS), t(NEG), reduction="sum"), sum(per))
    assert close(bpr_loss(t(POS), t([1.5, 0.0])), (-math.log(sig(-0.5)) - math.log(sig(-0.5))) / 2)


def test_weighted_mean_convention() -> None:
    per = bpr_loss(t(POS), t(NEG), reduction="none")
    w = t([3.0, 1.0])
    assert close(bpr_loss(t(POS), t(NEG), weight=w), (3 * per[0] + per[1]) / 4)
    assert close(bpr_loss(t(POS), t(NEG), weight=torch.ones(2)), bpr_loss(t(POS), t(NEG)))
    assert close(bpr_loss(t(POS), t(NEG), weight=w, reduction="sum"), 3 * per[0] + per[1])


# ---- sampled softmax --------------------------------------------------------------------------
def _manual_sampled(pos, neg, pos_lq, neg_lq, tau, drop=None):
    out = []
    for b in range(len(pos)):
        lp = pos[b] / tau - pos_lq[b]
        ln = [
            neg[b][j] / tau - neg_lq[b][j] for j in range(len(neg[b])) if not (drop and drop[b][j])
        ]
        out.append(lse([lp] + ln) - lp)
    return out


def test_sampled_softmax_matches_formula() -> None:
    pos_lq = [math.log(0.01), math.log(0.2)]
    neg_lq = [
        [math.log(0.3), math.log(0.05), math.log(0.001)],
        [math.log(0.1), math.log(0.4), math.log(0.02)],
    ]
    tau = 0.5
    want = _manual_sampled(POS, NEG, pos_lq, neg_lq, tau)
    got = sampled_softmax_loss(
        t(POS), t(NEG), t(pos_lq), t(neg_lq), temperature=tau, reduction="none"
    )
    assert close(got, want)
    # no correction == plain cross-entropy with the positive in column 0
    plain = F.cross_entropy(
        torch.cat([t(POS)[:, None], t(NEG)], 1), torch.zeros(2, dtype=torch.long)
    )
    assert close(sampled_softmax_loss(t(POS), t(NEG)), plain)


def test_sampled_softmax_uniform_logq_is_noop() -> None:
    lq = math.log(1 / 1000)
    a = sampled_softmax_loss(t(POS), t(NEG), torch.full((2,), lq), torch.full((2, 3), lq))
    assert close(a, sampled_softmax_loss(t(POS), t(NEG)))
    # shared [N] logQ broadcast over rows
    b = sampled_softmax_loss(t(POS), t(NEG), torch.full((2,), lq), torch.full((3,), lq))
    assert close(b, a)


def test_logq_sign_lowers_popular_items() -> None:
    pos, neg = t([0.5]), t([[0.5, 0.5]])
    rare = math.log(1e-4)
    base_pos, base_neg = t([rare]), t([[rare, rare]])
    # popular negative (high q): its corrected logit drops -> it competes less -> lower loss
    pop_neg = t([[math.log(0.5), rare]])
    assert sampled_softmax_loss(pos, neg, base_pos, pop_neg) < sampled_softmax_loss(
        pos, neg, base_pos, base_neg
    )
    # popular positive: its logit drops -> higher loss
    assert sampled_softmax_loss(pos, neg, t([math.log(0.5)]), base_neg) > sampled_softmax_loss(
        pos, neg, base_pos, base_neg
    )
    # and the gradient on the popular negative's score is smaller (it is pushed down less)
    n1 = neg.clone().requires_grad_()
    sampled_softmax_loss(pos, n1, base_pos, pop_neg).backward()
    assert n1.grad[0, 0] < n1.grad[0, 1]


def test_sampled_softmax_accidental_hits() -> None:
    pos_ids = torch.tensor([7, 3])
    neg_ids = torch.tensor([[1, 7, 2], [3, 5, 3]])
    mask = accidental_hits(pos_ids, neg_ids)
    assert mask.tolist() == [[False, True, False], [True, False, True]]
    got = sampled_softmax_loss(t(POS), t(NEG), remove_accidental_hits=mask, reduction="none")
    zeros = [[0.0] * 3] * 2
    want = _manual_sampled(POS, NEG, [0.0, 0.0], zeros, 1.0, drop=mask.tolist())
    assert close(got, want)
    # row 0 == the loss computed without the duplicate column at all
    alone = sampled_softmax_loss(t(POS[:1]), t([[NEG[0][0], NEG[0][2]]]))
    assert close(got[0], alone)
    # shared negatives [N]
    assert accidental_hits(pos_ids, torch.tensor([3, 9])).tolist() == [
        [False, False],
        [True, False],
    ]


# ---- in-batch / mixed -------------------------------------------------------------------------
Q = [[1.0, 0.0], [0.5, 0.5], [-0.3, 1.2], [0.2, -0.7]]
V = [[0.8, 0.1], [0.0, 1.0], [0.4, 0.4], [-1.0, 0.3]]


def dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _manual_in_batch(q, v, tau=1.0, logq=None, ids=None, extra=None, extra_ids=None, extra_lq=None):
    out = []
    for i in range(len(q)):
        row = []
        for j in range(len(v)):
            if ids is not None and j != i and ids[j] == ids[i]:
                continue
            row.append(dot(q[i], v[j]) / tau - (logq[j] if logq else 0.0))
            if j == i:
                target = row[-1]
        for k in range(len(extra or [])):
            if extra_ids[k] == ids[i]:
                continue
            row.append(dot(q[i], extra[k]) / tau - (extra_lq[k] if extra_lq else 0.0))
        out.append(lse(row) - target)
    return out


def test_in_batch_matches_formula() -> None:
    logq = [math.log(p) for p in (0.4, 0.1, 0.3, 0.2)]
    got = in_batch_softmax_loss(t(Q), t(V), logq=t(logq), temperature=0.2, reduction="none")
    assert close(got, _manual_in_batch(Q, V, 0.2, logq), tol=1e-4)
    assert close(in_batch_softmax_loss(t(Q), t(V)), sum(_manual_in_batch(Q, V)) / 4)


def test_in_batch_uniform_logq_is_noop() -> None:
    a = in_batch_softmax_loss(t(Q), t(V), logq=torch.full((4,), math.log(0.01)), temperature=0.5)
    assert close(a, in_batch_softmax_loss(t(Q), t(V), temperature=0.5))


def test_in_batch_duplicate_masking() -> None:
    ids = torch.tensor([10, 11, 10, 12])  # rows 0 and 2 share the same item
    got = in_batch_softmax_loss(t(Q), t(V), item_ids=ids, reduction="none")
    assert close(got, _manual_in_batch(Q, V, ids=ids.tolist()))
    # row 0 == its loss on the batch without the duplicate (rows 0, 1, 3)
    keep = [0, 1, 3]
    sub = in_batch_softmax_loss(t(Q)[keep], t(V)[keep], reduction="none")
    assert close(got[0], sub[0])
    keep = [1, 2, 3]
    sub = in_batch_softmax_loss(t(Q)[keep], t(V)[keep], reduction="none")
    assert close(got[2], sub[1])
    # without ids the duplicate acts as a negative and the loss differs
    assert not close(in_batch_softmax_loss(t(Q), t(V), reduction="none")[0], got[0])


EXTRA = [[0.3, 0.3], [1.0, -0.2], [0.1, 0.9]]


def test_mixed_negative_matches_formula() -> None:
    ids = [10, 11, 10, 12]
    extra_ids = [11, 99, 12]  # 11 / 12 collide with rows 1 / 3 positives
    lq_b = [math.log(p) for p in (0.4, 0.1, 0.4, 0.2)]
    lq_n = [math.log(p) for p in (0.05, 0.02, 0.01)]
    got = mixed_negative_loss(
        t(Q),
        t(V),
        t(EXTRA),
        torch.tensor(ids),
        torch.tensor(extra_ids),
        t(lq_b),
        t(lq_n),
        0.5,
        reduction="none",
    )
    want = _manual_in_batch(Q, V, 0.5, lq_b, ids, EXTRA, extra_ids, lq_n)
    assert close(got, want, tol=1e-4)


def test_mixed_negative_properties() -> None:
    ids, extra_ids = torch.tensor([10, 11, 13, 12]), torch.tensor([11, 99, 12])
    base = mixed_negative_loss(t(Q), t(V), t(EXTRA), ids, extra_ids)
    # uniform logQ on both parts: no change
    c = math.log(1e-3)
    same = mixed_negative_loss(
        t(Q), t(V), t(EXTRA), ids, extra_ids, torch.full((4,), c), torch.full((3,), c)
    )
    assert close(same, base)
    # no extra items -> in-batch softmax
    empty = torch.zeros(0, 2)
    assert close(
        mixed_negative_loss(t(Q), t(V), empty, ids, torch.zeros(0, dtype=torch.long)),
        in_batch_softmax_loss(t(Q), t(V), item_ids=ids),
    )
    # a masked extra item (the positive itself) contributes nothing: same as dropping it
    per = mixed_negative_loss(t(Q), t(V), t(EXTRA), ids, extra_ids, reduction="none")
    dropped = mixed_negative_loss(t(Q), t(V), t(EXTRA)[1:], ids, extra_ids[1:], reduction="none")
    assert close(per[1], dropped[1])
    assert not close(per[0], dropped[0])


def test_mixed_logq() -> None:
    lp = t([math.log(0.5), math.log(1e-6)])
    got = mixed_logq(lp, n_items=1000, n_batch=6, n_uniform=2)
    want = [math.log(6 / 8 * 0.5 + 2 / 8 / 1000), math.log(6 / 8 * 1e-6 + 2 / 8 / 1000)]
    assert close(got, want)
    assert close(mixed_logq(lp, 1000, 6, 0), lp)


# ---- full softmax / contrastive ---------------------------------------------------------------
def test_full_softmax_matches_formula_and_ignore_index() -> None:
    logits = [[1.0, 2.0, 0.5, -1.0], [0.0, 0.3, 3.0, 1.0], [2.0, 2.0, 2.0, 2.0]]
    target = [1, 3, -100]
    per = [lse(logits[i]) - logits[i][target[i]] for i in range(2)]
    assert close(full_softmax_loss(t(logits), torch.tensor(target)), sum(per) / 2)
    none = full_softmax_loss(t(logits), torch.tensor(target), reduction="none")
    assert close(none, per + [0.0])
    ref = F.cross_entropy(t(logits), torch.tensor(target), ignore_index=-100)
    assert close(full_softmax_loss(t(logits), torch.tensor(target)), ref)
    # custom ignore_index, [B, L, C] logits, all ignored -> 0 (not NaN)
    x = torch.randn(2, 3, 5)
    y = torch.tensor([[1, 0, 4], [0, 0, 2]])
    ref = F.cross_entropy(x.reshape(-1, 5), y.reshape(-1), ignore_index=0)
    assert close(full_softmax_loss(x, y, ignore_index=0), ref)
    assert full_softmax_loss(x, torch.zeros_like(y), ignore_index=0).item() == 0.0


def test_info_nce_matches_formula() -> None:
    def norm(v):
        n = math.sqrt(dot(v, v))
        return [x / n for x in v]

    a, b, tau = [norm(v) for v in Q], [norm(v) for v in V], 0.1
    fwd = [lse([dot(a[i], b[j]) / tau for j in range(4)]) - dot(a[i], b[i]) / tau for i in range(4)]
    bwd = [lse([dot(b[i], a[j]) / tau for j in range(4)]) - dot(b[i], a[i]) / tau for i in range(4)]
    # unnormalised inputs: the loss normalises them
    assert close(info_nce_loss(3 * t(Q), t(V), tau), sum(fwd) / 4, tol=1e-4)
    sym = info_nce_loss(t(Q), t(V), tau, symmetric=True, reduction="none")
    assert close(sym, [(f + g) / 2 for f, g in zip(fwd, bwd, strict=True)], tol=1e-4)


def test_cosine_contrastive_matches_formula() -> None:
    pos = [0.9, 0.2]
    neg = [[0.85, 0.1, 0.95], [0.5, 0.81, -0.3]]
    m = 0.8
    sums = [sum(max(0.0, c - m) for c in row) for row in neg]
    per_sum = [1 - p + s for p, s in zip(pos, sums, strict=True)]
    assert close(cosine_contrastive_loss(t(pos), t(neg), margin=m), sum(per_sum) / 2)
    w = 10.0
    per_w = [1 - p + w / 3 * s for p, s in zip(pos, sums, strict=True)]
    assert close(
        cosine_contrastive_loss(t(pos), t(neg), margin=m, neg_weight=w, reduction="none"), per_w
    )
    # negatives below the margin do not matter
    assert close(cosine_contrastive_loss(t([0.5]), t([[0.1, -0.9]])), 0.5)


# ---- autocast / device ------------------------------------------------------------------------
def _all_losses(q: torch.Tensor, v: torch.Tensor, extra: torch.Tensor) -> list[torch.Tensor]:
    b = q.shape[0]
    dev = q.device
    ids = torch.arange(b, device=dev) % (b - 2)  # some duplicates
    extra_ids = torch.arange(extra.shape[0], device=dev)
    pos = (q * v).sum(-1)
    neg = q @ extra.T
    lq = torch.log(torch.rand(b, device=dev).clamp_min(1e-3))
    lqn = torch.log(torch.rand(extra.shape[0], device=dev).clamp_min(1e-3))
    cos_p = F.cosine_similarity(q, v, dim=-1)
    cos_n = F.normalize(q, dim=-1) @ F.normalize(extra, dim=-1).T
    return [
        bce_loss(pos, neg),
        bpr_loss(pos, neg),
        sampled_softmax_loss(pos, neg, lq, lqn, 0.1, accidental_hits(ids, extra_ids)),
        in_batch_softmax_loss(q, v, ids, lq, 0.05),
        mixed_negative_loss(q, v, extra, ids, extra_ids, lq, lqn, 0.05),
        full_softmax_loss(q @ extra.T, torch.randint(0, extra.shape[0], (b,), device=dev)),
        info_nce_loss(q, v, 0.1, symmetric=True),
        cosine_contrastive_loss(cos_p, cos_n),
    ]


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_autocast_gradients_finite(device: str) -> None:
    torch.manual_seed(0)
    q = torch.randn(8, 16, device=device, requires_grad=True)
    v = torch.randn(8, 16, device=device, requires_grad=True)
    extra = torch.randn(5, 16, device=device, requires_grad=True)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        losses = _all_losses(q * 3, v * 3, extra * 3)
    for loss in losses:
        assert loss.dtype == torch.float32 and loss.device.type == device
        assert torch.isfinite(loss)
        grads = torch.autograd.grad(loss, [q, v, extra], allow_unused=True, retain_graph=True)
        for g in grads:
            assert g is None or torch.isfinite(g).all()


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_inputs_match_float32(device: str) -> None:
    torch.manual_seed(1)
    pos, neg = torch.randn(6, device=device), torch.randn(6, 4, device=device)
    ref = sampled_softmax_loss(pos, neg)
    got = sampled_softmax_loss(pos.bfloat16(), neg.bfloat16())
    assert got.dtype == torch.float32
    assert torch.allclose(got, ref, atol=3e-2)
