"""Exact ranking metrics across ranks: each rank ranks a disjoint block of the users.

The evaluated users (ascending, as `evaluate_ranking` picks them) are cut into `world`
contiguous blocks; rank r scores block r, and the per-user values are all-gathered back in
block order. Every rank ends with the very per-user arrays a single process computes, so means,
significance tests and early-stopping decisions are identical bit for bit on every rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

from recstack.distributed.env import is_distributed
from recstack.evaluation.ranking import RANKING_METRICS, RankingResult, ScoreFn, evaluate_ranking
from recstack.evaluation.ranking import resolve_device as _resolve


def _users_with_targets(test: sp.spmatrix | sp.sparray) -> np.ndarray:
    """Users with at least one (nonzero, after summing duplicates) test item, ascending."""
    t = sp.csr_matrix(test, copy=True)
    t.sum_duplicates()
    t.eliminate_zeros()
    return np.flatnonzero(np.diff(t.indptr) > 0).astype(np.int64)


def evaluate_ranking_sharded(
    score_fn: ScoreFn,
    test: sp.spmatrix | sp.sparray,
    exclude: sp.spmatrix | sp.sparray | None = None,
    ks: Sequence[int] = (5, 10, 20),
    metrics: Sequence[str] = RANKING_METRICS,
    users: np.ndarray | Sequence[int] | None = None,
    device: str | torch.device = "auto",
    **kw: Any,
) -> RankingResult:
    """`evaluate_ranking` with the users split over the ranks of the default process group.

    Must be called by every rank with the same arguments (and the same model weights). In a
    single process it is exactly `evaluate_ranking`. `return_topk` is not supported across
    ranks (the gathered result holds metrics only).
    """
    if not is_distributed():
        return evaluate_ranking(score_fn, test, exclude, ks, metrics, users, device, **kw)
    if kw.get("return_topk"):
        raise ValueError("evaluate_ranking_sharded: return_topk is not supported across ranks")
    rank, world = dist.get_rank(), dist.get_world_size()
    all_users = _users_with_targets(test) if users is None else np.asarray(users, np.int64).reshape(-1)
    blocks = np.array_split(all_users, world)
    mine = evaluate_ranking(score_fn, test, exclude, ks, metrics, blocks[rank], device, **kw)
    names = list(mine.per_user)
    # one padded [metrics, longest block] float64 tensor per rank, one collective in all
    width = max(1, max(len(b) for b in blocks))
    dev = _resolve(device)
    comm_dev = dev if dist.get_backend() == "nccl" else torch.device("cpu")
    local = torch.zeros((len(names), width), dtype=torch.float64, device=comm_dev)
    for j, name in enumerate(names):
        local[j, : len(blocks[rank])] = torch.from_numpy(mine.per_user[name]).to(comm_dev)
    gathered = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(gathered, local)
    stacked = [g.cpu().numpy() for g in gathered]
    per_user = {
        name: np.concatenate([stacked[r][j, : len(blocks[r])] for r in range(world)])
        for j, name in enumerate(names)
    }
    seconds = torch.tensor([mine.seconds], dtype=torch.float64, device=comm_dev)
    dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # the job waits for its slowest rank
    return RankingResult(users=all_users, per_user=per_user, protocol=mine.protocol,
                         ties=mine.ties, seconds=float(seconds.item()), ks=mine.ks)
