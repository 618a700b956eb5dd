"""Row-wise sharded embedding tables: a table larger than one device, spread over the ranks.

Rank r stores rows [r * R, min(n, (r + 1) * R)) with R = ceil(n / world). A lookup:

1. de-duplicates the batch's ids (`torch.unique`: sorted, hence already grouped by owner),
2. sends each owner the ids it holds (`all_to_all_single`, sizes exchanged first),
3. owners gather their rows and send them back (a second `all_to_all_single`).

The backward runs the same exchange in reverse: each row's gradient goes home to its owner,
which accumulates it into a *sparse* gradient of its local shard, so a sparse-capable optimiser
(`torch.optim.SparseAdam`, `SGD`, `Adagrad`) updates only the touched rows (a row-wise step).
Gradients are averaged over ranks, as DDP does for replicated parameters, so a loss that is a
mean over each rank's batch trains exactly like the mean over the global batch in one process.

Every rank must call the lookup the same number of times, in the same order (as in data-parallel
training, where all ranks run the same model). The tables use their own process group so their
collectives never interleave with DDP's gradient all-reduce on one communicator.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from recstack.distributed.ddp import SHARDED_ATTR
from recstack.distributed.env import is_distributed


def _exchange(out_rows: int, send: torch.Tensor, recv_splits: list[int], send_splits: list[int],
              group: Any) -> torch.Tensor:
    """all_to_all_single with variable splits: row blocks of `send` go to their ranks."""
    out = send.new_empty((out_rows, *send.shape[1:]))
    dist.all_to_all_single(out, send.contiguous(), recv_splits, send_splits, group=group)
    return out


class _ShardedLookup(torch.autograd.Function):
    """Rows of the global table for sorted unique `ids`; differentiable w.r.t. the local shard."""

    @staticmethod
    def forward(ctx: Any, weight: torch.Tensor, ids: torch.Tensor, table: RowShardedEmbedding) -> torch.Tensor:
        world, group = table.world_size, table.group
        if world == 1:
            local, send_splits, recv_splits = ids, [len(ids)], [len(ids)]
            rows = weight.index_select(0, local)
            out = rows
        else:
            owner = torch.div(ids, table.rows_per_rank, rounding_mode="floor")
            send_counts = torch.bincount(owner, minlength=world)
            recv_counts = torch.empty_like(send_counts)
            dist.all_to_all_single(recv_counts, send_counts, group=group)
            counts = torch.stack([send_counts, recv_counts]).cpu()  # the one host sync per lookup
            send_splits, recv_splits = counts[0].tolist(), counts[1].tolist()
            # ids are sorted (torch.unique), so each owner's ids form one contiguous block
            asked = _exchange(sum(recv_splits), ids, recv_splits, send_splits, group)
            local = asked - table.start
            rows = weight.index_select(0, local)
            out = _exchange(len(ids), rows, send_splits, recv_splits, group)
        ctx.save_for_backward(local)
        ctx.splits = (send_splits, recv_splits)
        ctx.table = table
        ctx.shape = weight.shape
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        (local,) = ctx.saved_tensors
        table: RowShardedEmbedding = ctx.table
        send_splits, recv_splits = ctx.splits
        if table.world_size == 1:
            grad_rows = grad_out
        else:
            grad_rows = _exchange(len(local), grad_out, recv_splits, send_splits, table.group)
            grad_rows = grad_rows / table.world_size  # average over ranks, like DDP
        if table.sparse:
            # duplicates (one row asked by several ranks) are summed by the optimiser's coalesce
            grad = torch.sparse_coo_tensor(local.unsqueeze(0), grad_rows, ctx.shape,
                                           check_invariants=False)
        else:
            grad = grad_rows.new_zeros(ctx.shape).index_add_(0, local, grad_rows)
        return grad, None, None


class RowShardedEmbedding(nn.Module):
    """An `num_embeddings x dim` table whose rows are split over the ranks of `group`.

    Args:
        num_embeddings: rows of the whole (global) table.
        dim: embedding size.
        init_std: rows are drawn from N(0, init_std^2) (with the rank's torch RNG).
        sparse: give the local shard a sparse gradient (row-wise optimiser step); otherwise a
            dense one (any optimiser, but every local row is updated each step).
        group: process group; default: a new group over all ranks of the default group
            (every rank must construct the tables in the same order). Without an
            initialised process group the table is a plain single-process table.
        device: device of the local shard.
        dtype: dtype of the local shard.
    """

    def __init__(self, num_embeddings: int, dim: int, init_std: float = 0.1, sparse: bool = True,
                 group: Any = None, device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if is_distributed():
            self.group = group if group is not None else dist.new_group()
            self.rank, self.world_size = dist.get_rank(self.group), dist.get_world_size(self.group)
        else:
            self.group, self.rank, self.world_size = None, 0, 1
        self.num_embeddings, self.dim, self.sparse = num_embeddings, dim, sparse
        self.rows_per_rank = max(1, math.ceil(num_embeddings / self.world_size))
        self.start = min(num_embeddings, self.rank * self.rows_per_rank)
        self.stop = min(num_embeddings, self.start + self.rows_per_rank)
        self.weight = nn.Parameter(torch.empty(self.stop - self.start, dim, device=device, dtype=dtype))
        setattr(self.weight, SHARDED_ATTR, True)  # DataParallelLoss keeps DDP away from it
        nn.init.normal_(self.weight, std=init_std)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows of `ids` (any shape, global row numbers) -> `[*ids.shape, dim]`."""
        flat = ids.reshape(-1)
        uniq, inverse = torch.unique(flat, sorted=True, return_inverse=True)
        rows = _ShardedLookup.apply(self.weight, uniq, self)
        return rows[inverse].view(*ids.shape, self.dim)

    def load_full(self, full: torch.Tensor) -> None:
        """Set this rank's rows from a full `[num_embeddings, dim]` table (tests, warm starts)."""
        with torch.no_grad():
            self.weight.copy_(full[self.start : self.stop].to(self.weight))

    def full_weight(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The whole table, gathered on every rank and returned on `device` (small tables only:
        evaluation, export, checkpoints)."""
        w = self.weight.detach()
        if self.world_size == 1:
            return w.to(device)
        pad = w.new_zeros(self.rows_per_rank, self.dim)
        pad[: len(w)] = w
        parts = [torch.empty_like(pad) for _ in range(self.world_size)]
        dist.all_gather(parts, pad, group=self.group)
        return torch.cat(parts)[: self.num_embeddings].to(device)

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.dim}, rows [{self.start}, {self.stop}) on rank "
                f"{self.rank}/{self.world_size}, sparse={self.sparse}")
