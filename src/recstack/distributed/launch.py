"""Run a function on N local processes joined in a gloo process group (tests, CPU examples).

Real jobs are launched with `torchrun`; this is the in-Python equivalent for one machine's CPUs,
built on `torch.multiprocessing.start_processes`. The group is initialised from a fresh file
(`file://` init), so no TCP port has to be found free on a shared machine.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(local_rank: int, fn: Callable[..., Any], world: int, init_file: str, threads: int,
            args: tuple) -> None:
    torch.set_num_threads(threads)  # N processes share the machine's cores
    os.environ.update(RANK=str(local_rank), LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world))
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=local_rank,
                            world_size=world)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def spawn_local(fn: Callable[..., Any], world_size: int = 2, args: tuple = (), threads: int = 1,
                start_method: str = "fork") -> None:
    """Run `fn(*args)` on `world_size` CPU processes with an initialised gloo default group.

    `fn` learns its rank from `torch.distributed.get_rank()` (RANK / LOCAL_RANK / WORLD_SIZE are
    set too) and returns results through files. "fork" starts in well under a second because
    the children inherit the imported modules; use "spawn" when the parent holds threads or CUDA.
    Raises `torch.multiprocessing.ProcessRaisedException` when a rank fails.
    """
    with tempfile.TemporaryDirectory(prefix="recstack-dist-") as tmp:
        init_file = os.path.join(tmp, "init")  # must not exist yet: the group creates it
        mp.start_processes(_worker, args=(fn, world_size, init_file, threads, args),
                           nprocs=world_size, join=True, start_method=start_method)
