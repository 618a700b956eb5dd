"""Start local process groups without typing torchrun.

- `spawn_local`: run a function on N local processes joined in a gloo process group (tests,
  CPU examples), built on `torch.multiprocessing.start_processes`. The group is initialised from
  a fresh file (`file://` init), so no TCP port has to be found free on a shared machine.
- `relaunch`: re-run the current command line under torchrun's own elastic launcher
  (`torch.distributed.run`, standalone rendezvous on this host) with N processes: what
  `recstack train --nproc N` does.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
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


def strip_option(argv: Sequence[str], option: str) -> list[str]:
    """`argv` without ``option VALUE`` / ``option=VALUE`` (e.g. ``--nproc 2``)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == option:
            skip = True
        elif not a.startswith(f"{option}="):
            out.append(a)
    return out


def relaunch(nproc: int, argv: Sequence[str], module: str = "recstack") -> int:
    """Run ``python -m module *argv`` on `nproc` local processes under torchrun's elastic agent
    (``torch.distributed.run``: standalone rendezvous on a free localhost port, RANK /
    LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT set for each worker, OMP_NUM_THREADS=1
    unless set). Returns the exit status: 0, or the first failed worker's.

    The same as ``torchrun --standalone --nproc_per_node nproc -m module *argv``; multi-node
    jobs use torchrun itself with a rendezvous endpoint (docs/scaling.md).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(
        ["--standalone", f"--nproc_per_node={int(nproc)}", "--module", module, *argv])
    try:
        run(args)
    except ChildFailedError as e:
        codes = [f.exitcode for f in e.failures.values() if f.exitcode]
        return codes[0] if codes else 1
    return 0
