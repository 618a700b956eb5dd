"""GRU4Rec (Hidasi, Karatzoglou, Baltrunas & Tikk, ICLR 2016, "Session-based Recommendations
with Recurrent Neural Networks").

    item_t -> embedding -> dropout -> GRU (hidden state h_t) -> dropout -> linear -> o_t
    score of item i after position t:  <o_t, E_i>   (the input item table, shared)

The paper feeds one-hot items to the GRU and trains with session-parallel mini-batches and
ranking losses over the other items of the mini-batch; here items are embedded (the paper's
optional embedding layer), every prefix of a sequence window is a training example (the same
next-item targets as session-parallel batches, back-propagated through the whole window), and the
loss is chosen like every sequential model's: full cross-entropy by default,
``loss="sampled", sampler="in_batch"`` for the paper's mini-batch negatives (logQ-corrected).

The GRU runs over each sequence with its padding moved to the END (the real items first, from a
zero state), so padding never changes a hidden state; outputs are moved back afterwards.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from recstack.models.sequential.base import SequentialRecommender
from recstack.models.sequential.layers import ItemEmbedding


class GRU4RecModule(nn.Module):
    """The boxes: item table, GRU layers, output projection."""

    def __init__(self, n_items: int, dim: int, hidden: int, n_layers: int, dropout: float,
                 init_std: float, n_attributes: int = 0, attr_width: int = 0) -> None:
        super().__init__()
        self.item_emb = ItemEmbedding(n_items, dim, n_attributes, attr_width, init_std)
        self.emb_dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, hidden, n_layers, batch_first=True,
                          dropout=dropout if n_layers > 1 else 0.0)
        self.out_dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, dim)

    def forward(self, seq: Tensor, user: Tensor | None = None, last_only: bool = False) -> Tensor:
        """``[B, L]`` left-padded table indices -> ``[B, L, d]`` (``[B, 1, d]`` if `last_only`)."""
        length = seq.shape[1]
        n_pad = length - (seq > 0).sum(1, keepdim=True)
        pos = torch.arange(length, device=seq.device).unsqueeze(0)
        to_front = (pos + n_pad) % length  # left padding -> right padding (a per-row rotation)
        x = self.emb_dropout(self.item_emb(seq.gather(1, to_front)))
        with torch.autocast(x.device.type, enabled=False):  # the recurrence stays in float32
            h, _ = self.gru(x.float())
        back = ((pos - n_pad) % length).unsqueeze(-1).expand(-1, -1, h.shape[-1])
        h = h.gather(1, back)  # undo the rotation: position t's state is in column t again
        if last_only:
            h = h[:, -1:]
        return self.out(self.out_dropout(h))

    def output_items(self) -> tuple[Tensor, None]:
        return self.item_emb.items(), None


class GRU4Rec(SequentialRecommender):
    """GRU4Rec (see `SequentialRecommender` for the shared arguments).

    Defaults, the same for every data set: ``max_len=50, dim=128, hidden=128, n_layers=1,
    dropout=0.5``, full cross-entropy (the loss GRU4Rec's authors recommend), Adam lr 3e-3
    (chosen on Beauty and LastFM validation, benchmarks/grids/gru4rec.yaml and
    gru4rec_round2.yaml), batch
    128, up to 200 epochs with early stopping on validation NDCG@10 (patience 10).

    Args:
        hidden: GRU state size.
        n_layers: stacked GRU layers.
    """

    name = "gru4rec"
    # chosen on Beauty and LastFM validation (benchmarks/grids/gru4rec.yaml): a larger step than
    # the attention models' 1e-3
    _defaults: ClassVar[dict[str, Any]] = {**SequentialRecommender._defaults, "lr": 3e-3}

    def __init__(self, max_len: int = 50, dim: int = 128, hidden: int = 128, n_layers: int = 1,
                 dropout: float = 0.5, loss: Literal["ce", "sampled", "bce"] = "ce", n_negatives: int = 256,
                 sampler: Literal["uniform", "popularity", "in_batch"] = "uniform", logq: bool = True, use_attributes: bool = False,
                 all_windows: bool = True, init_std: float = 0.02, device: str = "auto",
                 **train: Any) -> None:
        super().__init__(max_len, dim, dropout, loss, n_negatives, sampler, logq, use_attributes,
                         all_windows, init_std, device, **train)
        self.hidden, self.n_layers = hidden, n_layers

    def _make_module(self, meta: dict[str, Any]) -> nn.Module:
        return GRU4RecModule(meta["n_items"], self.dim, self.hidden, self.n_layers, self.dropout,
                             self.init_std, meta["n_attributes"], meta["attr_width"])
