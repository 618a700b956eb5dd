"""Who am I in a torch.distributed job: process-group set-up from torchrun's environment.

`torchrun --nproc_per_node N ...` sets RANK, LOCAL_RANK and WORLD_SIZE (plus MASTER_ADDR/PORT);
`init_from_env` turns them into an initialised default process group (NCCL for CUDA, gloo for
CPU) and pins each rank to `cuda:LOCAL_RANK`, so `"cuda"` / `"auto"` resolve to the rank's own GPU.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a default process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes files and prints results."""
    return rank() == 0


def init_from_env(device: str = "auto") -> str:
    """Initialise the default process group when launched by torchrun with WORLD_SIZE > 1.

    Returns the device string this rank should use: `device` unchanged for CPU runs and
    single processes, the rank's GPU (`cuda:LOCAL_RANK`) when `device` is cuda/auto and CUDA
    is available. Other ranks' console output is silenced (rank 0 reports for all).
    Calling it again, or without torchrun, is harmless.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)  # "cuda" now resolves to this rank's GPU
        device = f"cuda:{local}"
    elif device == "auto":
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    if dist.get_rank() != 0:
        from recstack.progress import console

        console.quiet = True  # one progress display per job, not one per rank
    return device


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()
