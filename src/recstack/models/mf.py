"""Matrix factorisation: score(u, i) = <p_u, q_i> (+ item bias). With BCE this is GMF (He et al.
2017); with BPR it is BPR-MF (Rendle et al. 2009); with the cosine contrastive loss and many
negatives it is MF-CCL (Mao et al., SimpleX, 2021); with sampled softmax it is the softmax MF of
the YouTube / sampling-bias papers.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from recstack import losses
from recstack.data.dataset import Interactions
from recstack.models.neural import NeuralRecommender
from recstack.training.samplers import PopularitySampler, UniformSampler
from recstack.training.trainer import EpochStep


class MFModule(nn.Module):
    """The boxes: a user table, an item table and an item bias."""

    def __init__(self, n_users: int, n_items: int, dim: int, init_std: float) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.user.weight, std=init_std)
        nn.init.normal_(self.item.weight, std=init_std)
        nn.init.zeros_(self.item_bias.weight)


class MF(NeuralRecommender):
    """Matrix factorisation trained with a choice of loss and negatives.

    Args:
        dim: embedding size.
        loss: "bpr" | "bce" | "softmax" (sampled softmax with logQ) | "ccl" (cosine contrastive).
        n_negatives: negatives per positive.
        sampler: "uniform" | "popularity" (popularity^0.75, corrected by logQ under softmax).
        temperature: softmax / cosine temperature (scores divided by it).
        margin: CCL margin (SimpleX).
        neg_weight: CCL negative weight (SimpleX).
        use_bias: add a learned item bias (not used with cosine scores).
        normalize: score by cosine similarity (L2-normalised embeddings) instead of dot product.
        shared_negatives: draw one set of `n_negatives` items per batch, shared by all its
            examples (a [B, d] x [d, N] product instead of [B, N, d] gathers: ~10x cheaper on
            CPU); a user's own positives among them are masked out of the loss.
        init_std: std of the normal initialisation.
        reg: L2 penalty on the batch's ego embeddings (the rows of the tables the batch reads:
            its users, positives and negatives), ``reg / 2 * (|p_u|^2 + |q_i|^2 + mean_j |q_j|^2)``
            averaged over the batch: BPR-MF's regularisation and LightGCN's lambda. Unlike
            ``weight_decay`` it touches only the rows a batch uses.
    """

    name = "mf"

    def __init__(self, dim: int = 64, loss: Literal["bpr", "bce", "softmax", "ccl"] = "softmax", n_negatives: int = 256,
                 sampler: Literal["uniform", "popularity"] = "uniform",
                 temperature: float = 0.1, margin: float = 0.9, neg_weight: float | None = None,
                 use_bias: bool = False, normalize: bool = True, init_std: float = 0.1,
                 shared_negatives: bool = False, reg: float = 0.0, device: str = "auto", **train: Any) -> None:
        super().__init__(device, **train)
        self.reg = reg
        self.dim, self.loss, self.n_negatives, self.sampler = dim, loss, n_negatives, sampler
        self.temperature, self.margin, self.neg_weight = temperature, margin, neg_weight
        self.use_bias, self.normalize, self.init_std = use_bias, normalize, init_std
        self.shared_negatives = shared_negatives

    @property
    def _cosine(self) -> bool:
        # CCL is defined on cosine similarities; other losses use them when asked to
        return self.loss == "ccl" or self.normalize

    # lr chosen on validation only (issue 17: `recstack tune --grid-file benchmarks/grids/mf.yaml`
    # on a 20% holdout of Gowalla's training data; docs/benchmarks.md), kept for every data set
    _defaults: ClassVar[dict[str, Any]] = {"lr": 3e-3, "batch_size": 1024, "epochs": 100, "monitor": "recall@20"}

    def _build(self, meta: dict[str, Any]) -> nn.Module:
        return MFModule(meta["n_users"], meta["n_items"], self.dim, self.init_std)

    def _examples(self, data: Interactions) -> dict[str, torch.Tensor]:
        if self.sampler == "popularity":
            self.sampler_ = PopularitySampler(data.item_counts(), exclude=self.seen_, device=self.device_)
        else:  # "uniform" (the typed parameter admits no other value)
            self.sampler_ = UniformSampler(data.n_items, exclude=self.seen_, device=self.device_)
        return super()._examples(data)

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The user and item embedding tables that scores are computed from (graph models
        such as LightGCN override this with propagated tables)."""
        return self.module_.user.weight, self.module_.item.weight

    def _pair_scores(self, u: torch.Tensor, items: torch.Tensor,
                     tables: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Scores of users `u` [B] against `items` [B] or [B, N], from `embeddings()` tables."""
        p = tables[0].index_select(0, u)
        # index_select on a table normalised once is ~3x faster to back-propagate on CPU than
        # normalising the gathered [B, N, d] rows
        q = tables[1].index_select(0, items.reshape(-1)).view(*items.shape, -1)
        s = torch.einsum("bd,b...d->b...", p, q)
        if self.use_bias and not self._cosine:
            s = s + self.module_.item_bias.weight.squeeze(-1)[items]
        return s

    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        u, i = batch["user"], batch["item"]
        if self.shared_negatives:
            tables = self.embeddings()
            neg = self.sampler_.draw(self.n_negatives, generator)  # [N], one set for the batch
            neg_s = tables[0].index_select(0, u) @ tables[1].index_select(0, neg).T
            if self.use_bias and not self._cosine:
                neg_s = neg_s + self.module_.item_bias.weight.squeeze(-1)[neg]
            b, n = neg_s.shape
            hits = self.sampler_.positives.contains(u.repeat_interleave(n), neg.repeat(b)).view(b, n)
            loss = self._objective(self._pair_scores(u, i, tables), neg_s, hits, self.sampler_.logq(neg).expand(b, n))
            return loss + self._ego_penalty(u, i, neg.expand(b, n))
        neg = self.sampler_.sample(u, self.n_negatives, generator=generator)  # [B, N]
        return self._pair_loss(u, i, neg, losses.accidental_hits(i, neg))

    def _pair_loss(self, u: torch.Tensor, i: torch.Tensor, neg: torch.Tensor, hits: torch.Tensor,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of users `u` [B] with positives `i` [B] against negatives `neg` [B, N]
        (`hits` [B, N] marks negatives to leave out), rows weighted by `weight` [B] (None: all 1)."""
        tables = self.embeddings()
        loss = self._objective(self._pair_scores(u, i, tables), self._pair_scores(u, neg, tables),
                               hits, self.sampler_.logq(neg), weight)
        return loss + self._ego_penalty(u, i, neg, weight)

    def _objective(self, pos_s: torch.Tensor, neg_s: torch.Tensor, hits: torch.Tensor,
                   neg_logq: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        # a masked negative contributes exactly nothing to any of the losses below
        neg_s = neg_s.float().masked_fill(hits, -1e9)
        if self.loss == "bpr":
            return losses.bpr_loss(pos_s, neg_s, weight=weight)
        if self.loss == "bce":
            return losses.bce_loss(pos_s, neg_s, weight=weight)
        if self.loss == "ccl":
            return losses.cosine_contrastive_loss(pos_s, neg_s, margin=self.margin, neg_weight=self.neg_weight,
                                                  weight=weight)
        return losses.sampled_softmax_loss(
            pos_s, neg_s, pos_logq=None, neg_logq=neg_logq, temperature=self.temperature,
            remove_accidental_hits=hits, weight=weight,
        )

    def _ego_penalty(self, u: torch.Tensor, i: torch.Tensor, neg: torch.Tensor,
                     weight: torch.Tensor | None = None) -> torch.Tensor | float:
        """``reg / 2 * (|p_u|^2 + |q_i|^2 + mean_j |q_j|^2)`` on the layer-0 (ego) rows, the
        batch mean (weighted by `weight`); 0 when ``reg`` is 0."""
        if not self.reg:
            return 0.0
        m = self.module_
        per_row = (m.user.weight[u].float().square().sum(-1) + m.item.weight[i].float().square().sum(-1)
                   + m.item.weight[neg].float().square().sum(-1).mean(-1))
        if weight is None:
            return self.reg / 2 * per_row.mean()
        return self.reg / 2 * (per_row * weight).sum() / weight.sum().clamp_min(1.0)

    def _graph_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss of a padded batch with negatives drawn by fixed work (no host sync), for the
        CUDA-graphed epoch (`recstack.models.pair_step`): rows of weight 0 are padding."""
        u, i = batch["user"], batch["item"]
        neg, still = self.sampler_.sample_fixed(u, self.n_negatives)
        return self._pair_loss(u, i, neg, still | losses.accidental_hits(i, neg), batch["weight"])

    def _train_step(self) -> EpochStep | None:
        """The CUDA-graphed epoch where it applies (`recstack.models.pair_step.plan`), else None."""
        from recstack.models.pair_step import GraphedPairStep, plan

        self.step_plan_ = plan(self, self.device_)
        return GraphedPairStep(self, self.train_config) if self.step_plan_.used else None

    def _invalidate_tables(self) -> None:
        """Called before every graphed step: a replayed optimiser step bumps no version counter,
        so caches keyed on them (LightGCN's propagated tables) must be dropped explicitly."""

    def embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user embeddings, item embeddings) as scored; cosine models return normalised ones."""
        p, q = self._tables()
        if self._cosine:
            return F.normalize(p, dim=-1), F.normalize(q, dim=-1)
        return p, q

    # ---- ExportsEmbeddings: score = <user, item>, a learned item bias as one more column ----------
    def _bias_column(self) -> bool:
        return self.use_bias and not self._cosine

    def item_embeddings(self) -> torch.Tensor:
        """Item vectors as scored (an item bias appended as a last column when used)."""
        q = self.embeddings()[1]
        return torch.cat([q, self.module_.item_bias.weight], 1) if self._bias_column() else q

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        """User vectors of `users` as scored (a 1 appended when the items carry a bias)."""
        p = self.embeddings()[0][torch.as_tensor(users, device=self.device_)]
        return torch.cat([p, torch.ones(len(p), 1, device=p.device, dtype=p.dtype)], 1) if self._bias_column() else p

    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        p, q = self.embeddings()
        s = p[users.to(p.device)] @ q.T
        if self.use_bias and not self._cosine:
            s = s + self.module_.item_bias.weight.squeeze(-1)
        return s.float()
