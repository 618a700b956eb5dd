"""Entity features: the side features of users or items -> one dense vector per entity (the
inputs of the two-tower and YouTube-DNN towers, and of their cold-start paths).

    schema, tensors = build_features(data.item_features, data.n_items)   # JSON-able + buffers
    enc = FeatureEncoder(schema, n_ids=data.n_items, id_dim=32, tensors=tensors)
    x = enc(torch.tensor([0, 5, 7]))                                      # [3, enc.out_dim]

Per entity the encoder concatenates:

* its id embedding (optional; row ``n_ids`` of the table is the "unknown id"),
* one embedding per categorical field (a dedicated zero-initialised row for missing/unseen values),
* one mean-pooled embedding per multi-hot field (a single ``EmbeddingBag`` over the fused
  vocabularies of all multi-hot fields, one bag per (entity, field); an empty bag -> zeros),
* each numeric field standardised with the training mean/std, NaN -> 0, plus a missing indicator,
* precomputed dense vectors (e.g. text embeddings) given as float matrices.

Text columns are not embedded here (a content encoder can turn them into dense vectors first).
The feature data lives in module buffers: it moves with ``.to(device)`` and is saved with the
model's weights; the schema (sizes, vocabularies, statistics) goes into the model's JSON meta.

Categorical values are coded by :class:`~recstack.features.vocab.Vocabulary` (layout
``UNKNOWN_LAST``: the data set's codes, then one row for missing / unseen values) and numeric
fields standardised with :class:`~recstack.features.stats.NumericStats`: the same
implementations as the :class:`~recstack.features.FeaturePipeline` of the CTR models.
The users' item histories of the query towers are in :mod:`recstack.features.history`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from recstack.data.dataset import FeatureTable
from recstack.features.stats import NumericStats, standardize
from recstack.features.vocab import UNKNOWN_LAST, Vocabulary

Schema = dict[str, Any]


def embedding_dim(cardinality: int, max_dim: int) -> int:
    """Rule of thumb ``6 * cardinality ** 0.25``, clipped to ``[4, max_dim]``."""
    return int(min(max_dim, max(4, round(6 * max(cardinality, 1) ** 0.25))))


def _json_values(vocab: np.ndarray) -> list[Any]:
    """Vocabulary as JSON values (ints stay ints, everything else becomes str)."""
    return [v if isinstance(v, int) else str(v) for v in np.asarray(vocab).tolist()]


# ---- schema + buffers from a FeatureTable ---------------------------------------------------------
def build_features(
    table: FeatureTable | None,
    n: int,
    dense: Mapping[str, np.ndarray] | None = None,
    max_dim: int = 16,
) -> tuple[Schema, dict[str, Tensor]]:
    """Schema (JSON-able) and feature tensors (buffers of :class:`FeatureEncoder`) of a table.

    Args:
        table: features aligned to entity index (may be None: no features).
        n: number of entities (rows).
        dense: extra precomputed float matrices ``name -> [n, d]``; 2-D ``table.numeric``
            entries are treated the same way.
        max_dim: largest embedding size of a categorical / multi-hot field.

    Returns:
        ``(schema, tensors)``; text columns are listed under ``schema["skipped"]``.
    """
    table = table or FeatureTable(n=n)
    if table.n != n:
        raise ValueError(f"feature table has {table.n} rows, expected {n}")
    dense = {**{k: v for k, v in table.numeric.items() if np.ndim(v) == 2}, **(dense or {})}
    numeric = {k: np.asarray(v, np.float32) for k, v in table.numeric.items() if np.ndim(v) == 1}
    schema: Schema = {"n": n, "categorical": [], "multihot": [], "numeric": [], "dense": [],
                      "skipped": list(table.text)}
    t: dict[str, Tensor] = {}

    # categorical: the table's codes; -1 (missing) -> the field's "unknown" row at index cardinality
    cats = []
    for name, (codes, vocab) in table.categorical.items():
        voc = Vocabulary(_json_values(vocab), UNKNOWN_LAST)
        schema["categorical"].append({"name": name, "vocab": voc.values,
                                      "dim": embedding_dim(len(voc), max_dim)})
        cats.append(voc.codes(codes, np.asarray(codes) < 0))
    t["cat"] = torch.as_tensor(np.stack(cats, 1) if cats else np.zeros((n, 0)), dtype=torch.long)

    # multi-hot: one CSR over (entity, field) bags, values shifted into a fused vocabulary
    fields = list(table.multihot.items())
    n_fields = len(fields)
    lens = np.zeros((n, n_fields), np.int64)
    for f, (_, (off, _, _)) in enumerate(fields):
        lens[:, f] = np.diff(off)
    indptr = np.zeros(n * n_fields + 1, np.int64)
    np.cumsum(lens.ravel(), out=indptr[1:])
    values = np.zeros(indptr[-1], np.int64)
    shift = 0
    for f, (name, (off, val, vocab)) in enumerate(fields):
        dest = np.repeat(indptr[np.arange(n) * n_fields + f], lens[:, f])
        within = np.arange(len(val)) - np.repeat(off[:-1], lens[:, f])
        values[dest + within] = val + shift
        shift += len(vocab)
        schema["multihot"].append({"name": name, "vocab": _json_values(vocab)})
    schema["multihot_dim"] = embedding_dim(shift, max_dim) if fields else 0
    schema["multihot_nnz"] = int(indptr[-1])
    t["mh_indptr"], t["mh_values"] = torch.as_tensor(indptr), torch.as_tensor(values)

    # numeric: raw values kept (NaN = missing); the encoder standardises with these statistics
    for name, x in numeric.items():
        schema["numeric"].append({"name": name, **NumericStats.of(x).to_json()})
    t["num"] = torch.as_tensor(np.stack(list(numeric.values()), 1) if numeric else np.zeros((n, 0)),
                               dtype=torch.float32)

    mats = []
    for name, m in dense.items():
        m = np.nan_to_num(np.asarray(m, np.float32).reshape(n, -1))
        schema["dense"].append({"name": name, "dim": int(m.shape[1])})
        mats.append(m)
    t["dense"] = torch.as_tensor(np.concatenate(mats, 1) if mats else np.zeros((n, 0)),
                                 dtype=torch.float32)
    return schema, t


@dataclass
class FeatureRows:
    """Feature values of a batch of B entities, as the encoder consumes them."""

    cat: Tensor  # [B, C] codes; unknown/missing = the field's cardinality
    mh_values: Tensor  # [nnz] fused multi-hot codes
    mh_offsets: Tensor  # [B * F] start of each (entity, field) bag in mh_values
    num: Tensor  # [B, N] raw numeric values, NaN = missing
    dense: Tensor  # [B, D] precomputed vectors


class FeatureEncoder(nn.Module):
    """Embeds entities (users or items) from their id and side features.

    Args:
        schema: from :func:`build_features` (or a saved model's meta).
        n_ids: size of the id vocabulary; 0 = no id embedding.
        id_dim: id embedding size.
        use_features: embed the side features (False: the feature data is kept, e.g. for
            category fallbacks, but only the id is embedded).
        learned_unknown_id: the unknown-id row was trained (id dropout), so unseen entities use
            it; otherwise they get the mean of the trained id embeddings.
        init_std: std of the normal initialisation of the embedding tables.
        tensors: feature data from :func:`build_features`; None = zeros of the schema's shapes
            (filled by ``load_state_dict`` when loading a saved model).
    """

    def __init__(self, schema: Schema, n_ids: int = 0, id_dim: int = 0, use_features: bool = True,
                 learned_unknown_id: bool = False, init_std: float = 0.05,
                 tensors: Mapping[str, Tensor] | None = None) -> None:
        super().__init__()
        self.schema, self.n_ids, self.use_features = schema, n_ids, use_features
        self.learned_unknown_id = learned_unknown_id
        n, cats, mhs = schema["n"], schema["categorical"], schema["multihot"]
        self.n_fields = len(mhs)
        self.vocabularies = [Vocabulary(c["vocab"], UNKNOWN_LAST) for c in cats]  # categorical
        self.multihot_vocabularies = [Vocabulary(m["vocab"], UNKNOWN_LAST) for m in mhs]

        # the boxes: id table, one table per categorical field, one fused multi-hot table
        self.id = nn.Embedding(n_ids + 1, id_dim) if n_ids and id_dim else None
        use_cat, use_mh = use_features and bool(cats), use_features and bool(mhs)
        self.categorical = nn.ModuleList(
            nn.Embedding(v.size, c["dim"]) for v, c in zip(self.vocabularies, cats, strict=True)
        ) if use_cat else None
        self.multihot = nn.EmbeddingBag(sum(len(m["vocab"]) for m in mhs), schema["multihot_dim"],
                                        mode="mean") if use_mh else None
        for table in [self.id, *(self.categorical or []), self.multihot]:
            if table is not None:
                nn.init.normal_(table.weight, std=init_std)
        for v, table in zip(self.vocabularies, self.categorical or [], strict=False):
            nn.init.zeros_(table.weight[v.unknown])  # missing / unseen value: contributes nothing

        # the feature data, as buffers (device placement + safetensors)
        shapes = {"cat": ((n, len(cats)), torch.long),
                  "mh_indptr": ((n * self.n_fields + 1,), torch.long),
                  "mh_values": ((schema["multihot_nnz"],), torch.long),
                  "num": ((n, len(schema["numeric"])), torch.float32),
                  "dense": ((n, sum(d["dim"] for d in schema["dense"])), torch.float32)}
        for name, (shape, dtype) in shapes.items():
            buf = torch.zeros(shape, dtype=dtype) if tensors is None else tensors[name].to(dtype)
            if tuple(buf.shape) != shape:
                raise ValueError(f"feature tensor '{name}' has shape {tuple(buf.shape)}, schema says {shape}")
            self.register_buffer(name, buf)
        stats = torch.tensor([[c["mean"], c["std"]] for c in schema["numeric"]]).reshape(-1, 2)
        self.register_buffer("num_stats", stats.float(), persistent=False)  # from the schema

        self.out_dim = (id_dim if self.id is not None else 0) + (
            sum(c["dim"] for c in cats) * use_cat + schema["multihot_dim"] * self.n_fields * use_mh
            + (2 * len(schema["numeric"]) + self.dense.shape[1]) * use_features)

    # ---- the arrows -------------------------------------------------------------------------------
    def forward(self, idx: Tensor, ids: Tensor | None = None) -> Tensor:
        """Encode entities ``idx`` [B] (rows of the feature data) -> ``[B, out_dim]``.

        ``ids`` overrides the id to embed (default ``idx``); -1 selects the unknown-id row
        (this is how id dropout reaches the encoder during training).
        """
        return self.encode(self.rows(idx), idx if ids is None else ids)

    def encode(self, rows: FeatureRows, ids: Tensor | None) -> Tensor:
        """Encode feature rows; ``ids=None`` means entities unseen in training (unknown id)."""
        b = rows.cat.shape[0]
        parts = []
        if self.id is not None:
            parts.append(self.id_vectors(ids, b))
        if self.categorical is not None:
            parts += [table(rows.cat[:, f]) for f, table in enumerate(self.categorical)]
        if self.multihot is not None:
            pooled = self.multihot(rows.mh_values, rows.mh_offsets)  # [B * F, d], empty bag -> 0
            parts.append(pooled.reshape(b, -1))
        if self.use_features and rows.num.shape[1]:
            missing = torch.isnan(rows.num)
            z = standardize(rows.num, self.num_stats[:, 0], self.num_stats[:, 1])
            parts += [torch.where(missing, torch.zeros_like(z), z), missing.float()]
        if self.use_features and rows.dense.shape[1]:
            parts.append(rows.dense)
        if not parts:
            return torch.zeros(b, 0, device=rows.cat.device)
        return torch.cat([p.to(parts[0].dtype) for p in parts], dim=1)

    def id_vectors(self, ids: Tensor | None, batch: int) -> Tensor:
        """Id embeddings; ``None`` -> the unknown-id vector for the whole batch."""
        assert self.id is not None
        if ids is None:
            w = self.id.weight
            unknown = w[self.n_ids] if self.learned_unknown_id else w[: self.n_ids].mean(0)
            return unknown.expand(batch, -1)
        return self.id(torch.where(ids >= 0, ids, torch.full_like(ids, self.n_ids)))

    # ---- feature rows -------------------------------------------------------------------------------
    def rows(self, idx: Tensor) -> FeatureRows:
        """Gather the stored feature rows of entities ``idx`` (vectorised, on the device)."""
        f = self.n_fields
        bags = (idx.unsqueeze(1) * f + torch.arange(f, device=idx.device)).reshape(-1)
        starts = self.mh_indptr[bags]
        lens = self.mh_indptr[bags + 1] - starts
        offsets = lens.cumsum(0) - lens
        total = int(lens.sum())  # one host sync: the size of the gathered values
        within = torch.arange(total, device=idx.device) - offsets.repeat_interleave(lens, output_size=total)
        values = self.mh_values[starts.repeat_interleave(lens, output_size=total) + within]
        return FeatureRows(self.cat[idx], values, offsets, self.num[idx], self.dense[idx])

    def rows_from_table(self, table: FeatureTable, dense: Mapping[str, np.ndarray] | None = None) -> FeatureRows:
        """Feature rows of entities unseen in training, from a table with raw vocabularies.

        Values are matched to the training vocabularies by their raw value; values never seen in
        training become "unknown" (categorical) or are dropped (multi-hot); fields missing from
        ``table`` are missing for every entity.
        """
        n, dev = table.n, self.cat.device
        known = {*table.categorical, *table.multihot, *table.numeric, *table.text, *(dense or {})}
        expected = {c["name"] for k in ("categorical", "multihot", "numeric", "dense") for c in self.schema[k]}
        unknown = known - expected - set(self.schema["skipped"])
        if unknown:
            raise ValueError(f"unknown feature field(s) {sorted(unknown)}; this model knows {sorted(expected)}")
        cat = np.zeros((n, len(self.schema["categorical"])), np.int64)
        for f, (c, voc) in enumerate(zip(self.schema["categorical"], self.vocabularies,
                                         strict=True)):
            if c["name"] in table.categorical:
                codes, vocab = table.categorical[c["name"]]
                cat[:, f] = voc.recode(codes, vocab)
            else:
                cat[:, f] = voc.missing
        # multi-hot: (entity, field) bags in fused codes, unseen values dropped
        owners, fields, values, shift = [], [], [], 0
        for f, (mfield, voc) in enumerate(zip(self.schema["multihot"], self.multihot_vocabularies,
                                              strict=True)):
            if mfield["name"] in table.multihot:
                off, val, vocab = table.multihot[mfield["name"]]
                codes = voc.index(vocab)[val]
                keep = codes >= 0
                owners.append(np.repeat(np.arange(n), np.diff(off))[keep])
                fields.append(np.full(int(keep.sum()), f))
                values.append(codes[keep] + shift)
            shift += len(mfield["vocab"])
        owner, field, vals = (np.concatenate(a).astype(np.int64) if a else np.zeros(0, np.int64)
                              for a in (owners, fields, values))
        order = np.lexsort((field, owner))  # entity-major, field-minor, like the bags
        lens = np.bincount(owner * self.n_fields + field, minlength=n * self.n_fields)
        offsets = np.cumsum(lens) - lens
        num = np.stack([np.asarray(table.numeric.get(c["name"], np.full(n, np.nan)), np.float32)
                        for c in self.schema["numeric"]], 1) if self.schema["numeric"] else np.zeros((n, 0))
        mats = [np.nan_to_num(np.asarray((dense or {}).get(d["name"], table.numeric.get(d["name"], np.zeros((n, d["dim"])))),
                                         np.float32).reshape(n, d["dim"])) for d in self.schema["dense"]]
        dense_m = np.concatenate(mats, 1) if mats else np.zeros((n, 0))
        as_t = lambda a, dt: torch.as_tensor(np.asarray(a), dtype=dt, device=dev)  # noqa: E731
        return FeatureRows(as_t(cat, torch.long), as_t(vals[order], torch.long), as_t(offsets, torch.long),
                           as_t(num, torch.float32), as_t(dense_m, torch.float32))

    def rows_from_values(self, columns: Mapping[str, Any], n: int) -> FeatureRows:
        """Feature rows from raw values: ``{field: [value per entity]}``.

        Categorical: a raw value (None = missing); multi-hot: a list of raw values; numeric: a
        number (None/NaN = missing); dense: a vector per entity (or an ``[n, d]`` matrix).
        """
        return self.rows_from_table(*table_from_values(self.schema, columns, n))


def table_from_values(schema: Schema, columns: Mapping[str, Any], n: int
                      ) -> tuple[FeatureTable, dict[str, np.ndarray]]:
    """Raw per-entity values (see :meth:`FeatureEncoder.rows_from_values`) -> (table, dense)."""
    kinds = {c["name"]: k for k in ("categorical", "multihot", "numeric", "dense") for c in schema[k]}
    table, dense = FeatureTable(n=n), {}
    for name, col in columns.items():
        kind = kinds.get(name)
        if kind is None:
            raise ValueError(f"unknown feature field '{name}'; this model knows {sorted(kinds)}")
        if kind == "dense":
            dense[name] = np.asarray(col, np.float32).reshape(n, -1)
            continue
        if len(col) != n:
            raise ValueError(f"feature '{name}' has {len(col)} values for {n} entities")
        if kind == "categorical":
            raw = ["" if v is None else str(v) for v in col]
            vocab, codes = np.unique(np.asarray(raw, dtype=object).astype(str), return_inverse=True)
            codes = np.where(np.asarray([v is None for v in col]), -1, codes)
            table.categorical[name] = (codes.astype(np.int64), vocab)
        elif kind == "multihot":
            lists = [[] if v is None else [str(x) for x in v] for v in col]
            off = np.zeros(n + 1, np.int64)
            np.cumsum([len(x) for x in lists], out=off[1:])
            flat = np.asarray([x for xs in lists for x in xs], dtype=object).astype(str)
            vocab, codes = np.unique(flat, return_inverse=True)
            table.multihot[name] = (off, codes.astype(np.int64).reshape(-1), vocab)
        else:
            table.numeric[name] = np.asarray([np.nan if v is None else v for v in col], np.float32)
    return table, dense
