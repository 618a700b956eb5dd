"""Caser (Tang & Wang, WSDM 2018, "Personalized Top-N Sequential Recommendation via
Convolutional Sequence Embedding").

    the last L items -> embedding matrix E [L x d]   ("an image of the recent past")
      horizontal convolutions: n_h filters of every height h = 1..L, ReLU, max-pool over time
      vertical convolutions:   n_v filters of size L x 1 (weighted sums of the L rows)
    z = ReLU(W [dropout(horizontal; vertical)] + b)                     (sequence embedding, d)
    score of item i for user u:  <[z; P_u], W'_i> + b'_i                 (P_u: user embedding)

Every position of a training window is an example (its L preceding items predict the next one,
the paper's T = 1 case). An anonymous session has no user embedding: it gets the mean of the
learned ones (the "typical user").
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.models.sequential.base import SequentialRecommender
from recstack.models.sequential.layers import ItemEmbedding


class CaserModule(nn.Module):
    """The boxes: item and user tables, horizontal and vertical convolutions, the fully
    connected layer, and the output item table W' with bias b'."""

    def __init__(self, n_users: int, n_items: int, dim: int, window: int, n_h: int, n_v: int,
                 dropout: float, init_std: float, n_attributes: int = 0, attr_width: int = 0) -> None:
        super().__init__()
        self.window = window
        self.item_emb = ItemEmbedding(n_items, dim, n_attributes, attr_width, init_std)
        self.user_emb = nn.Embedding(n_users, dim)
        self.horizontal = nn.ModuleList(nn.Conv2d(1, n_h, (h, dim)) for h in range(1, window + 1))
        self.vertical = nn.Conv2d(1, n_v, (window, 1))
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(n_h * window + n_v * dim, dim)
        self.out_items = nn.Embedding(n_items, 2 * dim)
        self.out_bias = nn.Parameter(torch.zeros(n_items))
        for table in (self.user_emb, self.out_items):
            nn.init.normal_(table.weight, std=init_std)

    def forward(self, seq: Tensor, user: Tensor | None = None, last_only: bool = False) -> Tensor:
        """``[B, L]`` left-padded table indices -> ``[B, L, 2d]`` (``[B, 1, 2d]`` if `last_only`):
        position t is encoded from items t - window + 1 .. t."""
        b = seq.shape[0]
        padded = F.pad(seq, (self.window - 1, 0))
        windows = padded[:, -self.window:].unsqueeze(1) if last_only else padded.unfold(1, self.window, 1)
        n_pos = windows.shape[1]
        e = self.item_emb(windows.reshape(-1, self.window)).unsqueeze(1)  # [N, 1, window, d]
        horizontal = [F.relu(conv(e)).squeeze(3).amax(dim=2) for conv in self.horizontal]
        vertical = self.vertical(e).flatten(1)
        z = F.relu(self.fc(self.dropout(torch.cat([*horizontal, vertical], dim=1))))
        p = self.user_emb.weight.mean(0).expand(b, -1) if user is None else self.user_emb(user)
        p = p.unsqueeze(1).expand(-1, n_pos, -1).to(z.dtype)
        return torch.cat([z.view(b, n_pos, -1), p], dim=-1)

    def output_items(self) -> tuple[Tensor, Tensor]:
        return self.out_items.weight, self.out_bias


class Caser(SequentialRecommender):
    """Caser (see `SequentialRecommender` for the shared arguments).

    Defaults, the same for every data set: the paper's ``window=5 (L), n_h=16, n_v=4,
    dropout=0.5``, ``dim=64``, full cross-entropy, Adam lr 1e-3, batch 128, up to 200 epochs with
    early stopping on validation NDCG@10 (patience 10); training windows of ``max_len=50``.

    Args:
        window: L, the number of recent items the convolutions see.
        n_h: horizontal filters per height.
        n_v: vertical filters.
    """

    name = "caser"

    def __init__(self, max_len: int = 50, dim: int = 64, window: int = 5, n_h: int = 16,
                 n_v: int = 4, dropout: float = 0.5, loss: Literal["ce", "sampled", "bce"] = "ce", n_negatives: int = 256,
                 sampler: Literal["uniform", "popularity", "in_batch"] = "uniform", logq: bool = True, use_attributes: bool = False,
                 all_windows: bool = True, init_std: float = 0.02, device: str = "auto",
                 **train: Any) -> None:
        super().__init__(max_len, dim, dropout, loss, n_negatives, sampler, logq, use_attributes,
                         all_windows, init_std, device, **train)
        self.window, self.n_h, self.n_v = window, n_h, n_v

    def _make_module(self, meta: dict[str, Any]) -> nn.Module:
        return CaserModule(meta["n_users"], meta["n_items"], self.dim, self.window, self.n_h,
                           self.n_v, self.dropout, self.init_std, meta["n_attributes"],
                           meta["attr_width"])
