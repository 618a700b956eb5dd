"""YouTube DNN candidate generation (Covington, Adams & Sargin, RecSys 2016, Figure 3).

    [mean(watch vectors of the user's earlier items) | user features | example age]
        -> ReLU -> ReLU -> ReLU -> user vector u
    P(next item = i | user) = softmax_i(<u, v_i> + b_i)     (v, b: the softmax weights)

Every training interaction is an example whose input history is the user's items strictly
before it in time (the paper's "predicting the next watch", which avoids leaking the future),
capped at the `max_history` most recent. Trained with sampled softmax, negatives drawn from a
sampler and logits corrected by log Q (importance correction). Served with the user's full
training history and example age 0; `user_embeddings` / `item_embeddings` fold the bias into
one extra dimension, so dot products of the exports are exactly the scores (ANN-ready).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor, nn

from recstack import losses
from recstack.data.dataset import Interactions
from recstack.features.entity import FeatureEncoder, build_features
from recstack.features.history import History, MeanBag
from recstack.models.layers import MLP
from recstack.models.neural import NeuralRecommender
from recstack.models.two_tower import _top
from recstack.training.samplers import PopularitySampler, UniformSampler


class YouTubeDNNModule(nn.Module):
    """The boxes: watch-vector bag, user-feature encoder, ReLU tower, softmax weights."""

    def __init__(self, meta: dict[str, Any], m: YouTubeDNN,
                 tensors: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        t = tensors or {}
        self.history = History(meta["n_users"], meta["history_nnz"], m.max_history)
        if "history" in t:
            self.history.load_state_dict(t["history"])
        self.watch = MeanBag(meta["n_items"] + 1, m.history_dim, m.init_std)  # row 0 = padding
        self.user_features = FeatureEncoder(meta["user_schema"], 0, 0, m.use_user_features,
                                            init_std=m.init_std, tensors=t.get("user"))
        self.use_example_age = m.use_example_age
        in_dim = m.history_dim + self.user_features.out_dim + 3 * m.use_example_age
        # every layer is a ReLU, the top one's output is the user vector (as in the figure)
        self.tower = MLP(in_dim, m.tower, m.dim, final_activation=True)
        self.item = nn.Embedding(meta["n_items"], m.dim)
        self.item_bias = nn.Embedding(meta["n_items"], 1)
        nn.init.normal_(self.item.weight, std=m.init_std)
        nn.init.zeros_(self.item_bias.weight)

    def user_vector(self, history: Tensor, user_x: Tensor, age: Tensor | None) -> Tensor:
        """``[B, L]`` history bags, ``[B, f]`` encoded user features, ``[B]`` example age -> u."""
        parts = [self.watch(history), user_x]
        if self.use_example_age:
            a = torch.zeros(len(history), device=history.device) if age is None else age.float()
            parts.append(torch.stack([a, a * a, a.clamp_min(0).sqrt()], 1))  # x, x^2, sqrt(x)
        return self.tower(torch.cat(parts, 1))


class YouTubeDNN(NeuralRecommender):
    """YouTube DNN candidate generation.

    Args:
        dim: user / item vector size (the last tower layer).
        tower: hidden ReLU layer sizes below it (the paper's tower is e.g. 1024-512-256).
        history_dim: watch-vector size.
        max_history: number of most recent earlier items averaged into the input.
        use_user_features: feed the data's user features (demographics) to the tower.
        use_example_age: feed the example's age (time before the end of training, scaled to
            [0, 1], with its square and square root); 0 at serving time.
        examples_per_user: keep at most this many training examples per user (a random subset,
            drawn once), so very active users do not dominate the loss (paper, section 3.4);
            None = every interaction is an example.
        feature_dim: largest embedding size of a categorical / multi-hot user feature.
        n_negatives: sampled negatives per batch (shared by its examples).
        sampler: "popularity" (count ** 0.75) or "uniform"; logits are corrected by log Q.
        use_bias: learn a softmax bias per item.
        init_std: std of the embedding initialisation.
    """

    name = "youtube_dnn"

    def __init__(self, dim: int = 64, tower: Sequence[int] = (256, 128), history_dim: int = 64,
                 max_history: int = 50, use_user_features: bool = True, use_example_age: bool = False,
                 examples_per_user: int | None = None, feature_dim: int = 16, n_negatives: int = 1000, sampler: Literal["uniform", "popularity"] = "popularity",
                 use_bias: bool = True, init_std: float = 0.05, device: str = "auto",
                 **train: Any) -> None:
        super().__init__(device, **train)
        self.dim, self.tower, self.history_dim, self.max_history = dim, tuple(tower), history_dim, max_history
        self.use_user_features, self.use_example_age = use_user_features, use_example_age
        self.examples_per_user = examples_per_user
        self.feature_dim, self.n_negatives, self.sampler = feature_dim, n_negatives, sampler
        self.use_bias, self.init_std = use_bias, init_std

    _defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "batch_size": 1024, "epochs": 50, "monitor": "recall@20"}

    # ---- fit -----------------------------------------------------------------------------------
    def _setup(self, data: Interactions) -> dict[str, Any]:
        if self.use_example_age and data.timestamp is None:
            raise ValueError("youtube_dnn: use_example_age needs timestamps")
        schema, user_t = build_features(data.user_features, data.n_users, None, self.feature_dim)
        history, self._hist_ends = History.build(data, self.max_history)
        self._tensors = {"user": user_t, "history": history.state_dict()}
        return {"n_users": data.n_users, "n_items": data.n_items, "user_schema": schema,
                "history_nnz": len(data)}

    def _build(self, meta: dict[str, Any]) -> nn.Module:
        return YouTubeDNNModule(meta, self, self.__dict__.pop("_tensors", None))

    def _examples(self, data: Interactions) -> dict[str, Tensor]:
        dev = self.device_
        counts = data.item_counts()
        self.sampler_ = (PopularitySampler(counts, device=dev) if self.sampler == "popularity"
                         else UniformSampler(data.n_items, device=dev))
        ex = super()._examples(data)
        ex["hist_end"] = torch.as_tensor(self.__dict__.pop("_hist_ends"), device=dev)
        if self.use_example_age:
            t = data.timestamp.astype(np.float64)
            age = (t.max() - t) / max(t.max() - t.min(), 1e-12)
            ex["age"] = torch.as_tensor(age, dtype=torch.float32, device=dev)
        if self.examples_per_user:
            keep = torch.as_tensor(self._per_user_subset(data.user, self.examples_per_user), device=dev)
            ex = {k: v[keep] for k, v in ex.items()}
        return ex

    def _per_user_subset(self, users: np.ndarray, k: int) -> np.ndarray:
        """Indices of a random subset of at most `k` rows per user (vectorised)."""
        key = np.random.default_rng(self.train_config.seed).random(len(users))
        order = np.lexsort((key, users))  # each user's rows in random order
        first = np.searchsorted(users[order], users[order])  # start of the user's block
        rank = np.arange(len(users)) - first
        return np.sort(order[rank < k])

    def _loss(self, batch: dict[str, Tensor], generator: torch.Generator) -> Tensor:
        m = self.module_
        u, i = batch["user"], batch["item"]
        user_vec = m.user_vector(m.history.bag(u, batch["hist_end"]), m.user_features(u), batch.get("age"))
        neg = self.sampler_.sample(u[:1], self.n_negatives, generator=generator)[0]  # [N], shared
        pos = (user_vec * m.item(i).to(user_vec.dtype)).sum(-1)
        negs = user_vec @ m.item(neg).to(user_vec.dtype).T
        if self.use_bias:
            pos, negs = pos + m.item_bias(i).squeeze(-1), negs + m.item_bias(neg).squeeze(-1)
        return losses.sampled_softmax_loss(
            pos, negs, pos_logq=self.sampler_.logq(i), neg_logq=self.sampler_.logq(neg),
            remove_accidental_hits=losses.accidental_hits(i, neg))

    # ---- embeddings and scores -----------------------------------------------------------------
    def _with_bias_dim(self, u: Tensor) -> Tensor:
        return torch.cat([u, torch.ones(len(u), 1, device=u.device)], 1) if self.use_bias else u

    @torch.no_grad()
    def user_embeddings(self, users: Tensor | np.ndarray) -> Tensor:
        """User vectors from the full training history, age 0 -> ``[B, dim (+1 with bias)]``."""
        self._check_fitted()
        m = self.module_
        users = torch.as_tensor(users, device=self.device_).long()
        return self._with_bias_dim(m.user_vector(m.history.bag(users), m.user_features(users), None).float())

    @torch.no_grad()
    def item_embeddings(self) -> Tensor:
        """Softmax weights ``[n_items, dim]``, with the bias as a last column when `use_bias`."""
        self._check_fitted()
        m = self.module_
        w = m.item.weight.float()
        return torch.cat([w, m.item_bias.weight.float()], 1) if self.use_bias else w

    @torch.no_grad()
    def score_all(self, users: Tensor) -> Tensor:
        return self.user_embeddings(users) @ self.item_embeddings().T

    @torch.no_grad()
    def recommend_new_user(self, features: Mapping[str, Any] | None = None,
                           history_items: Sequence[int] | None = None, k: int = 10,
                           exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k ``(items, scores)`` for a user unseen in training, from raw feature values
        ``{field: value}`` and/or a chronological list of item indices (no retraining)."""
        self._check_fitted()
        m = self.module_
        if features and not self.use_user_features:
            raise ValueError("youtube_dnn: this model was trained without user features")
        rows = m.user_features.rows_from_values({k_: [v] for k_, v in (features or {}).items()}, 1)
        hist = m.history.bag_from_items(history_items, self.device_)
        u = self._with_bias_dim(m.user_vector(hist, m.user_features.encode(rows, None), None).float())
        scores = (self.item_embeddings() @ u[0]).clone()
        if exclude_seen and history_items:
            scores[torch.as_tensor(list(history_items), device=scores.device)] = float("-inf")
        return _top(scores, k)
