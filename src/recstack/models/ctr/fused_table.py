"""A fused embedding table whose optimiser step is part of the table: the large-table fast path.

With ``sparse=True`` gradients, autograd builds a sparse ``[rows, dim]`` gradient of the whole
batch's lookups, the optimiser merges duplicate rows, and only then updates. For a DLRM batch of
65,536 samples x 26 fields that is 1.7 M gathered rows of which only ~0.2 M are distinct, so
most of the step moves duplicates around.

``RowWiseAdagradTable`` does what FBGEMM's "optimizer fused into backward" tables do, in plain
PyTorch: the lookup deduplicates the batch's rows, copies the distinct rows into a small *leaf*
tensor (detached from the table, so autograd stops there) and looks the batch up from it; the
leaf's gradient is then already merged per distinct row, and ``step()`` applies row-wise
Adagrad to those rows only. The weights may be bf16 (half the bytes of every lookup and update); the per-row
accumulator stays fp32. The table is a buffer, not a Parameter, so dense optimisers never see it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.models.ctr.dlrm_kernels import (
    SortedRows,
    rowwise_adagrad_update,
    segment_sum,
    sort_rows,
)


class RowWiseAdagradTable(nn.Module):
    """Every categorical table in one ``[sum(sizes), dim]`` matrix, trained by row-wise Adagrad
    fused into the table (``s_r += mean(g_r^2); w_r -= lr * g_r / (sqrt(s_r) + eps)``).

    Usage: ``e = table(codes)`` -> ``loss.backward()`` -> ``table.step()`` (then the dense
    optimiser). ``step`` must follow each backward; lookups made without grad are not recorded.

    Args:
        sizes: number of codes of each field (code 0 = missing; its row starts at zero).
        dim: embedding size.
        lr: Adagrad's step size.
        eps: Adagrad's epsilon.
        dtype: weight dtype (``torch.bfloat16`` halves the bytes; the accumulator is fp32).
        init_std: std of the normal initialisation.
    """

    def __init__(self, sizes: Sequence[int], dim: int, lr: float = 0.05, eps: float = 1e-8,
                 dtype: torch.dtype = torch.float32, init_std: float = 0.01) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        self.sizes, self.dim, self.lr, self.eps = sizes, dim, lr, eps
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        weight = torch.randn(sum(sizes), dim) * init_std
        weight[torch.as_tensor(starts)] = 0.0
        self.register_buffer("weight", weight.to(dtype))
        self.register_buffer("accumulator", torch.zeros(sum(sizes)))
        self.register_buffer("offsets", torch.as_tensor(starts), persistent=False)
        self._pending: list[tuple[Tensor, Tensor]] = []
        self._pending_rows: list[tuple[SortedRows, Tensor]] = []

    @classmethod
    def over(cls, weight: Tensor, accumulator: Tensor, sizes: Sequence[int], lr: float = 0.05,
             eps: float = 1e-8) -> RowWiseAdagradTable:
        """A table that trains an existing ``[sum(sizes), dim]`` weight and ``[sum(sizes)]``
        accumulator in place (shared storage, nothing copied): how a model's own
        `FusedEmbedding` and its `RowWiseAdagrad` state take the fused path for training while
        the model, its checkpoints and its saved files stay the plain ones."""
        sizes = [int(s) for s in sizes]
        if weight.shape[0] != sum(sizes) or accumulator.shape != (sum(sizes),):
            raise ValueError(f"RowWiseAdagradTable.over: weight {tuple(weight.shape)} / accumulator "
                             f"{tuple(accumulator.shape)} do not match {sum(sizes)} rows")
        table = cls.__new__(cls)
        nn.Module.__init__(table)
        table.sizes, table.dim, table.lr, table.eps = sizes, weight.shape[1], lr, eps
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        table.register_buffer("weight", weight)
        table.register_buffer("accumulator", accumulator)
        table.register_buffer("offsets", torch.as_tensor(starts, device=weight.device), persistent=False)
        table._pending, table._pending_rows = [], []
        return table

    def forward(self, codes: Tensor) -> Tensor:
        """``[B, F]`` codes -> ``[B, F, dim]`` rows."""
        rows = (codes + self.offsets[: codes.shape[1]]).reshape(-1)
        if not (self.training and torch.is_grad_enabled()):
            return self.weight.index_select(0, rows).view(*codes.shape, self.dim)
        # Deduplicate first (the one host sync of the step): the distinct rows become a small
        # leaf that receives the gradient, and the lookup from it is an ordinary embedding whose
        # backward sums duplicates by a sorted segment reduction instead of B*F*dim atomics.
        slot, leaf = self.distinct(codes)
        return F.embedding(slot, leaf)

    def dedup(self, codes: Tensor) -> tuple[Tensor, Tensor]:
        """``(distinct table rows [U], slot [B, F])`` of a batch's codes: reads no weights, so it
        can run ahead of the optimiser (see `DedupPrefetcher`). Syncs the host (U is data-dependent)."""
        rows = (codes + self.offsets[: codes.shape[1]]).reshape(-1)
        uniq, slot = torch.unique(rows, return_inverse=True)
        return uniq, slot.view(codes.shape)

    def distinct(self, codes: Tensor, deduped: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Training lookup in two parts, for callers that fuse the gather into their own compiled
        graph: ``(slot [B, F], leaf [U, dim])`` with rows ``leaf[slot]``; the leaf is recorded
        for ``step()``. `deduped`: this batch's ``dedup(codes)``, computed earlier."""
        uniq, slot = self.dedup(codes) if deduped is None else deduped
        leaf = self.weight.index_select(0, uniq).requires_grad_(True)
        self._pending.append((uniq, leaf))
        return slot, leaf

    def sort(self, codes: Tensor) -> SortedRows:
        """A batch's ``[B, F]`` codes as table rows and their sort (`dlrm_kernels.sort_rows`),
        for callers that read rows themselves (`gradient_sink`); reads no weights, so it can run
        ahead of the optimiser (`DedupPrefetcher(..., sort=True)`)."""
        return sort_rows(codes + self.offsets[: codes.shape[1]], len(self.weight))

    def gradient_sink(self, sorted_rows: SortedRows):
        """A callable taking the ``[B*F, dim]`` gradient of the rows ``sorted_rows.rows`` (e.g.
        from `dlrm_kernels.GatherInteraction`'s backward); ``step()`` merges duplicates with the
        prepared sort and applies the update. Records nothing outside training."""

        def sink(grad_rows: Tensor) -> None:
            if self.training:
                self._pending_rows.append((sorted_rows, grad_rows))

        return sink

    @torch.no_grad()
    def apply_rows_grad(self, sorted_rows: SortedRows, grad_rows: Tensor) -> None:
        """Row-wise Adagrad now, from the ``[B*F, dim]`` gradient of the rows ``sorted_rows.rows``
        (duplicates merged by the sort); `step` calls it for what `gradient_sink` recorded.
        For callers that keep the gradient themselves, e.g. a CUDA-graphed step."""
        g = segment_sum(grad_rows, sorted_rows)
        rowwise_adagrad_update(self.weight, self.accumulator, sorted_rows.unique, g, self.lr, self.eps)

    @torch.no_grad()
    def step(self) -> None:
        """Apply row-wise Adagrad to the distinct rows of every lookup since the last step, then
        forget the lookups."""
        for sorted_rows, grad_rows in self._pending_rows:
            self.apply_rows_grad(sorted_rows, grad_rows)
        self._pending_rows.clear()
        for uniq, leaf in self._pending:
            if leaf.grad is not None:
                rowwise_adagrad_update(self.weight, self.accumulator, uniq, leaf.grad.float(), self.lr, self.eps)
        self._pending.clear()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Nothing to clear: gradients live on each lookup's own leaf tensor (an optimiser-like
        method so training loops can treat the table as one of their optimisers)."""

    def reset(self) -> None:
        """Drop recorded lookups without updating (e.g. after a skipped step)."""
        self._pending.clear()
        self._pending_rows.clear()


class DedupPrefetcher:
    """Runs `RowWiseAdagradTable.dedup` for the *next* batch on a side CUDA stream while the
    current step computes, so the host sync that `unique` needs overlaps GPU work instead of
    leaving the GPU idle between steps (TorchRec-style input prefetch, for one table).

    Usage: ``pf = DedupPrefetcher(table, codes_iter)``; each ``codes, deduped = pf.next()`` after
    the previous step has been *enqueued* (not finished), then ``table.distinct(codes, deduped)``.
    `codes_iter` yields ``[B, F]`` code tensors that are either on the CPU (copied to the table's
    device on the side stream; pin them for an asynchronous copy) or already complete on the
    device (e.g. made before the loop): the side stream does not wait for the main stream, since
    that would wait for the running step too. On a CPU table it simply dedups in line.
    """

    def __init__(self, table: RowWiseAdagradTable, codes_iter, sort: bool = False) -> None:
        self.table, self.it = table, iter(codes_iter)
        self.prepare = table.sort if sort else table.dedup  # sort: for `gradient_sink` callers
        self.stream = torch.cuda.Stream() if table.weight.is_cuda else None
        self._ready: tuple[Tensor, tuple[Tensor, ...]] | None = None  # codes, dedup or sort

    def _dedup(self, codes: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        if self.stream is None:
            return codes, self.prepare(codes)
        with torch.cuda.stream(self.stream):
            codes = codes.to(self.table.weight.device, non_blocking=True)
            prepared = self.prepare(codes)
        return codes, prepared

    def next(self) -> tuple[Tensor, tuple[Tensor, ...]]:
        """The next batch's codes and dedup (or sort), with the one after it started."""
        cur = self._ready if self._ready is not None else self._dedup(next(self.it))
        if self.stream is not None:
            main = torch.cuda.current_stream()
            main.wait_stream(self.stream)
            for t in (cur[0], *cur[1]):
                t.record_stream(main)  # allocated on the side stream, used on the main one
        try:
            self._ready = self._dedup(next(self.it))
        except StopIteration:
            self._ready = None
        return cur
