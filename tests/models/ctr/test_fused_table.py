"""RowWiseAdagradTable: the fused-step table gives the same updates as sparse gradients +
RowWiseAdagrad (the reference path), duplicates included."""

import torch

from recstack.models.ctr.fused_table import DedupPrefetcher, RowWiseAdagradTable
from recstack.models.ctr.layers import FusedEmbedding
from recstack.models.ctr.optim import RowWiseAdagrad


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
    from recstack.models.ctr.models.dlrm import _Gram, dot_interaction

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


def _small_dlrm(seed: int = 0):
    from recstack.features.pipeline import Layout
    from recstack.models.ctr.models.dlrm import DLRMConfig, DLRMNet

    torch.manual_seed(seed)
    sizes = [9, 4, 13, 6, 8]
    layout = Layout(cat_names=[f"C{i}" for i in range(len(sizes))], cat_sizes=sizes, num_names=["I1", "I2", "I3"])
    model = DLRMNet(layout, DLRMConfig(dim=16, bottom=(8,), top=(8,), init_std=0.1, dropout=0.0))
    model.embed.table = RowWiseAdagradTable(sizes, 16, lr=0.1, init_std=0.1)
    return model, sizes


def test_dlrm_forward_rows_trains_like_the_gather_path():
    """The fused lookup + interaction (`forward_rows`, the rows' gradient merged by the prepared
    sort and applied by `step`) gives the same logits, dense gradients and table updates as the
    plain lookup through the distinct-row leaf, over several steps with duplicates."""
    import copy

    a, sizes = _small_dlrm()
    b = copy.deepcopy(a)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.05)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        codes = torch.stack([torch.randint(0, s, (32,), generator=gen) for s in sizes], 1)
        codes[:8, 1] = 2  # a row shared by many samples
        num = torch.randn(32, 3, generator=gen)
        y = torch.randint(0, 2, (32,), generator=gen).float()
        la = a({"cat": codes, "num": num})
        lb = b.forward_rows(num, b.embed.table, b.embed.table.sort(codes))
        torch.testing.assert_close(lb, la, atol=1e-5, rtol=1e-5)
        for m, logits, opt in ((a, la, opt_a), (b, lb, opt_b)):
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(logits, y).backward()
            opt.step()
            m.embed.table.step()
        for (n, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(pb, pa, atol=1e-6, rtol=1e-5, msg=n)
        torch.testing.assert_close(b.embed.table.weight, a.embed.table.weight, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(b.embed.table.accumulator, a.embed.table.accumulator, atol=1e-7, rtol=1e-5)
    assert b.embed.table._pending_rows == []


def test_sort_rows_segments_and_prefetch():
    from recstack.models.ctr.dlrm_kernels import sort_rows

    rows = torch.tensor([[5, 1], [5, 9], [1, 1]])
    s = sort_rows(rows, 10)
    assert torch.equal(s.unique, torch.tensor([1, 5, 9]))
    assert torch.equal(rows.reshape(-1)[s.perm], torch.tensor([1, 1, 1, 5, 5, 9]))
    assert s.segment.tolist() == [0, 0, 0, 1, 1, 2]
    table = RowWiseAdagradTable([6, 6], 4)
    batches = [torch.randint(0, 6, (8, 2)) for _ in range(3)]
    pf = DedupPrefetcher(table, iter(batches), sort=True)
    for codes in batches:
        got, prepared = pf.next()
        assert got is codes and torch.equal(prepared.rows, codes + table.offsets)
