"""Data parallelism for the shared Trainer: DistributedDataParallel around any model's loss.

recstack models compute their loss by calling their module's parts directly
(`self.module_.user(...)`), not through `module.forward`. DDP only synchronises gradients of
parameters used inside *its* forward, so the loss function itself is wrapped as the forward of a
thin module that owns the model's module: every parameter the loss touches is then seen by
DDP's autograd hooks (bucketed all-reduce overlapped with the backward pass), for any model.

The global batch and the example order do not depend on the world size: every rank draws the
same epoch permutation, cuts the same global batches and keeps its contiguous part of each. The
local loss is weighted by `world * local_size / global_size` so that DDP's gradient *average*
equals the gradient of the mean loss over the whole global batch, also for a short last batch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

LossFn = Callable[[dict[str, torch.Tensor], torch.Generator], torch.Tensor]

#: attribute set on parameters that hold only this rank's rows of a table (never all-reduced)
SHARDED_ATTR = "_recstack_row_sharded"


class _LossModule(nn.Module):
    """Makes `loss_fn(batch, generator) * weight` the forward of a module owning `module`."""

    def __init__(self, module: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.module = module
        self._loss_fn = loss_fn  # a plain attribute: the bound method of the model

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                weight: float) -> torch.Tensor:
        return self._loss_fn(batch, generator) * weight


def sharded_parameter_names(module: nn.Module) -> list[str]:
    """Names of parameters marked as row shards (see `RowShardedEmbedding`)."""
    return [n for n, p in module.named_parameters() if getattr(p, SHARDED_ATTR, False)]


class DataParallelLoss:
    """The Trainer's view of a distributed job: local batch slices and a synchronised loss.

    Build it after the module's weights are final for the start of training (e.g. after a
    checkpoint was loaded): DDP broadcasts rank 0's parameters and buffers at construction.
    """

    def __init__(self, module: nn.Module, loss_fn: LossFn, device: torch.device,
                 checkpointing: bool = False, find_unused: bool = True, bf16_grads: bool = False) -> None:
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = device
        self._module = module
        wrapper = _LossModule(module, loss_fn)
        sharded = {f"module.{n}" for n in sharded_parameter_names(module)}
        if sharded and checkpointing:
            # rank 0 alone writes checkpoints and holds only its own rows of these tables
            raise NotImplementedError(
                "Trainer checkpoints of row-sharded tables are not supported: unset "
                "checkpoint_dir, or save each rank's shard with RowShardedEmbedding.full_weight()"
            )
        replicated = [p for n, p in wrapper.named_parameters() if p.requires_grad and n not in sharded]
        self.forward: nn.Module
        if not replicated:
            # everything is row-sharded: the tables' own collectives do all the communication
            self.forward = wrapper
            return
        if sharded:
            # each rank holds different rows of these: all-reducing them would be wrong
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(wrapper, sorted(sharded))
        self.forward = DistributedDataParallel(
            wrapper,
            device_ids=[device.index] if device.type == "cuda" else None,
            # models may own parameters a given loss never touches (e.g. an unused bias)
            find_unused_parameters=find_unused,
            # gradients live in the communication buckets: no copy in and out each step
            gradient_as_bucket_view=True,
        )
        if bf16_grads:
            if device.type != "cuda":
                raise ValueError("ddp_bf16_grads needs CUDA (NCCL); gloo does not reduce bf16")
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            self.forward.register_comm_hook(None, default_hooks.bf16_compress_hook)

    def shard(self, idx: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's contiguous part of a global batch `idx` and its loss weight.

        A rank left without examples (global batch smaller than the world) still runs one
        example with weight 0, so every rank takes part in the gradient all-reduce.
        """
        n = len(idx)
        local = torch.tensor_split(idx, self.world)[self.rank]
        if len(local) == 0:
            return idx[:1], 0.0
        return local, self.world * len(local) / n

    def __call__(self, batch: dict[str, torch.Tensor], generator: torch.Generator,
                 weight: float) -> torch.Tensor:
        return self.forward(batch, generator, weight)

    def sample_generator(self, seed: int, epoch: int) -> torch.Generator:
        """A generator for the loss's own draws (negatives, dropout-free sampling) that differs
        between ranks and epochs but is reproducible from (seed, epoch, rank) alone, so a
        resumed run needs no per-rank generator state in its checkpoint."""
        state = np.random.SeedSequence([seed, epoch, self.rank]).generate_state(1, np.uint64)[0]
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(state) & ((1 << 63) - 1))
        return gen

    def sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (e.g. BatchNorm running statistics).

        DDP broadcasts rank 0's buffers at the start of each forward, but the last step of an
        epoch leaves each rank's buffers updated by its own part of the batch; without this,
        ranks would validate (and stop early) on different running statistics."""
        buffers = [b for b in self._module.buffers() if b.numel()]
        if not buffers or self.world == 1:
            return
        for b in buffers:
            comm = b if b.device.type == "cuda" or dist.get_backend() != "nccl" else b.cuda()
            dist.broadcast(comm, src=0)
            if comm is not b:
                b.copy_(comm)

    def average(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of `x` over ranks (a copy; `x` is left alone)."""
        y = x.detach().clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y / self.world
