"""RowWiseAdagradTable: the fused-step table gives the same updates as sparse gradients +
RowWiseAdagrad (the reference path), duplicates included."""

import torch

from recstack.ranking.fused_table import DedupPrefetcher, RowWiseAdagradTable
from recstack.ranking.layers import FusedEmbedding
from recstack.ranking.optim import RowWiseAdagrad


def test_fused_table_matches_sparse_rowwise_adagrad():
    torch.manual_seed(0)
    sizes, dim = [7, 5, 11], 4
    fused = RowWiseAdagradTable(sizes, dim, lr=0.1)
    ref = FusedEmbedding(sizes, dim, sparse=True)
    with torch.no_grad():
        ref.weight.copy_(fused.weight)
    opt = RowWiseAdagrad([ref.weight], lr=0.1)
    target = torch.randn(dim)
    for _ in range(4):
        codes = torch.stack([torch.randint(0, s, (9,)) for s in sizes], 1)
        codes[:3] = codes[0]  # duplicated rows within the batch must be merged before the update
        for table, opt_step in ((fused, fused.step), (ref, opt.step)):
            e = table(codes)
            loss = ((e * target).sum(-1) - 1.0).square().mean()
            loss.backward()
            opt_step()
            if table is ref:
                opt.zero_grad(set_to_none=True)
        torch.testing.assert_close(fused.weight, ref.weight.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(fused.accumulator, opt.state[ref.weight]["sum"])
    assert not torch.equal(fused.weight[fused.offsets], torch.zeros(3, dim))  # rows did move


def test_fused_table_records_only_training_lookups():
    table = RowWiseAdagradTable([4], 2)
    codes = torch.tensor([[1], [2]])
    with torch.no_grad():
        table(codes)
    table.eval()
    table(codes)
    assert table._pending == []
    table.train()
    before = table.weight.clone()
    table(codes).sum().backward()
    table.step()
    assert not torch.equal(before, table.weight) and table._pending == []


def test_dlrm_interaction_matches_pairwise_dots_and_gradients():
    from recstack.ranking.models.dlrm import _Gram, dot_interaction

    t = torch.randn(3, 5, 4, dtype=torch.double, requires_grad=True)
    li, lj = torch.tril_indices(5, 5, -1)
    want = torch.stack([(t[:, i] * t[:, j]).sum(-1) for i, j in zip(li.tolist(), lj.tolist(), strict=True)], 1)
    torch.testing.assert_close(dot_interaction(t, li, lj), want)
    assert torch.autograd.gradcheck(_Gram.apply, (t,))
    assert torch.autograd.gradcheck(lambda x: dot_interaction(x, li, lj), (t,))


def test_prefetched_dedup_gives_the_same_training_step():
    torch.manual_seed(0)
    batches = [torch.randint(0, 6, (16, 3)) for _ in range(4)]
    a = RowWiseAdagradTable([6, 6, 6], 4, lr=0.1)
    b = RowWiseAdagradTable([6, 6, 6], 4, lr=0.1)
    b.weight.copy_(a.weight)
    pf = DedupPrefetcher(b, iter(batches))
    for codes in batches:
        got, deduped = pf.next()
        assert got is codes
        uniq, slot = deduped
        assert torch.equal(b.weight.index_select(0, uniq)[slot], a.weight[codes + a.offsets])
        for table, dd in ((a, None), (b, deduped)):
            slot_, leaf = table.distinct(codes, dd)
            (leaf[slot_].sum(-1) ** 2).sum().backward()
            table.step()
    torch.testing.assert_close(a.weight, b.weight)
    torch.testing.assert_close(a.accumulator, b.accumulator)
