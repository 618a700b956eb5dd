"""Matrix factorisation whose user and item tables are row-sharded over the ranks.

The model for catalogues or user bases too large for one device: score(u, i) = <p_u, q_i>,
trained with BPR against uniformly drawn negatives (or negatives given in the batch). Each
rank keeps only its rows of both tables; its loss is the mean over its own examples, and the
tables average gradients over ranks, so training matches the single-process run on the
global batch. Plug it into the shared Trainer with a sparse-capable optimiser:

    module = ShardedMF(n_users, n_items, dim=64).to(device)
    Trainer(cfg).fit(module, module.loss, examples, device=device,
                     make_optimizer=lambda m, c: torch.optim.SparseAdam(list(m.parameters()), lr=c.lr))
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from recstack.distributed.sharded_embedding import RowShardedEmbedding


class ShardedMF(nn.Module):
    """User and item `RowShardedEmbedding` tables and a BPR loss over a batch.

    Args:
        n_users: global size of the user table.
        n_items: global size of the item table.
        dim: embedding size.
        n_negatives: negatives per positive drawn when the batch has no "neg" column.
        init_std: std of the normal initialisation.
        sparse: sparse (row-wise) gradients for the tables.
        device: where the local shards live.
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 64, n_negatives: int = 1,
                 init_std: float = 0.1, sparse: bool = True,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        self.n_items, self.n_negatives = n_items, n_negatives
        self.user = RowShardedEmbedding(n_users, dim, init_std, sparse, device=device)
        self.item = RowShardedEmbedding(n_items, dim, init_std, sparse, device=device)

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """Mean BPR loss of the batch: -log sigmoid(s(u, i) - s(u, j)) over its negatives j."""
        u, i = batch["user"], batch["item"]
        neg = batch.get("neg")
        if neg is None:
            neg = torch.randint(self.n_items, (len(u), self.n_negatives), device=u.device,
                                generator=generator)
        # one lookup per table per step: positives and negatives share the exchange
        items = torch.cat([i.unsqueeze(1), neg.view(len(u), -1)], dim=1)
        p = self.user(u)
        q = self.item(items)
        s = torch.einsum("bd,bnd->bn", p, q).float()
        return F.softplus(s[:, 1:] - s[:, :1]).mean()

    @torch.no_grad()
    def scorer(self, device: torch.device | str = "cpu") -> Callable[[torch.Tensor], torch.Tensor]:
        """`score_fn(users) -> [len(users), n_items]` over the gathered tables, for
        `evaluate_ranking` (small catalogues only). Collective: every rank calls it once."""
        p, q = self.user.full_weight(device), self.item.full_weight(device)
        return lambda users: p[users] @ q.T
