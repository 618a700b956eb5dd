"""Building blocks shared by the ranking models: the fused embedding table, the field embedding
layer over the feature pipeline's tensors, first-order (linear) terms and MLPs."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack.features.pipeline import Layout

Batch = dict[str, Tensor]


class FusedEmbedding(nn.Module):
    """Every categorical table in one ``[sum(sizes), dim]`` matrix: code ``c`` of field ``f`` is
    row ``offsets[f] + c``. All fields are looked up by one gather (one kernel, one sparse
    gradient), never by a Python loop over per-field modules.

    Args:
        sizes: number of codes of each field (code 0 = missing/padding, initialised to zero).
        dim: embedding size.
        sparse: sparse gradients (only the looked-up rows), for a row-wise optimiser.
        init_std: std of the normal initialisation.
    """

    def __init__(self, sizes: Sequence[int], dim: int, sparse: bool = False,
                 init_std: float = 0.01) -> None:
        super().__init__()
        sizes = [int(s) for s in sizes]
        self.sizes, self.dim, self.sparse = sizes, dim, sparse
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64) if sizes else np.zeros(0, np.int64)
        self.weight = nn.Parameter(torch.randn(max(sum(sizes), 1), dim) * init_std)
        self.register_buffer("offsets", torch.as_tensor(starts), persistent=False)
        with torch.no_grad():
            self.weight[self.offsets] = 0.0  # the "missing" row of every field starts neutral

    def forward(self, codes: Tensor) -> Tensor:
        """``[B, F]`` codes of fields 0..F-1 -> ``[B, F, dim]``."""
        return F.embedding(codes + self.offsets[: codes.shape[1]], self.weight, sparse=self.sparse)

    def field(self, codes: Tensor, f: int) -> Tensor:
        """Codes of field ``f`` (any shape) -> their vectors ``[..., dim]``."""
        return F.embedding(codes + self.offsets[f], self.weight, sparse=self.sparse)

    def bag(self, codes: Tensor, f: int) -> Tensor:
        """Mean of each row of a padded ``[B, L]`` bag of field ``f`` (0 = padding) -> ``[B, dim]``;
        one ``embedding_bag`` call, an all-padding row pools to zeros."""
        mask = (codes > 0).to(self.weight.dtype)
        w = mask / mask.sum(1, keepdim=True).clamp_min(1.0)
        return F.embedding_bag(codes + self.offsets[f], self.weight, mode="sum",
                               per_sample_weights=w, sparse=self.sparse)


class FieldEmbedder(nn.Module):
    """The embedding layer: pipeline tensors -> one ``dim``-vector per field, ``[B, F, dim]``.

    Fields, in order: each categorical/bucketized field; each bag (multi-hot or id sequence,
    mean-pooled; a sequence sharing a vocabulary uses that field's rows); each numeric feature
    as ``x * v`` (a learned vector scaled by the value, as in FM / AutoInt) when
    ``numeric_fields``; the precomputed vectors projected to ``dim``.

    Args:
        layout: the fitted pipeline's layout.
        dim: embedding size.
        sparse: sparse gradients for the fused table.
        numeric_fields: embed numeric features as fields (False: the model reads ``num`` itself).
        skip_bags: bag names not pooled into fields (e.g. a sequence a model attends over).
    """

    def __init__(self, layout: Layout, dim: int, sparse: bool = False, init_std: float = 0.01,
                 numeric_fields: bool = True, skip_bags: Sequence[str] = ()) -> None:
        super().__init__()
        self.layout, self.dim = layout, dim
        own = [b for b in layout.bags if b.shared_with is None]
        self.table = FusedEmbedding([*layout.cat_sizes, *(b.size for b in own)], dim, sparse, init_std)
        own_field = {b.name: len(layout.cat_sizes) + i for i, b in enumerate(own)}
        self.bag_fields = [(b.name, own_field.get(b.name, layout.cat_names.index(b.shared_with)
                                                   if b.shared_with else -1))
                           for b in layout.bags if b.name not in skip_bags]
        self.num_vectors = (nn.Parameter(torch.randn(len(layout.num_names), dim) * init_std)
                            if numeric_fields and layout.num_names else None)
        self.emb_proj = nn.Linear(layout.emb_dim, dim) if layout.emb_dim else None
        self.n_fields = (len(layout.cat_sizes) + len(self.bag_fields)
                         + (len(layout.num_names) if self.num_vectors is not None else 0)
                         + (1 if self.emb_proj is not None else 0))
        if self.n_fields == 0:
            raise ValueError("the feature layout has no field to embed")

    def field_index(self, name: str) -> int:
        """Table field of a categorical feature (for models that look it up themselves)."""
        return self.layout.cat_names.index(name)

    def forward(self, batch: Batch) -> Tensor:
        parts = []
        if batch["cat"].shape[1]:
            parts.append(self.table(batch["cat"]))
        for name, f in self.bag_fields:
            parts.append(self.table.bag(batch[f"bag.{name}"], f).unsqueeze(1))
        if self.num_vectors is not None:
            parts.append(batch["num"].unsqueeze(-1) * self.num_vectors)
        if self.emb_proj is not None:
            parts.append(self.emb_proj(batch["emb"]).unsqueeze(1))
        return torch.cat([p.to(parts[0].dtype) for p in parts], 1)


class LinearTerms(nn.Module):
    """First-order terms ``w0 + sum_f w_f[code_f] + <w, num>``: one scalar per code in a fused
    table (bags add the mean of their codes' weights), crosses included when ``use_cross``."""

    def __init__(self, layout: Layout, sparse: bool = False, use_cross: bool = True) -> None:
        super().__init__()
        own = [b for b in layout.bags if b.shared_with is None]
        cross = layout.cross_sizes if use_cross else []
        self.n_cat, self.n_cross = len(layout.cat_sizes), len(cross)
        self.table = FusedEmbedding([*layout.cat_sizes, *(b.size for b in own), *cross], 1,
                                    sparse, init_std=0.0)
        own_field = {b.name: self.n_cat + i for i, b in enumerate(own)}
        self.bag_fields = [(b.name, own_field.get(b.name, layout.cat_names.index(b.shared_with)
                                                   if b.shared_with else -1)) for b in layout.bags]
        self.cross_start = self.n_cat + len(own)
        self.num = nn.Linear(len(layout.num_names), 1, bias=False) if layout.num_names else None
        self.emb = nn.Linear(layout.emb_dim, 1, bias=False) if layout.emb_dim else None
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, batch: Batch) -> Tensor:
        """-> ``[B]`` logits."""
        out = self.bias.expand(batch["cat"].shape[0])
        if self.n_cat:
            out = out + self.table(batch["cat"]).sum((1, 2))
        for name, f in self.bag_fields:
            out = out + self.table.bag(batch[f"bag.{name}"], f).squeeze(1)
        if self.n_cross:
            codes = batch["cross"] + self.table.offsets[self.cross_start:]
            out = out + F.embedding(codes, self.table.weight, sparse=self.table.sparse).sum((1, 2))
        if self.num is not None:
            out = out + self.num(batch["num"]).squeeze(1)
        if self.emb is not None:
            out = out + self.emb(batch["emb"]).squeeze(1)
        return out


def numeric_input(batch: Batch) -> Tensor:
    """The dense inputs a deep tower concatenates to its embeddings: numeric + precomputed."""
    return torch.cat([batch["num"], batch["emb"]], 1)
