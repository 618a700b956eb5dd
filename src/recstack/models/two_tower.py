"""Two-tower retrieval model (Yi et al., RecSys 2019, "Sampling-bias-corrected neural modeling
for large corpus item recommendations"; Covington et al. 2016 for the history bag).

    query tower:  [user id emb | user features | mean(history item embs)] -> MLP -> u
    item tower:   [item id emb | item features]                            -> MLP -> v
    score(u, i) = <u, v_i>  (u, v L2-normalised when `normalize`; logits divided by temperature)

Trained by default with the in-batch softmax, each batch item's logit corrected by its log
training frequency (logQ) and duplicates of the positive masked; alternatives: mixed negatives
(in-batch + uniform, Yang et al. 2020), sampled softmax with logQ, BPR. Both towers export
embeddings for an ANN index (`user_embeddings`, `item_embeddings`), and unseen users or items are
embedded from features / a short history without retraining (`recommend_new_user`, `add_items`).
With every feature flag off it is the ID-only two-tower (an MF with MLP towers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recstack import losses
from recstack.data.dataset import FeatureTable, Interactions
from recstack.data.interop import as_interactions
from recstack.features.entity import FeatureEncoder, build_features
from recstack.features.history import History, MeanBag
from recstack.models.layers import MLP
from recstack.models.neural import NeuralRecommender
from recstack.training.samplers import InBatchSampler, PopularitySampler, UniformSampler


class TwoTowerModule(nn.Module):
    """The boxes: one feature encoder + MLP per side, and the history-item table."""

    def __init__(self, meta: dict[str, Any], m: TwoTower,
                 tensors: Mapping[str, Mapping[str, Tensor]] | None = None) -> None:
        super().__init__()
        t = tensors or {}
        learned_unknown = m.id_dropout > 0  # the unknown-id rows are trained only with id dropout
        self.user_features = FeatureEncoder(
            meta["user_schema"], meta["n_users"] if m.use_user_id else 0, m.id_dim,
            m.use_user_features, learned_unknown, m.init_std, t.get("user"))
        self.item_features = FeatureEncoder(
            meta["item_schema"], meta["n_items"] if m.use_item_id else 0, m.id_dim,
            m.use_item_features, learned_unknown, m.init_std, t.get("item"))
        q_in, i_in = self.user_features.out_dim, self.item_features.out_dim
        self.history = self.history_items = None
        if m.use_history:
            self.history = History(meta["n_users"], meta["history_nnz"], m.max_history)
            if "history" in t:
                self.history.load_state_dict(t["history"])
            # row 0 = padding, item i at row i + 1
            self.history_items = MeanBag(meta["n_items"] + 1, m.history_dim, m.init_std)
            q_in += m.history_dim
        if q_in == 0 or i_in == 0:
            raise ValueError("two_tower: a tower has no input; enable an id, features or use_history")
        self.query_tower = MLP(q_in, m.tower, m.dim)
        self.item_tower = MLP(i_in, m.tower, m.dim)
        self.normalize = m.normalize

    # ---- the arrows -------------------------------------------------------------------------------
    def query(self, user_x: Tensor, history: Tensor | None) -> Tensor:
        """Query tower: encoded user features (+ history bag ``[B, L]``) -> ``[B, dim]``."""
        if self.history_items is not None:
            user_x = torch.cat([user_x, self.history_items(history).to(user_x.dtype)], dim=1)
        u = self.query_tower(user_x)
        return F.normalize(u, dim=-1) if self.normalize else u

    def item(self, item_x: Tensor) -> Tensor:
        """Item tower: encoded item features -> ``[B, dim]``."""
        v = self.item_tower(item_x)
        return F.normalize(v, dim=-1) if self.normalize else v


class TwoTower(NeuralRecommender):
    """Two-tower retrieval with optional user/item features and a user-history bag.

    Args:
        dim: output embedding size of both towers.
        tower: hidden layer sizes of each tower's ReLU MLP (a final linear layer maps to `dim`).
        id_dim: id embedding size.
        feature_dim: largest embedding size of a categorical / multi-hot feature field.
        history_dim: embedding size of the history items (query tower input).
        max_history: number of most recent items in the history bag.
        use_user_id: embed the user ids.
        use_item_id: embed the item ids.
        use_user_features: embed the data's user side features (if it has them).
        use_item_features: embed the data's item side features (if it has them).
        use_history: add the mean embedding of the user's earlier items to the query tower
            (training examples see only items strictly earlier than their target).
        normalize: L2-normalise both towers' outputs (cosine scores).
        temperature: softmax logits are scores / temperature.
        loss: "in_batch" | "mixed" (in-batch + `n_negatives` uniform) | "sampled" (`n_negatives`
            shared negatives from `sampler`) | "bpr" (`n_negatives` per example, positives
            excluded; costs B * n_negatives item-tower passes).
        n_negatives: extra negatives for mixed / sampled / bpr.
        sampler: "uniform" | "popularity" (count ** 0.75) for sampled / bpr (mixed is
            always uniform).
        logq: subtract the log sampling probability from the logits (softmax losses).
        id_dropout: probability of replacing an id by the "unknown" id during training, which
            teaches the towers to work from features alone (cold start); with 0, unseen
            entities get the mean id embedding instead.
        init_std: std of the embedding initialisation.
        item_text: feed the item tower sentence embeddings of each item's text (title, genres,
            tags; `recstack.content`: needs ``pip install "recstack[content]"``), so items are
            placed by what they are, and new items by their text alone.
    """

    name = "two_tower"

    def __init__(self, dim: int = 64, tower: Sequence[int] = (128,), id_dim: int = 64,
                 feature_dim: int = 16, history_dim: int = 64, max_history: int = 50,
                 use_user_id: bool = True, use_item_id: bool = True, use_user_features: bool = True,
                 use_item_features: bool = True, use_history: bool = False, normalize: bool = True,
                 temperature: float = 0.1, loss: Literal["in_batch", "mixed", "sampled", "bpr"] = "in_batch", n_negatives: int = 256,
                 sampler: Literal["uniform", "popularity"] = "uniform", logq: bool = True, id_dropout: float = 0.0,
                 init_std: float = 0.05, item_text: bool = False, device: str = "auto", **train: Any) -> None:
        super().__init__(device, **train)
        self.dim, self.tower, self.id_dim, self.feature_dim = dim, tuple(tower), id_dim, feature_dim
        self.item_text = item_text
        self.history_dim, self.max_history = history_dim, max_history
        self.use_user_id, self.use_item_id = use_user_id, use_item_id
        self.use_user_features, self.use_item_features = use_user_features, use_item_features
        self.use_history, self.normalize, self.temperature = use_history, normalize, temperature
        self.loss, self.n_negatives, self.sampler, self.logq = loss, n_negatives, sampler, logq
        self.id_dropout, self.init_std = id_dropout, init_std

    _defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "batch_size": 2048, "epochs": 50, "monitor": "recall@20"}

    # ---- fit -----------------------------------------------------------------------------------
    def fit(self, data: Interactions, valid: Interactions | None = None,
            valid_exclude: sp.csr_matrix | None = None,
            user_vectors: Mapping[str, np.ndarray] | None = None,
            item_vectors: Mapping[str, np.ndarray] | None = None) -> TwoTower:
        """Train on `data` (see `NeuralRecommender.fit`). `user_vectors` / `item_vectors`:
        precomputed dense features ``name -> [n_users or n_items, d]`` (e.g. text embeddings)."""
        data = as_interactions(data)  # the item texts are read before NeuralRecommender.fit's own
        if self.item_text and not (item_vectors and "text" in item_vectors):
            from recstack.content import item_content_vectors

            item_vectors = {**(item_vectors or {}), "text": item_content_vectors(data)}
        self._vectors = {"user": user_vectors, "item": item_vectors}
        self.added_items_: Tensor | None = None
        super().fit(data, valid, valid_exclude)
        self._item_cache = None  # the trainer restored the best weights after the last validation
        return self

    def _setup(self, data: Interactions) -> dict[str, Any]:
        user_schema, user_t = build_features(data.user_features, data.n_users,
                                             self._vectors["user"], self.feature_dim)
        item_schema, item_t = build_features(data.item_features, data.n_items,
                                             self._vectors["item"], self.feature_dim)
        self._tensors = {"user": user_t, "item": item_t}  # consumed by _build
        meta = {"n_users": data.n_users, "n_items": data.n_items, "user_schema": user_schema,
                "item_schema": item_schema, "history_nnz": len(data), "n_added_items": 0}
        if self.use_history:
            history, self._hist_ends = History.build(data, self.max_history)
            self._tensors["history"] = history.state_dict()
        return meta

    def _build(self, meta: dict[str, Any]) -> nn.Module:
        self._item_cache: Tensor | None = None
        return TwoTowerModule(meta, self, self.__dict__.pop("_tensors", None))

    def _examples(self, data: Interactions) -> dict[str, Tensor]:
        dev = self.device_
        self.in_batch_ = InBatchSampler(data.item_counts(), device=dev)
        exclude = self.seen_ if self.loss == "bpr" else None  # shared negatives: hits are masked
        # mixed negatives are uniform by definition (mixed_logq assumes it)
        popularity = self.sampler == "popularity" and self.loss != "mixed"
        self.sampler_ = (PopularitySampler(data.item_counts(), exclude=exclude, device=dev) if popularity
                         else UniformSampler(data.n_items, exclude=exclude, device=dev))
        ex = super()._examples(data)
        if self.use_history:
            ex["hist_end"] = torch.as_tensor(self.__dict__.pop("_hist_ends"), device=dev)
        return ex

    # ---- training objective --------------------------------------------------------------------
    def _drop_ids(self, ids: Tensor, generator: torch.Generator) -> Tensor:
        """Id dropout: replace ids by -1 (the unknown id) with probability `id_dropout`."""
        if self.id_dropout <= 0:
            return ids
        drop = torch.rand(ids.shape, device=ids.device, generator=generator) < self.id_dropout
        return torch.where(drop, torch.full_like(ids, -1), ids)

    def _loss(self, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        self._item_cache = None  # weights are about to change
        m = self.module_
        u, i = batch["user"], batch["item"]
        hist = m.history.bag(u, batch["hist_end"]) if m.history is not None else None
        q = m.query(m.user_features(u, self._drop_ids(u, generator)), hist)
        v = m.item(m.item_features(i, self._drop_ids(i, generator)))
        tau = self.temperature
        if self.loss == "in_batch":
            logq = self.in_batch_.logq(i) if self.logq else None
            return losses.in_batch_softmax_loss(q, v, item_ids=i, logq=logq, temperature=tau)
        if self.loss == "bpr":
            neg = self.sampler_.sample(u, self.n_negatives, generator=generator)  # [B, N]
            vn = m.item(m.item_features(neg.reshape(-1))).view(*neg.shape, -1)
            pos_s = (q * v).sum(-1) / tau
            return losses.bpr_loss(pos_s, torch.einsum("bd,bnd->bn", q, vn.to(q.dtype)) / tau)
        # one set of negatives shared by the whole batch
        neg = self.sampler_.sample(u[:1], self.n_negatives, generator=generator)[0]  # [N]
        vn = m.item(m.item_features(neg))
        if self.loss == "mixed":
            lq_b = lq_n = None
            if self.logq:  # both parts on the scale of the mixed candidate distribution
                n_b, n_n = len(i), len(neg)
                lq_b = losses.mixed_logq(self.in_batch_.logq(i), self.n_items_, n_b, n_n)
                lq_n = losses.mixed_logq(self.in_batch_.logq(neg), self.n_items_, n_b, n_n)
            return losses.mixed_negative_loss(q, v, vn, i, neg, lq_b, lq_n, temperature=tau)
        return losses.sampled_softmax_loss(
            (q * v).sum(-1), q @ vn.to(q.dtype).T,
            pos_logq=self.sampler_.logq(i) if self.logq else None,
            neg_logq=self.sampler_.logq(neg) if self.logq else None,
            temperature=tau, remove_accidental_hits=losses.accidental_hits(i, neg))

    # ---- embeddings and scores -----------------------------------------------------------------
    @torch.no_grad()
    def user_embeddings(self, users: Tensor | np.ndarray) -> Tensor:
        """Query-tower outputs of training users (full training history) -> ``[B, dim]``."""
        self._check_fitted()
        m = self.module_
        users = torch.as_tensor(users, device=self.device_).long()
        hist = m.history.bag(users) if m.history is not None else None
        return m.query(m.user_features(users), hist).float()

    @torch.no_grad()
    def item_embeddings(self) -> Tensor:
        """Item-tower outputs of the whole catalogue (trained + added items) -> ``[n_items, dim]``.

        Computed in chunks and cached until the weights change (next training step or load).
        """
        self._check_fitted()
        if self._item_cache is None:
            m = self.module_
            n = self.meta_["n_items"]
            chunks = [m.item(m.item_features(torch.arange(s, min(s + 16384, n), device=self.device_)))
                      .float() for s in range(0, n, 16384)]
            if self.added_items_ is not None:
                chunks.append(self.added_items_)
            self._item_cache = torch.cat(chunks)
        return self._item_cache

    @torch.no_grad()
    def score_all(self, users: Tensor) -> Tensor:
        return self.user_embeddings(users) @ self.item_embeddings().T

    # ---- cold start: users ---------------------------------------------------------------------
    @torch.no_grad()
    def new_user_embedding(self, features: Mapping[str, Any] | None = None,
                           history_items: Sequence[int] | None = None) -> Tensor:
        """Query embedding ``[dim]`` of a user unseen in training, from raw feature values
        ``{field: value}`` and/or a chronological list of item indices; the id embedding is the
        unknown-id vector (learned with id dropout, else the mean id embedding)."""
        self._check_fitted()
        m = self.module_
        if features and not self.use_user_features:
            raise ValueError("two_tower: this model was trained without user features (use_user_features=False)")
        if history_items and m.history is None:
            raise ValueError("two_tower: this model was trained without histories (use_history=False)")
        rows = m.user_features.rows_from_values({k: [v] for k, v in (features or {}).items()}, 1)
        hist = m.history.bag_from_items(history_items, self.device_) if m.history is not None else None
        return m.query(m.user_features.encode(rows, None), hist).float()[0]

    def recommend_new_user(self, features: Mapping[str, Any] | None = None,
                           history_items: Sequence[int] | None = None, k: int = 10,
                           exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items ``(items [k], scores [k])`` for an unseen user (see `new_user_embedding`);
        with `exclude_seen` the history items are not recommended."""
        scores = (self.item_embeddings() @ self.new_user_embedding(features, history_items)).clone()
        if exclude_seen and history_items:
            scores[torch.as_tensor(list(history_items), device=scores.device)] = float("-inf")
        return _top(scores, k)

    # ---- cold start: items ---------------------------------------------------------------------
    @torch.no_grad()
    def new_item_embeddings(self, item_features: FeatureTable | Mapping[str, Sequence[Any]],
                            by_category: str | None = None,
                            item_vectors: Mapping[str, np.ndarray] | None = None) -> Tensor:
        """Embeddings ``[n_new, dim]`` of items unseen in training.

        Args:
            item_features: their features, a FeatureTable (raw vocabularies) or ``{field: [value
                per item]}`` (see `FeatureEncoder.rows_from_values`).
            by_category: a categorical or multi-hot item field: embed each new item as the mean
                embedding of the trained items sharing its value(s) (the only way when the
                model has no item features); None = through the item tower with the unknown id.
            item_vectors: precomputed dense features of the new items.
        """
        self._check_fitted()
        enc = self.module_.item_features
        if isinstance(item_features, FeatureTable):
            rows = enc.rows_from_table(item_features, item_vectors)
        else:
            n = len(next(iter(item_features.values()))) if item_features else 0
            rows = enc.rows_from_values({**item_features, **(item_vectors or {})}, n)
        if by_category is not None:
            return self._category_means(rows, by_category)
        if not self.use_item_features:
            raise ValueError("two_tower: no item features in this model; pass by_category=<field>")
        return self.module_.item(enc.encode(rows, None)).float()

    def _category_means(self, rows: Any, field: str) -> Tensor:
        """Mean trained-item embedding per value of `field`, averaged over each new item's values."""
        enc = self.module_.item_features
        s = enc.schema
        trained = self.item_embeddings()[: self.meta_["n_items"]]
        cats = [c["name"] for c in s["categorical"]]
        mhs = [c["name"] for c in s["multihot"]]
        if field in cats:
            f = cats.index(field)
            n_values = enc.vocabularies[f].size
            owner, value = torch.arange(len(trained), device=trained.device), enc.cat[:, f]
            new_owner = torch.arange(rows.cat.shape[0], device=trained.device)
            new_value = rows.cat[:, f]
        elif field in mhs:
            f = mhs.index(field)
            n_values = sum(len(c["vocab"]) for c in s["multihot"])
            owner, value = _bag_members(enc.mh_indptr, enc.mh_values, enc.n_fields, f)
            new_owner, new_value = _bag_members(_offsets_to_indptr(rows.mh_offsets, len(rows.mh_values)),
                                                rows.mh_values, enc.n_fields, f)
        else:
            raise ValueError(f"two_tower: '{field}' is not a categorical or multi-hot item field; "
                             f"fields: {cats + mhs}")
        d = trained.shape[1]
        sums = torch.zeros(n_values, d, device=trained.device).index_add_(0, value, trained[owner])
        counts = torch.zeros(n_values, device=trained.device).index_add_(
            0, value, torch.ones_like(value, dtype=torch.float32))
        per_value = sums / counts.clamp_min(1).unsqueeze(1)
        has = counts[new_value] > 0
        n_new = rows.cat.shape[0]
        agg = torch.zeros(n_new, d, device=trained.device).index_add_(
            0, new_owner[has], per_value[new_value[has]])
        k = torch.zeros(n_new, device=trained.device).index_add_(0, new_owner[has], has[has].float())
        out = torch.where(k.unsqueeze(1) > 0, agg / k.clamp_min(1).unsqueeze(1), trained.mean(0))
        return F.normalize(out, dim=-1) if self.normalize else out

    def add_items(self, item_features: FeatureTable | Mapping[str, Sequence[Any]],
                  by_category: str | None = None,
                  item_vectors: Mapping[str, np.ndarray] | None = None,
                  ids: Sequence[Any] | None = None) -> np.ndarray:
        """Append unseen items to the catalogue (see `new_item_embeddings`); `recommend` and
        `score_all` rank them from now on, and `save` keeps them. `ids`: their raw ids (default:
        fresh ones, `Vocab.next_ids`). Returns their item indices."""
        emb = self.new_item_embeddings(item_features, by_category, item_vectors)
        new_ids = self.item_vocab_.next_ids(len(emb)) if ids is None else np.asarray(ids)
        if len(new_ids) != len(emb):
            raise ValueError(f"two_tower: {len(emb)} new items but {len(new_ids)} ids")
        self.item_vocab_ = self.item_vocab_.extend(new_ids)
        start = self.n_items_
        self.added_items_ = emb if self.added_items_ is None else torch.cat([self.added_items_, emb])
        self.n_items_ += len(emb)
        self.meta_["n_added_items"] = len(self.added_items_)
        self.seen_ = sp.csr_matrix((self.seen_.data, self.seen_.indices, self.seen_.indptr),
                                   shape=(self.n_users_, self.n_items_))
        self._item_cache = None
        return np.arange(start, self.n_items_)

    # ---- persistence ---------------------------------------------------------------------------
    def _state(self) -> dict[str, Tensor]:
        state = super()._state()
        if self.added_items_ is not None:
            state["added_items"] = self.added_items_
        return state

    def _load_state(self, state: dict[str, Tensor]) -> None:
        super()._load_state(state)
        self.added_items_ = state.get("added_items")
        self._item_cache = None


def _top(scores: Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic top-k of one score vector -> (items, scores) as numpy."""
    from recstack.evaluation.ranking import topk  # evaluation imports models

    v, i = topk(scores.unsqueeze(0).float(), min(k, scores.numel()))
    return i[0].cpu().numpy(), v[0].cpu().numpy()


def _offsets_to_indptr(offsets: Tensor, nnz: int) -> Tensor:
    return torch.cat([offsets, torch.tensor([nnz], device=offsets.device)])


def _bag_members(indptr: Tensor, values: Tensor, n_fields: int, field: int) -> tuple[Tensor, Tensor]:
    """(entity, value) pairs of multi-hot field `field` from (entity, field)-bag CSR arrays."""
    bag = torch.repeat_interleave(torch.arange(len(indptr) - 1, device=indptr.device), indptr.diff())
    keep = bag % n_fields == field
    return bag[keep] // n_fields, values[keep]
