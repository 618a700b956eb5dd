"""Building blocks shared by the sequential models.

* :class:`ItemEmbedding`: the item table of a sequence model. Row 0 is padding, rows
  ``1..n_items`` are the items (item index + 1), row ``n_items + 1`` is BERT4Rec's ``[mask]``
  token. Optionally each item's input vector also gets the mean embedding of its attributes
  (brand, categories, ...).
* :class:`SelfAttention`: multi-head scaled dot-product attention under a boolean mask
  (True = may attend), used by SASRec (causal) and BERT4Rec (bidirectional).
* :func:`attention_mask`: that mask for left-padded sequences.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.features.history import MeanBag


class ItemEmbedding(nn.Module):
    """Item id embeddings (+ the mean of the item's attribute embeddings, when given).

    Args:
        n_items: number of real items; the table has ``n_items + 2`` rows (padding, items, mask).
        dim: embedding size.
        n_attributes: attribute vocabulary size (0 = no attributes).
        attr_width: the most attributes any item has (columns of the padded attribute matrix).
        init_std: std of the normal initialisation.
    """

    def __init__(self, n_items: int, dim: int, n_attributes: int = 0, attr_width: int = 0,
                 init_std: float = 0.02) -> None:
        super().__init__()
        self.n_items = n_items
        self.ids = nn.Embedding(n_items + 2, dim, padding_idx=0)
        nn.init.normal_(self.ids.weight, std=init_std)
        with torch.no_grad():
            self.ids.weight[0].zero_()
        self.attributes: MeanBag | None = None
        if n_attributes > 0:
            # row r = the attributes (attribute index + 1, 0 = none) of table row r; filled by
            # `set_attributes` at fit time or by load_state_dict; padding and mask rows stay empty
            self.register_buffer("attr_bags", torch.zeros(n_items + 2, attr_width, dtype=torch.long))
            self.attributes = MeanBag(n_attributes + 1, dim, init_std)

    def set_attributes(self, bags: Tensor) -> None:
        """Store the ``[n_items, attr_width]`` padded attribute matrix of the real items."""
        self.attr_bags[1 : self.n_items + 1] = bags.to(self.attr_bags.device)

    def table(self) -> Tensor:
        """The whole ``[n_items + 2, dim]`` input table (ids + attributes)."""
        if self.attributes is None:
            return self.ids.weight
        return self.ids.weight + self.attributes(self.attr_bags)

    def forward(self, seq: Tensor) -> Tensor:
        """``[B, L]`` table rows -> ``[B, L, dim]``."""
        if self.attributes is None:
            return self.ids(seq)
        return F.embedding(seq, self.table())

    def items(self) -> Tensor:
        """Rows of the real items only, ``[n_items, dim]`` (what output scores are dotted with)."""
        return self.table()[1 : self.n_items + 1]


def attribute_matrix(offsets: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Multi-hot CSR (offsets ``[n + 1]``, values) -> padded ``[n, max_count]`` of value + 1."""
    lens = np.diff(offsets)
    width = max(int(lens.max()) if len(lens) else 0, 1)
    out = np.zeros((len(lens), width), np.int64)
    rows = np.repeat(np.arange(len(lens)), lens)
    cols = np.arange(len(values)) - np.repeat(offsets[:-1], lens)
    out[rows, cols] = values + 1
    return out


def attention_mask(seq: Tensor, causal: bool) -> Tensor:
    """``[B, 1, L, L]`` boolean mask (True = query may attend to key) for left-padded ``seq``.

    Padding keys are hidden; a position may always attend to itself so that no row is empty
    (an all-padding history then still gives finite, if uninformative, outputs).
    """
    length = seq.shape[1]
    eye = torch.eye(length, dtype=torch.bool, device=seq.device)
    allowed = (seq > 0).unsqueeze(1).unsqueeze(2) | eye  # [B, 1, L(query), L(key)]
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=seq.device).tril()
    return allowed


class SelfAttention(nn.Module):
    """Multi-head attention ``softmax(Q K^T / sqrt(d_head)) V`` followed by an output projection."""

    def __init__(self, dim: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"dim={dim} is not divisible by n_heads={n_heads}")
        self.n_heads, self.dropout = n_heads, dropout
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, queries: Tensor, keys: Tensor, allowed: Tensor) -> Tensor:
        """``queries`` ``[B, Lq, d]`` attend over ``keys`` ``[B, L, d]`` where ``allowed``."""
        b, lq, d = queries.shape

        def heads(x: Tensor) -> Tensor:  # [B, L, d] -> [B, heads, L, d / heads]
            return x.view(b, x.shape[1], self.n_heads, d // self.n_heads).transpose(1, 2)

        q, k, v = heads(self.query(queries)), heads(self.key(keys)), heads(self.value(keys))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out(att.transpose(1, 2).reshape(b, lq, d))


class FeedForward(nn.Sequential):
    """Position-wise two-layer network ``W2 act(W1 x)`` with dropout (the 1x1 convolutions of
    SASRec, the GELU feed-forward of BERT)."""

    def __init__(self, dim: int, hidden: int, dropout: float, act: type[nn.Module]) -> None:
        super().__init__(nn.Linear(dim, hidden), act(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))
