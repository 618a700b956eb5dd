"""A DLRM training step captured as one CUDA graph (forward, backward and the MLPs' optimiser
step), with the fused table's update outside it.

At batch 65,536 the GPU finishes a `DLRM.forward_rows` step in ~3 ms, but launching its ~100
kernels from Python takes longer than that, so the GPU waits on the host. A graph replays every
launch at once. Graphs need static shapes and addresses: the batch's dense features, labels and
table rows are copied into fixed buffers, and the rows' gradient lands in a fixed buffer too.
The table's duplicate merge and row-wise Adagrad depend on the batch's distinct-row count, so
they run eagerly after each replay (three launches).

    step = GraphedDLRMStep(model, table, dense_opt, num, label, rows)   # dense_opt capturable
    for num, label, codes in batches:
        step(num, label, table.sort(codes))          # or a sort prepared a step ahead
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from recstack.models.ctr.dlrm_kernels import GatherInteraction, SortedRows, sort_rows


class GraphedDLRMStep:
    """One captured training step of `model` (a DLRM) on `table` (a `RowWiseAdagradTable`).

    Args:
        model: the DLRM; its ``bottom`` and ``top`` MLPs may be ``torch.compile``d modules.
        table: the fused table the model reads (``model.embed.table``).
        dense_opt: the optimiser of the MLPs, built with ``capturable=True``.
        num, label, rows: an example batch (``[B, N]`` dense features, ``[B]`` labels, ``[B, F]``
            table rows) fixing the shapes; the warm-up steps train on it (table included).
        warmup: eager steps before capture, at least 1: compilation, the allocator, and the
            optimiser's state, which must exist before capture (made inside the graph, it would
            be re-zeroed by every replay).
        amp: bf16 autocast around the forward pass.
    """

    def __init__(self, model, table, dense_opt: torch.optim.Optimizer, num: Tensor, label: Tensor,
                 rows: Tensor, warmup: int = 3, amp: bool = True) -> None:
        if not table.weight.is_cuda:
            raise ValueError("GraphedDLRMStep needs the table on a CUDA device")
        if warmup < 1:
            raise ValueError("warmup must be >= 1 (the optimiser state must exist before capture)")
        self.model, self.table, self.opt, self.amp = model, table, dense_opt, amp
        self.num, self.label, self.rows = num.clone(), label.clone(), rows.clone()
        self._grads: list[Tensor] = []
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as graph capture requires
            example = sort_rows(self.rows, len(table.weight))
            for _ in range(warmup):
                self.opt.zero_grad(set_to_none=True)
                self._body()
                table.apply_rows_grad(example, self._grads.pop())
        torch.cuda.current_stream().wait_stream(side)
        self._grads.clear()
        self.graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)  # gradients then live in the graph's memory pool
        with torch.cuda.graph(self.graph):
            self.loss = self._body()
        (self.rows_grad,) = self._grads  # the backward's [B*F, D] rows gradient, refilled per replay

    def _body(self) -> Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp):
            x = self.model.bottom(self.num)
            t = GatherInteraction.apply(x, self.table.weight, self.rows, self._grads.append)
            logits = self.model.top(t).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits.float(), self.label)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def __call__(self, num: Tensor, label: Tensor, sorted_rows: SortedRows) -> Tensor:
        """Train on one batch; returns its loss (a device scalar: reading it syncs)."""
        self.num.copy_(num)
        self.label.copy_(label)
        self.rows.copy_(sorted_rows.rows)
        self.graph.replay()
        self.table.apply_rows_grad(sorted_rows, self.rows_grad)
        return self.loss
