"""Scale-out on PyTorch's own distributed engine (torchrun + torch.distributed).

- `init_from_env`: process group from torchrun's environment (NCCL on GPUs, gloo on CPU).
- `DataParallelLoss`: DDP around any model's loss, used by the shared `Trainer` automatically
  when a process group with more than one rank exists.
- `evaluate_ranking_sharded`: exact full-ranking metrics with the users split over the ranks.
- `RowShardedEmbedding` / `ShardedMF`: tables larger than one device, rows spread over ranks.
- `spawn_local`: run a function on N local CPU processes (gloo), for tests and examples.
- `relaunch`: re-run a command under torchrun's launcher on N local processes (`--nproc`).

See docs/distributed.md.
"""

from recstack.distributed.ddp import DataParallelLoss
from recstack.distributed.env import (
    barrier,
    init_from_env,
    is_distributed,
    is_main,
    rank,
    world_size,
)
from recstack.distributed.launch import relaunch, spawn_local
from recstack.distributed.metrics import evaluate_ranking_sharded
from recstack.distributed.sharded_embedding import RowShardedEmbedding
from recstack.distributed.sharded_mf import ShardedMF

__all__ = [
    "DataParallelLoss",
    "RowShardedEmbedding",
    "ShardedMF",
    "barrier",
    "evaluate_ranking_sharded",
    "init_from_env",
    "is_distributed",
    "is_main",
    "rank",
    "relaunch",
    "spawn_local",
    "world_size",
]
