"""What can be exported of each model: its parts as plain ``nn.Module`` s with a static graph.

A *part* is a function of tensors only (no Python objects, no data-dependent shapes) built over
a fitted model's ``eval()`` network, with a sample batch to trace it on and the model's own
outputs on that batch to check the export against:

* two-tower / YouTube-DNN: ``user_tower`` (user index [+ history bag] -> vector) and
  ``item_tower`` (item index -> vector); MF / LightGCN: the same two parts as lookups of their
  embedding tables. ``scores = user_tower(u) @ item_table.T``.
* sequential models: ``encoder`` (left-padded ``[B, L]`` history -> hidden ``[B, d]``), the
  item table written beside it, ``scores = hidden @ item_table.T`` (an output bias is folded in
  as a last column, the hidden vector then ends in a 1).
* CTR rankers: ``ranker`` (the feature pipeline's tensors -> logit and probability).

Nothing here changes a model: the wrappers call the models' own modules; only where a model's
Python code would read data-dependent sizes (the multi-hot feature bags of the entity
encoders) the wrapper precomputes that (batch-independent) piece once, at export time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from recstack.features.entity import FeatureEncoder
from recstack.features.stats import standardize
from recstack.models.two_tower import TwoTowerModule
from recstack.models.youtube_dnn import YouTubeDNNModule

__all__ = ["Part", "UNSUPPORTED", "UNSUPPORTED_FORMAT", "ExportError", "model_parts", "supported_parts"]


class ExportError(ValueError):
    """A model (or part, or format) that cannot be exported; the message is one line."""


#: registered models that have no exportable network, and why (one line each)
UNSUPPORTED: dict[str, str] = {
    "pop": "not a network: its scores are item popularity counts (ship it in a serving bundle)",
    "ease": "not a network: scores are the user's interaction row times a dense item-item matrix "
            "(ship it in a serving bundle: `recstack export`)",
    "itemknn": "not a network: scores are the user's interaction row times a sparse item-item "
               "matrix (ship it in a serving bundle: `recstack export`)",
    "bspm": "not a network: scores come from a blurring-sharpening ODE over the interaction "
            "matrix, solved at scoring time",
    "gfcf": "not a network: scores are a graph filter of the user's interaction row",
    "ials": "not a network: scores are dot products of two factor tables fitted by least squares "
            "(the fitted model's user_factors_ and item_factors_)",
    "blend": "an ensemble of other models' scores: export its members",
    "neumf": "its score is an MLP over the (user, item) pair, not a dot product of two towers; "
             "no user/item/encoder part to export",
    "multvae": "its encoder reads the user's whole [n_items] interaction row; not supported yet",
}


#: (model, format) pairs that cannot be exported in that format, and why
UNSUPPORTED_FORMAT: dict[tuple[str, str], str] = {
    ("bsarec", "onnx"): "its frequency filter calls torch.fft.rfft / irfft, which neither ONNX "
                        "exporter of torch 2.13 converts (dynamo: no decomposition; TorchScript: "
                        "no aten::fft_rfft); use format='torch_export'",
}


@dataclass
class Part:
    """One exportable part of a fitted model.

    Attributes:
        name: part name (file stem).
        module: the traceable ``nn.Module`` (eval mode); positional inputs = `inputs` order.
        inputs: sample batch, input name -> tensor (the batch dimension first, dynamic).
        outputs: output names, in the module's return order.
        describe: input / output name -> what it holds (for the manifest).
        expected: the PyTorch model's own outputs on `inputs` (through its public API where it
            has one), output name -> array; compared with the exported artefact's.
        scores: optional check of full scores: exported outputs -> (scores from the exported
            outputs and the item table, the model's own scores).
        notes: extra manifest facts (how ids map, what is baked into the graph).
    """

    name: str
    module: nn.Module
    inputs: dict[str, Tensor]
    outputs: list[str]
    describe: dict[str, str]
    expected: dict[str, np.ndarray]
    scores: Callable[[dict[str, np.ndarray]], tuple[np.ndarray, np.ndarray]] | None = None
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass
class Parts:
    """Every part of one model, with the tables written beside them."""

    parts: dict[str, Part]
    tables: dict[str, tuple[np.ndarray, str]]  # name -> (array, description)
    scoring: str


# ---- entity features (two-tower / YouTube-DNN towers) ---------------------------------------------
# The wrappers register only the submodules a part reads (the other tower's weights and the
# unused feature buffers stay out of the exported file) and call the models' own methods
# unbound, on themselves: `TwoTowerModule.query(self, ...)` reads exactly these attributes.
def _copy(t: Tensor) -> Tensor:
    return t.detach().contiguous().clone()


class EntityFeatures(nn.Module):
    """`FeatureEncoder.forward(idx)` for entities seen in training, as a static graph.

    The encoder gathers each entity's multi-hot bags with a data-dependent size; their pooled
    embeddings do not depend on the batch, so they are computed once here (with the encoder's
    own ``EmbeddingBag``) and gathered by index. Everything else uses the encoder's tables and
    stored feature rows.
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.n_ids, self.learned_unknown_id = encoder.n_ids, encoder.learned_unknown_id
        self.id = encoder.id
        self.categorical = encoder.categorical
        self.use_num = bool(encoder.use_features and encoder.num.shape[1])
        self.use_dense = bool(encoder.use_features and encoder.dense.shape[1])
        self.use_multihot = encoder.multihot is not None
        if self.categorical is not None:
            self.register_buffer("cat", _copy(encoder.cat))
        if self.use_multihot:
            n = encoder.cat.shape[0]
            with torch.no_grad():
                pooled = encoder.multihot(encoder.mh_values, encoder.mh_indptr[:-1])  # [n * F, d]
            self.register_buffer("mh_pooled", _copy(pooled.reshape(n, -1)))
        if self.use_num:
            self.register_buffer("num", _copy(encoder.num))
            self.register_buffer("num_stats", _copy(encoder.num_stats))
        if self.use_dense:
            self.register_buffer("dense", _copy(encoder.dense))

    id_vectors = FeatureEncoder.id_vectors

    def forward(self, idx: Tensor) -> Tensor:
        parts = []
        if self.id is not None:
            parts.append(self.id_vectors(idx, idx.shape[0]))
        if self.categorical is not None:
            cat = self.cat[idx]
            parts += [table(cat[:, f]) for f, table in enumerate(self.categorical)]
        if self.use_multihot:
            parts.append(self.mh_pooled[idx])
        if self.use_num:
            num = self.num[idx]
            missing = torch.isnan(num)
            z = standardize(num, self.num_stats[:, 0], self.num_stats[:, 1])
            parts += [torch.where(missing, torch.zeros_like(z), z), missing.float()]
        if self.use_dense:
            parts.append(self.dense[idx])
        if not parts:
            return torch.zeros(idx.shape[0], 0, device=idx.device)
        return torch.cat([p.to(parts[0].dtype) for p in parts], dim=1)


class TwoTowerUser(nn.Module):
    """Query tower of a two-tower model: user index (+ history bag) -> ``[B, dim]``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.features = EntityFeatures(module.user_features)
        self.history_items, self.query_tower = module.history_items, module.query_tower
        self.normalize = module.normalize

    query = TwoTowerModule.query

    def forward(self, user: Tensor, history: Tensor | None = None) -> Tensor:
        return self.query(self.features(user), history).float()


class TwoTowerItem(nn.Module):
    """Item tower of a two-tower model: item index -> ``[B, dim]``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.features = EntityFeatures(module.item_features)
        self.item_tower, self.normalize = module.item_tower, module.normalize

    item = TwoTowerModule.item

    def forward(self, item: Tensor) -> Tensor:
        return self.item(self.features(item)).float()


class YouTubeUser(nn.Module):
    """YouTube-DNN user tower: history bag (+ user index for its features) -> u (+ a 1 column
    when items carry a bias), example age 0 as at serving time."""

    def __init__(self, module: nn.Module, bias: bool) -> None:
        super().__init__()
        self.watch, self.tower, self.use_example_age = module.watch, module.tower, module.use_example_age
        self.bias = bias
        self.features = EntityFeatures(module.user_features) if module.user_features.out_dim else None

    user_vector = YouTubeDNNModule.user_vector

    def forward(self, history: Tensor, user: Tensor | None = None) -> Tensor:
        if self.features is not None and user is not None:
            x = self.features(user)
        else:
            x = torch.zeros(history.shape[0], 0, device=history.device)
        u = self.user_vector(history, x, None).float()
        if self.bias:
            u = torch.cat([u, torch.ones(u.shape[0], 1, device=u.device, dtype=u.dtype)], 1)
        return u


class YouTubeItem(nn.Module):
    """YouTube-DNN item side: item index -> softmax weights (+ the bias as a last column)."""

    def __init__(self, module: nn.Module, bias: bool) -> None:
        super().__init__()
        self.item, self.item_bias, self.bias = module.item, module.item_bias, bias

    def forward(self, item: Tensor) -> Tensor:
        v = self.item(item).float()
        return torch.cat([v, self.item_bias(item).float()], 1) if self.bias else v


class TableLookup(nn.Module):
    """Rows of a fixed embedding table (MF / LightGCN towers)."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.register_buffer("table", table.detach().float().contiguous().clone())

    def forward(self, idx: Tensor) -> Tensor:
        return self.table[idx]


# ---- sequential encoders ------------------------------------------------------------------------
class SequenceEncoder(nn.Module):
    """History ``[B, L]`` (item index + 1, 0 = padding, latest last) -> hidden ``[B, d]`` of the
    next item, as the model scores it (`_inference_input`, then ``forward(last_only=True)``);
    with an output bias, a 1 is appended so ``hidden @ item_table.T`` includes it."""

    def __init__(self, model: Any, with_user: bool, bias: bool) -> None:
        super().__init__()
        self.m = model.module_
        self._inference_input = model._inference_input
        self.with_user, self.bias = with_user, bias

    def _hidden(self, seq: Tensor, user: Tensor | None) -> Tensor:
        return self.m(self._inference_input(seq), user, last_only=True)[:, -1].float()

    def forward(self, seq: Tensor, user: Tensor | None = None) -> Tensor:
        h = self._hidden(seq, None)
        if self.with_user and user is not None:  # Caser: the user's embedding; -1 = anonymous
            known = self._hidden(seq, user.clamp_min(0))
            h = torch.where((user >= 0).unsqueeze(1), known, h)
        if self.bias:
            h = torch.cat([h, torch.ones(h.shape[0], 1, device=h.device, dtype=h.dtype)], 1)
        return h


# ---- CTR rankers --------------------------------------------------------------------------------
_BASE_KEYS = {"cat": torch.long, "num": torch.float32, "emb": torch.float32, "cross": torch.long}


class Ranker(nn.Module):
    """The pipeline's tensors (positional, in `keys` order) -> (logit, probability); absent
    kinds are the zero-width tensors the pipeline would give."""

    def __init__(self, net: nn.Module, keys: list[str]) -> None:
        super().__init__()
        self.net, self.keys = net, list(keys)

    def forward(self, *tensors: Tensor) -> tuple[Tensor, Tensor]:
        batch = dict(zip(self.keys, tensors, strict=True))
        b = tensors[0].shape[0]
        for k, dtype in _BASE_KEYS.items():
            if k not in batch:
                batch[k] = torch.zeros(b, 0, dtype=dtype, device=tensors[0].device)
        logit = self.net(batch).float()
        return logit, torch.sigmoid(logit)


# ---- per family ---------------------------------------------------------------------------------
def _np(t: Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _sample_ids(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` indices of 0..n-1: the first and last ones and random others (sorted)."""
    size = max(3, size)
    fixed = np.array([0, n - 1, n // 2], np.int64)
    return np.concatenate([fixed, rng.integers(0, n, size - 3)]).astype(np.int64)


def _two_tower_like(model: Any, rng: np.random.Generator, size: int) -> Parts:
    name = model.name
    m = model.module_
    users = torch.as_tensor(_sample_ids(model.n_users_, size, rng))
    n_trained = model.meta_["n_items"]
    items = torch.as_tensor(_sample_ids(n_trained, size, rng))
    item_table = _np(model.item_embeddings())
    user_vectors = _np(model.user_embeddings(users))
    user_desc = {"user": "int64 [batch]: user index (raw id -> index: vocab.user.json)",
                 "vector": "float32 [batch, d]: the user's query vector"}
    item_desc = {"item": "int64 [batch]: item index (raw id -> index: vocab.item.json)",
                 "vector": "float32 [batch, d]: the item's vector"}
    if name == "two_tower":
        user_inputs: dict[str, Tensor] = {"user": users}
        user_mod: nn.Module = TwoTowerUser(m)
        if m.history is not None:
            user_inputs["history"] = m.history.bag(users)
            user_desc["history"] = (f"int64 [batch, {m.history.max_len}]: the user's latest items as "
                                    "item index + 1, right-aligned, 0 = padding")
        item_mod: nn.Module = TwoTowerItem(m)
        notes = {"features": "the training users' / items' side features are stored in the graph; "
                             "a part takes entity indices (unseen entities: recstack's "
                             "new_user_embedding / add_items)"}
    elif name == "youtube_dnn":
        bias = model.use_bias
        user_mod = YouTubeUser(m, bias)
        user_inputs = {"history": m.history.bag(users)}
        user_desc = {"history": (f"int64 [batch, {m.history.max_len}]: the user's latest items as item "
                                 "index + 1, right-aligned, 0 = padding"),
                     "vector": "float32 [batch, d (+1)]: the user vector (a trailing 1 when items carry a bias)"}
        if user_mod.features is not None:
            user_inputs["user"] = users
            user_desc["user"] = "int64 [batch]: user index, for the stored user features"
        item_mod = YouTubeItem(m, bias)
        item_desc["vector"] = "float32 [batch, d (+1)]: softmax weights (the item bias as a last column)"
        notes = {"example_age": "0, as at serving time"}
    else:  # embedding tables (mf, lightgcn)
        all_users = torch.cat([model.user_embeddings(torch.arange(s, min(s + 8192, model.n_users_)))
                               for s in range(0, model.n_users_, 8192)])
        user_mod = TableLookup(all_users)
        user_inputs = {"user": users}
        item_mod = TableLookup(torch.as_tensor(item_table[:n_trained]))
        notes = {"tables": "the towers are lookups of the learned (propagated) embedding tables"}
    user_mod.eval()
    item_mod.eval()

    def user_scores(out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return out["vector"] @ item_table.T, _np(model.score_all(users))

    parts = {
        "user_tower": Part("user_tower", user_mod, user_inputs, ["vector"], user_desc,
                           {"vector": user_vectors}, user_scores, notes),
        "item_tower": Part("item_tower", item_mod, {"item": items}, ["vector"], item_desc,
                           {"vector": item_table[items.numpy()]}, None, notes),
    }
    tables = {"item_table": (item_table, "float32 [n_items, d]: every item's vector (item_tower of "
                                         "every item, plus items added after training)")}
    return Parts(parts, tables, "scores = user_tower(...) @ item_table.T")


def _sequential(model: Any, rng: np.random.Generator, size: int) -> Parts:
    weights, bias = model.module_.output_items()
    table = weights.detach().float()
    if bias is not None:
        table = torch.cat([table, bias.detach().float().unsqueeze(1)], 1)
    item_table = _np(table)
    with_user = model.name == "caser"
    n, width = model.n_items_, model.max_len
    users = torch.as_tensor(_sample_ids(model.n_users_, size, rng))
    seq = model.history_[users].cpu().clone()
    # a few anonymous sessions of every length, and an empty one
    extra = min(len(seq) - 1, width + 1)
    for r in range(extra):
        k = r % (width + 1)
        seq[r + 1] = 0
        if k:
            seq[r + 1, width - k:] = torch.as_tensor(rng.integers(1, n + 1, k))
    inputs: dict[str, Tensor] = {"seq": seq}
    desc = {"seq": (f"int64 [batch, {width}]: the latest items as item index + 1 (raw id -> index: "
                    "vocab.item.json), left-padded with 0, the latest item last"),
            "hidden": ("float32 [batch, d]: the next-item representation"
                       + (" (a trailing 1: the output bias is the item table's last column)" if bias is not None else ""))}
    u = None
    if with_user:
        u = users.clone()
        u[1 : extra + 1] = -1  # the anonymous sessions
        inputs["user"] = u
        desc["user"] = "int64 [batch]: user index for the user embedding, -1 = anonymous (mean user)"
    module = SequenceEncoder(model, with_user, bias is not None).eval()
    with torch.no_grad():
        hidden = module(*inputs.values())

    def scores(out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        dev = model.device_
        rows = seq.to(dev)
        if u is None:
            ref = model._score_sequences(rows, None)
        else:  # the user's scores (score_all) where known, the anonymous session's otherwise
            known = model._score_sequences(rows, u.clamp_min(0).to(dev))
            ref = torch.where((u >= 0).to(dev).unsqueeze(1), known, model._score_sequences(rows, None))
        return out["hidden"] @ item_table.T, _np(ref)

    part = Part("encoder", module, inputs, ["hidden"], desc, {"hidden": _np(hidden)}, scores,
                {"max_len": width, "padding": 0, "table_index": "item index + 1"})
    return Parts({"encoder": part},
                 {"item_table": (item_table, "float32 [n_items, d]: output item vectors"
                                 + (" with the output bias as the last column" if bias is not None else ""))},
                 "scores = encoder(seq) @ item_table.T")


def _ctr_sample(model: Any, rng: np.random.Generator, size: int) -> dict[str, Tensor]:
    """Synthetic pipeline tensors covering the layout's code ranges (padding included)."""
    lay = model.layout_
    b = max(3, size)
    out: dict[str, Tensor] = {}
    if lay.cat_sizes:
        out["cat"] = torch.as_tensor(np.stack([rng.integers(0, max(s, 1), b) for s in lay.cat_sizes], 1))
    if lay.num_names:
        out["num"] = torch.as_tensor(rng.standard_normal((b, len(lay.num_names)), dtype=np.float32))
    if lay.emb_dim:
        out["emb"] = torch.as_tensor(rng.standard_normal((b, lay.emb_dim), dtype=np.float32))
    if lay.cross_sizes:
        out["cross"] = torch.as_tensor(np.stack([rng.integers(0, max(s, 1), b) for s in lay.cross_sizes], 1))
    for bag in lay.bags:
        size_ = lay.cat_sizes[lay.cat_names.index(bag.shared_with)] if bag.shared_with else bag.size
        codes = rng.integers(1, max(size_, 2), (b, bag.max_len))
        lens = rng.integers(0, bag.max_len + 1, b)
        pos = np.arange(bag.max_len)[None, :]
        keep = pos >= bag.max_len - lens[:, None] if bag.sequence else pos < lens[:, None]
        out[f"bag.{bag.name}"] = torch.as_tensor(np.where(keep, codes, 0))
    if not out:
        raise ExportError(f"{model.name}: the feature layout has no input to export")
    return out


def _ctr(model: Any, rng: np.random.Generator, size: int, sample: dict[str, Tensor] | None) -> Parts:
    inputs = dict(sample) if sample is not None else _ctr_sample(model, rng, size)
    lay = model.layout_
    wanted = [k for k in ("cat", "num", "emb", "cross") if k in inputs and inputs[k].shape[1]]
    wanted += [f"bag.{b.name}" for b in lay.bags]
    inputs = {k: inputs[k].cpu() for k in wanted}
    module = Ranker(model.module_, wanted).eval()
    ex = {**{k: torch.zeros(len(next(iter(inputs.values()))), 0, dtype=d) for k, d in _BASE_KEYS.items()},
          **inputs}
    logit = _np(model.logits({k: v.to(model.device_) for k, v in ex.items()}))
    multi = logit.ndim == 2
    shape = "[batch, tasks]" if multi else "[batch]"
    desc = {"cat": "int64 [batch, C]: categorical / bucketized codes (FeaturePipeline.transform)",
            "num": "float32 [batch, N]: numeric features after their transforms",
            "emb": "float32 [batch, E]: precomputed vectors",
            "cross": "int64 [batch, X]: cross-feature codes",
            "logit": f"float32 {shape}: the logit" + (" of each task" if multi else ""),
            "probability": f"float32 {shape}: sigmoid(logit), P(label = 1)"}
    for b in lay.bags:
        desc[f"bag.{b.name}"] = (f"int64 [batch, {b.max_len}]: codes of '{b.name}', 0 = padding "
                                 + ("(right-aligned)" if b.sequence else "(left-aligned)"))
    desc = {k: v for k, v in desc.items() if k in inputs or k in ("logit", "probability")}
    notes = {"pipeline": "inputs are FeaturePipeline.transform(frame) tensors; the fitted pipeline "
                         "is saved beside the ranker (pipeline/, JSON + safetensors)"}
    if multi:
        notes["tasks"] = list(model.label_columns())
    part = Part("ranker", module, inputs, ["logit", "probability"], desc,
                {"logit": logit, "probability": 1.0 / (1.0 + np.exp(-logit.astype(np.float64)))}, None, notes)
    return Parts({"ranker": part}, {}, "P(label = 1) = ranker(...).probability")


def model_parts(model: Any, size: int = 64, seed: int = 0, ctr_sample: dict[str, Tensor] | None = None
                ) -> Parts:
    """The exportable parts of fitted `model`, each with a sample batch of `size` rows.

    Raises:
        ExportError: the model is not supported (one line naming it and the reason).
    """
    name = getattr(model, "name", type(model).__name__)
    if name in UNSUPPORTED:
        raise ExportError(f"{name}: export is not supported ({UNSUPPORTED[name]})")
    if not hasattr(model, "module_"):
        raise ExportError(f"{name}: call fit() (or load()) before exporting")
    task = getattr(model, "task", "")
    rng = np.random.default_rng(seed)
    model.module_.eval()  # the eval() forward only (the caller restores the mode)
    with torch.no_grad():
        if task == "ctr":
            return _ctr(model, rng, size, ctr_sample)
        if task == "sequential":
            return _sequential(model, rng, size)
        if name in ("two_tower", "youtube_dnn", "mf", "lightgcn"):
            return _two_tower_like(model, rng, size)
    raise ExportError(f"{name}: export is not supported (no exportable part is known for this model)")


def supported_parts(name: str, format: str | None = None) -> list[str]:
    """Part names export writes for registered model `name` (in `format`, default any);
    empty when unsupported."""
    from recstack.models.registry import entry

    e = entry(name)
    if e.name in UNSUPPORTED or (e.name, format) in UNSUPPORTED_FORMAT:
        return []
    if e.task == "ctr":
        return ["ranker"]
    if e.task == "sequential":
        return ["encoder"]
    return ["user_tower", "item_tower"]
