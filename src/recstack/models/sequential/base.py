"""What every sequential recommender shares: sequences, training examples, losses, serving.

A user's history is the list of their items in time order. Models read it as a left-padded
row of table indices (item index + 1; 0 = padding; the latest item in the last column) and
return one hidden vector per position; the score of item i after position t is
``<h_t, w_i> (+ b_i)`` with the model's output item table ``w``. So each model only supplies
its module (constructor = the paper's boxes, forward = its arrows) with

    forward(seq [B, L], user [B] | None, last_only=False) -> hidden [B, L (or 1), d]
    output_items() -> (weights [n_items, d], bias [n_items] | None)

and this base class does the rest:

* training examples: each user's TRAINING sequence cut, from its end backwards, into windows
  (one per user, or every window when `all_windows`); next-item models (GRU4Rec, Caser,
  SASRec) predict the next item at every position, BERT4Rec the masked positions;
* losses, chosen per model with `loss`: "ce" (full cross-entropy over the catalogue, computed
  only at positions that have a target), "sampled" (sampled softmax with `n_negatives`
  negatives from `sampler` = "uniform" | "popularity" | "in_batch", logQ-corrected) or "bce"
  (one uniformly drawn negative per target, not among the user's training items: the original
  SASRec objective);
* histories: `fit` uses the training sequences as inputs (validation targets never appear in
  them); `set_history(interactions)` replaces them, e.g. with train + valid before the test, so
  `score_all(users)` / `recommend(users)` always score the item after the stored history;
* anonymous sessions: `recommend_sequence(histories, k)` scores lists of raw item ids
  (`recommend_sequence_indices` the same on item indices)
  (or raw ids) without any user id;
* item attributes (`use_attributes`): the mean embedding of an item's attributes (the data's
  ``item_features.multihot["attributes"]``, e.g. from ``<stem>_item2attributes.json``) is
  added to its input embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from recstack import losses
from recstack.data.dataset import Interactions
from recstack.data.transforms import build_sequences, user_sequences
from recstack.evaluation.ranking import topk
from recstack.models.neural import NeuralRecommender
from recstack.models.sequential.layers import attribute_matrix
from recstack.training.samplers import InBatchSampler, PopularitySampler, UniformSampler
from recstack.training.trainer import TrainStep

# sequences scored per forward pass at inference (bounds activation memory)
_SCORE_CHUNK = 4096


def _time_order(data: Interactions) -> str:
    return "timestamp" if data.timestamp is not None else "order"


def _windows(items: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """Rows ``items[max(start, end - width):end] + 1``, left padded with 0 to ``[n, width]``."""
    idx = ends[:, None] - width + np.arange(width)[None, :]
    if len(items) == 0:
        return np.zeros(idx.shape, np.int64)
    valid = idx >= starts[:, None]
    return np.where(valid, items[np.clip(idx, 0, len(items) - 1)] + 1, 0).astype(np.int64)


def pad_left(flat: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """Concatenated sequences (``flat``, split by ``lengths``) -> ``[n, width]`` rows holding each
    sequence's last ``width`` items as table indices (item + 1), left padded with 0."""
    ends = np.cumsum(lengths)
    return _windows(flat, ends - lengths, ends, width)


def sequence_windows(data: Interactions, width: int, step: int, all_windows: bool = True
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Training windows of each user's time-ordered items.

    Window j of a user with c items holds items ``[max(0, e - width), e)`` with
    ``e = c - j * step``, left padded to `width` with 0 (items stored as index + 1); windows
    with fewer than two items are skipped. With ``step = width - 1`` consecutive windows
    overlap by one item, so every item but the first is a next-item target exactly once.
    `all_windows=False` keeps only the latest window of each user (the SASRec paper's setup).

    Returns:
        ``(windows int64 [n_windows, width], users int64 [n_windows])``.
    """
    indptr, items = user_sequences(data, _time_order(data))
    counts = np.diff(indptr)
    n_win = np.where(counts >= 2, (counts - 2) // step + 1, 0)
    if not all_windows:
        n_win = np.minimum(n_win, 1)
    users = np.repeat(np.arange(data.n_users, dtype=np.int64), n_win)
    j = np.arange(len(users)) - np.repeat(np.cumsum(n_win) - n_win, n_win)  # 0 = latest window
    ends = indptr[users + 1] - j * step
    return _windows(items, indptr[users], ends, width), users


class SequentialRecommender(NeuralRecommender):
    """Base class of GRU4Rec, Caser, SASRec and BERT4Rec (see the module docstring).

    Shared hyper-parameters (each model documents its own defaults, one set for every data set):

    Args:
        max_len: the most recent items a model reads.
        dim: embedding size.
        dropout: dropout rate.
        loss: "ce" | "sampled" | "bce" (see the module docstring).
        n_negatives: negatives per batch for the sampled softmax (shared by the batch's targets).
        sampler: "uniform" | "popularity" | "in_batch" (the batch's distinct target items are the
            candidates) for the sampled softmax.
        logq: subtract log Q(item) from sampled-softmax logits (Yi et al. 2019).
        use_attributes: add the mean embedding of each item's attributes to its input embedding
            (True needs ``item_features.multihot["attributes"]``; "auto" uses them when the data
            has them, e.g. an s3rec file's ``<stem>_item2attributes.json``).
        all_windows: train on every `max_len` window of long sequences, not only the latest one.
        init_std: std of the normal initialisation of embeddings.
    """

    task: ClassVar[str] = "sequential"

    name = "base"
    causal = True  # next-item targets at every position (BERT4Rec: masked positions)

    def __init__(self, max_len: int = 50, dim: int = 64, dropout: float = 0.2, loss: Literal["ce", "sampled", "bce"] = "ce",
                 n_negatives: int = 256, sampler: Literal["uniform", "popularity", "in_batch"] = "uniform", logq: bool = True,
                 use_attributes: Literal[False, True, "auto"] = False, all_windows: bool = True, init_std: float = 0.02,
                 device: str = "auto", **train: Any) -> None:
        super().__init__(device, **train)
        self.max_len, self.dim, self.dropout = max_len, dim, dropout
        self.loss, self.n_negatives, self.sampler, self.logq = loss, n_negatives, sampler, logq
        self.use_attributes, self.all_windows, self.init_std = use_attributes, all_windows, init_std

    # one set for every data set: Adam 1e-3, constant rate, early stopping on the validation
    # item's NDCG@10 (the papers' model selection), patience 10 epochs
    _defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "batch_size": 128, "epochs": 200, "patience": 10,
                                           "monitor": "ndcg@10", "plateau_factor": 1.0}

    # ---- fit -----------------------------------------------------------------------------------
    def fit(self, data: Interactions, valid: Interactions | None = None,
            valid_exclude: sp.csr_matrix | None = None) -> SequentialRecommender:
        """Train on the sequences of `data`; with `valid`, early-stop on the item after each
        user's training sequence (ranked excluding `valid_exclude`, by default the training
        items; pass an empty matrix to exclude nothing). Afterwards the stored histories are
        the training sequences: call `set_history` to continue from more."""
        super().fit(data, valid, valid_exclude)
        return self

    def _setup(self, data: Interactions) -> dict[str, Any]:
        meta: dict[str, Any] = {"n_users": data.n_users, "n_items": data.n_items,
                                "n_attributes": 0, "attr_width": 0}
        self._attr_bags = None
        ft = data.item_features
        has = ft is not None and "attributes" in ft.multihot
        self.uses_attributes_ = has if self.use_attributes == "auto" else bool(self.use_attributes)
        if self.uses_attributes_:
            if not has:
                raise ValueError(f"{self.name}: use_attributes=True needs item attributes "
                                 "(item_features.multihot['attributes'], e.g. <stem>_item2attributes.json "
                                 "beside an s3rec file); this data has none")
            offsets, values, vocab = ft.multihot["attributes"]
            bags = attribute_matrix(offsets, values)
            meta.update(n_attributes=len(vocab), attr_width=bags.shape[1])
            self._attr_bags = torch.as_tensor(bags)
        self.item_vocab_ = data.item_vocab
        self._set_history_arrays(data)
        return meta

    def _build(self, meta: dict[str, Any]) -> nn.Module:
        module = self._make_module(meta)
        bags = self.__dict__.pop("_attr_bags", None)
        if bags is not None:
            module.item_emb.set_attributes(bags)
        return module

    def _make_module(self, meta: dict[str, Any]) -> nn.Module:
        """The model's nn.Module (its `item_emb` must be an `ItemEmbedding`)."""
        raise NotImplementedError

    def _examples(self, data: Interactions) -> dict[str, Tensor]:
        width = self.max_len + 1 if self.causal else self.max_len
        step = width - 1 if self.causal else width
        windows, users = sequence_windows(data, width, step, self.all_windows)
        if not len(windows):
            raise ValueError(f"{self.name}: no user has two or more training items to learn from")
        dev = self.device_
        if self.loss == "bce":
            self.sampler_ = UniformSampler(data.n_items, exclude=self.seen_, device=dev)
        elif self.sampler == "popularity":
            self.sampler_ = PopularitySampler(data.item_counts(), device=dev)
        elif self.sampler == "in_batch":
            self.sampler_ = InBatchSampler(data.item_counts(), device=dev)
        else:
            self.sampler_ = UniformSampler(data.n_items, device=dev)
        return {"seq": torch.as_tensor(windows, device=dev), "user": torch.as_tensor(users, device=dev)}

    # ---- training objective --------------------------------------------------------------------
    def _inputs_targets(self, batch: dict[str, Tensor], generator: torch.Generator
                        ) -> tuple[Tensor, Tensor]:
        """(input [B, L], target [B, L]) table indices; target 0 = no prediction there.
        Next-item default: the window without its last item predicts the window shifted by one
        (positions whose input is padding predict nothing)."""
        seq = batch["seq"]
        inputs, targets = seq[:, :-1], seq[:, 1:]
        return inputs, targets.masked_fill(inputs == 0, 0)

    def _all_positions_loss(self, inputs: Tensor, targets: Tensor, user: Tensor,
                            cap: int | None = None) -> Tensor:
        """The full cross-entropy (``loss="ce"``) of `_loss` without its data-dependent shapes
        (no host sync), which the CUDA-graphed step needs: the scores are computed for `cap`
        positions, those with a target first (a stable sort of the target mask), the rest
        padding that the mean leaves out; ``cap=None`` scores every position. Equal to `_loss`
        whenever the batch has at most `cap` targets."""
        hidden = self.module_(inputs, user).flatten(0, 1)
        target = targets.flatten()
        if cap is not None and cap < len(target):
            order = torch.sort((target > 0).to(torch.int8), descending=True, stable=True).indices[:cap]
            hidden, target = hidden[order], target[order]
        weights, bias = self.module_.output_items()
        logits = hidden @ weights.T
        if bias is not None:
            logits = logits + bias
        return losses.full_softmax_loss(logits, target - 1, ignore_index=-1)

    def _train_step(self) -> TrainStep | None:
        from recstack.models.sequential.graph_step import GraphedSequenceStep, plan

        width = self.max_len
        self.graph_plan_ = plan(self, self.n_items_, width, self.device_)
        return GraphedSequenceStep(self, self.train_config) if self.graph_plan_.used else None

    def _loss(self, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        inputs, targets = self._inputs_targets(batch, generator)
        hidden = self.module_(inputs, batch["user"])
        at = targets > 0  # only positions with a target cost anything
        h = hidden[at]  # [M, d]
        target = targets[at] - 1  # item indices
        weights, bias = self.module_.output_items()
        if self.loss == "ce":
            logits = h @ weights.T
            if bias is not None:
                logits = logits + bias
            return losses.full_softmax_loss(logits, target)
        if self.loss == "bce":
            users = batch["user"].unsqueeze(1).expand_as(targets)[at]
            neg = self.sampler_.sample(users, 1, generator=generator)[:, 0]
            return losses.bce_loss(_dot(h, weights, bias, target), _dot(h, weights, bias, neg))
        if self.sampler == "in_batch":
            # candidates = the batch's distinct targets: duplicates of a positive are never
            # its negatives, and each logit is corrected by the item's training frequency
            cand, label = torch.unique(target, return_inverse=True)
            logits = h @ weights[cand].T
            if bias is not None:
                logits = logits + bias[cand]
            if self.logq:
                logits = logits.float() - self.sampler_.logq(cand)
            return losses.full_softmax_loss(logits, label)
        neg = self.sampler_.draw(self.n_negatives, generator)  # [N], shared by the batch
        neg_s = h @ weights[neg].T
        if bias is not None:
            neg_s = neg_s + bias[neg]
        return losses.sampled_softmax_loss(
            _dot(h, weights, bias, target), neg_s,
            pos_logq=self.sampler_.logq(target) if self.logq else None,
            neg_logq=self.sampler_.logq(neg) if self.logq else None,
            remove_accidental_hits=losses.accidental_hits(target, neg))

    # ---- histories -----------------------------------------------------------------------------
    def set_history(self, data: Interactions) -> SequentialRecommender:
        """Use the sequences of `data` (same vocabularies as the training data) as the users'
        histories from now on: `score_all` and `recommend` score the item that follows them and
        `recommend(exclude_seen=True)` excludes their items. Typically train + valid before
        the test (`Split.history("train+valid")`)."""
        self._check_fitted()
        if (data.n_users, data.n_items) != (self.n_users_, self.n_items_):
            raise ValueError(f"{self.name}: set_history got {data.n_users} users x {data.n_items} items, "
                             f"the model has {self.n_users_} x {self.n_items_}")
        self._set_history_arrays(data)
        self.seen_ = data.csr()
        return self

    def _set_history_arrays(self, data: Interactions) -> None:
        seqs, _ = build_sequences(data, self.max_len, by=_time_order(data))
        self.history_ = torch.as_tensor(seqs, device=self.device_)

    def _inference_input(self, seq: Tensor) -> Tensor:
        """Histories ``[B, max_len]`` -> the model's input for predicting the next item."""
        return seq

    # ---- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def _score_sequences(self, seq: Tensor, users: Tensor | None) -> Tensor:
        """Scores ``[B, n_items]`` of the item after each left-padded history in `seq`."""
        weights, bias = self.module_.output_items()
        out = []
        for s in range(0, len(seq), _SCORE_CHUNK):
            u = None if users is None else users[s : s + _SCORE_CHUNK]
            h = self.module_(self._inference_input(seq[s : s + _SCORE_CHUNK]), u, last_only=True)[:, -1]
            scores = h @ weights.T
            out.append((scores + bias if bias is not None else scores).float())
        return torch.cat(out) if out else torch.zeros(0, self.n_items_, device=self.device_)

    def score_all(self, users: Tensor) -> Tensor:
        """Scores of every item as the next one after each user's stored history."""
        users = users.to(self.device_)
        return self._score_sequences(self.history_[users], users)

    def encode_histories(self, histories: Sequence[Sequence[Any]] | Sequence[Any],
                         raw_ids: bool = True) -> list[np.ndarray]:
        """Histories as arrays of item indices (one history may be given as a flat list).

        With `raw_ids` (the public default) the items are raw ids as in the data, mapped through
        the training item vocabulary, unknown ones dropped; otherwise they are indices, checked."""
        if len(histories) == 0 or np.ndim(histories[0]) == 0:
            histories = [histories]
        out = []
        for h in histories:  # converting the caller's Python lists: once per session
            h = np.asarray(h)
            if raw_ids:
                idx = self.item_vocab_.encode(h, strict=False) if len(h) else np.zeros(0, np.int64)
                idx = idx[idx >= 0]
            else:
                idx = h.astype(np.int64)
                if len(idx) and (idx.min() < 0 or idx.max() >= self.n_items_):
                    raise IndexError(f"{self.name}: item index out of range [0, {self.n_items_})")
            out.append(idx)
        return out

    def recommend_sequence(self, histories: Sequence[Sequence[Any]] | Sequence[Any], k: int = 10,
                           exclude_seen: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-k next items for anonymous sessions (no user id, no retraining), in raw ids.

        Args:
            histories: one chronological list of raw item ids per session (or a single flat
                list); ids the model does not know are skipped.
            k: list length (at most the catalogue size).
            exclude_seen: never recommend an item of the session itself.

        Returns:
            ``(items [n_sessions, k] raw ids, scores float32 [n_sessions, k])``; only real items,
            never the padding or mask token. `recommend_sequence_indices` works on indices.
        """
        items, scores = self._recommend_sessions(self.encode_histories(histories, raw_ids=True), k, exclude_seen)
        return self.item_vocab_.decode(items), scores

    def recommend_sequence_indices(self, histories: Sequence[Sequence[int]] | Sequence[int], k: int = 10,
                                   exclude_seen: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """`recommend_sequence` on item indices ``0..n_items-1`` (in and out): the serving
        pipeline's variant."""
        return self._recommend_sessions(self.encode_histories(histories, raw_ids=False), k, exclude_seen)

    @torch.no_grad()
    def _recommend_sessions(self, seqs: list[np.ndarray], k: int, exclude_seen: bool
                            ) -> tuple[np.ndarray, np.ndarray]:
        self._check_fitted()
        lengths = np.array([len(s) for s in seqs], np.int64)
        flat = np.concatenate(seqs) if len(seqs) else np.zeros(0, np.int64)
        rows = torch.as_tensor(pad_left(flat, lengths, self.max_len), device=self.device_)
        scores = self._score_sequences(rows, None)
        if exclude_seen and len(flat):
            r = torch.as_tensor(np.repeat(np.arange(len(seqs)), lengths), device=scores.device)
            scores[r, torch.as_tensor(flat, device=scores.device)] = float("-inf")
        v, i = topk(scores, min(k, self.n_items_))
        return i.cpu().numpy(), v.cpu().numpy()

    # ---- persistence ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Tensor]:
        return super()._state() | {"history": self.history_}

    def _load_state(self, state: dict[str, Tensor]) -> None:
        super()._load_state(state)
        self.history_ = state["history"].to(self.device_)



def _dot(h: Tensor, weights: Tensor, bias: Tensor | None, items: Tensor) -> Tensor:
    """Row-wise score of each hidden vector ``h[m]`` with item ``items[m]``."""
    s = (h * weights[items]).sum(-1)
    return s + bias[items] if bias is not None else s
