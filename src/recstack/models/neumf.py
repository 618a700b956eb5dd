"""Neural Collaborative Filtering (He et al., "Neural Collaborative Filtering", WWW 2017).

Three models of the paper share one module:

    GMF:   y = h^T (p_u * q_i)                                   element-wise product
    MLP:   y = h^T a_L(... a_1(W_1 [p'_u; q'_i] + b_1) ...)      tower on the concatenation
    NeuMF: y = h^T [p_u * q_i ; a_L(... [p'_u; q'_i] ...)]       both, fused by one output layer

GMF and MLP have their own embeddings (p, q and p', q'). Training is pointwise: log loss on each
observed (u, i) and on `n_negatives` uniform unobserved items per positive. With `pretrain`,
GMF and MLP are trained alone first (Adam), NeuMF is initialised from both with the output
weights h = [alpha h_GMF ; (1 - alpha) h_MLP] and then fine-tuned (the paper uses plain SGD).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Literal

import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recstack import losses
from recstack.data.dataset import Interactions
from recstack.models.neural import NeuralRecommender
from recstack.training.samplers import UniformSampler
from recstack.training.trainer import TrainConfig, build_optimizer

MODES = ("gmf", "mlp", "neumf")

# score_all keeps every [users, items, width] activation block under this many float32 values
# (32M x 4 bytes = 128 MB; with the next layer's output alive too, about 256 MB).
_SCORE_BLOCK = 32 * 2**20


class NeuMFModule(nn.Module):
    """The boxes of Figure 3: GMF embeddings, MLP embeddings + tower, one output layer.

    `mode` keeps only the GMF path ("gmf"), only the MLP path ("mlp") or both ("neumf").
    `mlp_layers[0]` is the size of the concatenated MLP embedding (so p'_u and q'_i have
    `mlp_layers[0] // 2` each), the rest are the tower's ReLU layers; the last one is the MLP's
    predictive factors. `dim` is the GMF embedding size (its predictive factors).
    """

    def __init__(self, n_users: int, n_items: int, mode: str = "neumf", dim: int = 8,
                 mlp_layers: tuple[int, ...] = (64, 32, 16, 8), init_std: float = 0.01) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"neumf: unknown mode '{mode}': use {', '.join(MODES)}")
        self.mode = mode
        self.use_gmf, self.use_mlp = mode in ("gmf", "neumf"), mode in ("mlp", "neumf")
        width = 0
        if self.use_gmf:
            self.gmf_user = nn.Embedding(n_users, dim)
            self.gmf_item = nn.Embedding(n_items, dim)
            width += dim
        if self.use_mlp:
            if len(mlp_layers) < 2 or mlp_layers[0] % 2:
                raise ValueError(f"neumf: mlp_layers needs an even input size and at least one "
                                 f"layer, e.g. (64, 32, 16, 8); got {tuple(mlp_layers)}")
            self.mlp_user = nn.Embedding(n_users, mlp_layers[0] // 2)
            self.mlp_item = nn.Embedding(n_items, mlp_layers[0] // 2)
            self.tower = nn.ModuleList(
                nn.Linear(a, b) for a, b in zip(mlp_layers[:-1], mlp_layers[1:], strict=True))
            width += mlp_layers[-1]
        self.out = nn.Linear(width, 1)  # h (plus a bias)
        # the widest activation of one (user, item) pair, for score_all's memory budget
        self.max_width = max([width, *(mlp_layers[1:] if self.use_mlp else ())])
        # paper: N(0, 0.01) initialisation; linear layers keep PyTorch's fan-in init, which
        # keeps the ReLU tower's activations from vanishing at the start
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, std=init_std)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits for every (user, item) pair of two broadcastable index tensors.

        Training passes users [B, 1] and items [B, C] -> [B, C]; scoring passes users [b, 1]
        and items [1, c] -> [b, c], without materialising b x c embedding pairs.
        """
        parts = []
        if self.use_gmf:
            parts.append(self.gmf_user(users) * self.gmf_item(items))  # phi_GMF
        if self.use_mlp:
            first, *rest = self.tower
            k = self.mlp_user.embedding_dim
            # W [p'; q'] + b == W_u p' + W_i q' + b: the split broadcasts users against items
            h = F.linear(self.mlp_user(users), first.weight[:, :k]) + F.linear(
                self.mlp_item(items), first.weight[:, k:], first.bias)
            h = F.relu(h)
            for layer in rest:
                h = F.relu(layer(h))
            parts.append(h)  # phi_MLP
        return self.out(torch.cat(parts, -1)).squeeze(-1)  # NeuMF layer: h^T [phi_GMF; phi_MLP]

    @classmethod
    def from_pretrained(cls, gmf: NeuMFModule, mlp: NeuMFModule, alpha: float = 0.5) -> NeuMFModule:
        """NeuMF initialised from a trained GMF and a trained MLP (Section 3.4.1).

        Embeddings and tower are copied; the output layer is h = [alpha h_GMF; (1-alpha) h_MLP]
        and its bias alpha b_GMF + (1-alpha) b_MLP, so the initial NeuMF logit is exactly
        alpha * GMF logit + (1 - alpha) * MLP logit.
        """
        if gmf.mode != "gmf" or mlp.mode != "mlp":
            raise ValueError("from_pretrained needs a 'gmf' module and an 'mlp' module")
        n_users, dim = gmf.gmf_user.weight.shape
        layers = (2 * mlp.mlp_user.embedding_dim, *(layer.out_features for layer in mlp.tower))
        model = cls(n_users, gmf.gmf_item.num_embeddings, "neumf", dim, layers).to(gmf.out.weight.device)
        with torch.no_grad():
            for name in ("gmf_user", "gmf_item"):
                getattr(model, name).load_state_dict(getattr(gmf, name).state_dict())
            for name in ("mlp_user", "mlp_item", "tower"):
                getattr(model, name).load_state_dict(getattr(mlp, name).state_dict())
            model.out.weight.copy_(torch.cat([alpha * gmf.out.weight, (1 - alpha) * mlp.out.weight], 1))
            model.out.bias.copy_(alpha * gmf.out.bias + (1 - alpha) * mlp.out.bias)
        return model


class NeuMF(NeuralRecommender):
    """GMF, MLP or NeuMF trained with the log loss and uniform negatives.

    Args:
        mode: "neumf" (both paths), "gmf" or "mlp" (one path alone).
        dim: GMF embedding size = GMF predictive factors.
        mlp_layers: concatenated MLP embedding size, then the tower's layer sizes (halving in
            the paper); the last is the MLP predictive factors.
        n_negatives: uniform negatives per positive, never the user's training items (paper: 4).
        pretrain: ("neumf" only) train GMF then MLP alone first, each with the TrainConfig as
            given, and start NeuMF from them.
        alpha: weight of GMF against MLP in the pre-trained output layer.
        finetune_optimizer: optimiser of the NeuMF stage after pre-training. The paper uses
            "sgd" (Adam's moments are not carried over from pre-training); the default "adam"
            starts with fresh moments, so it uses a smaller step (see `finetune_lr`).
        finetune_lr: learning rate of that stage; None = the TrainConfig lr with "sgd", a tenth
            of it with any adaptive optimiser.
        init_std: std of the N(0, std) embedding initialisation (paper: 0.01).
    """

    name = "neumf"

    def __init__(self, mode: Literal["gmf", "mlp", "neumf"] = "neumf", dim: int = 8, mlp_layers: tuple[int, ...] = (64, 32, 16, 8),
                 n_negatives: int = 4, pretrain: bool = False, alpha: float = 0.5,
                 finetune_optimizer: Literal["adam", "adamw", "sgd", "adagrad"] = "adam", finetune_lr: float | None = None,
                 init_std: float = 0.01, device: str = "auto", **train: Any) -> None:
        super().__init__(device, **train)
        self.mode, self.dim, self.mlp_layers, self.n_negatives = mode, dim, tuple(mlp_layers), n_negatives
        self.pretrain, self.alpha = pretrain, alpha
        self.finetune_optimizer, self.finetune_lr = finetune_optimizer, finetune_lr
        self.init_std = init_std
        self._stage: str | None = None  # the mode being trained while pre-training
        self._pretrained: tuple[NeuMFModule, NeuMFModule] | None = None

    # paper: Adam, lr 0.001, batch 256, HR/NDCG@10, no learning-rate schedule
    _defaults: ClassVar[dict[str, Any]] = {"lr": 1e-3, "batch_size": 256, "epochs": 20, "monitor": "ndcg@10",
                                           "plateau_factor": 1.0}

    # ---- training ------------------------------------------------------------------------------
    def fit(self, data: Interactions, valid: Interactions | None = None,
            valid_exclude: sp.csr_matrix | None = None) -> NeuMF:
        """Train; with `pretrain` (mode "neumf"): GMF, then MLP, then NeuMF from both."""
        if not (self.pretrain and self.mode == "neumf"):
            return super().fit(data, valid, valid_exclude)
        base = self.train_config
        finetune = self._stage_config("neumf")
        build_optimizer(nn.Linear(1, 1), finetune)  # fail now, not after pre-training
        try:
            trained, self.pretrain_results_ = {}, {}
            for stage in ("gmf", "mlp"):
                self._stage, self.train_config = stage, self._stage_config(stage)
                super().fit(data, valid, valid_exclude)
                trained[stage], self.pretrain_results_[stage] = self.module_, self.train_result_
            self._stage, self._pretrained = "neumf", (trained["gmf"], trained["mlp"])
            self.train_config = finetune
            super().fit(data, valid, valid_exclude)
        finally:
            self.train_config, self._stage, self._pretrained = base, None, None
        return self

    def _stage_config(self, stage: str) -> TrainConfig:
        """The TrainConfig of one pre-training stage: own checkpoint folder; for the NeuMF stage
        the fine-tuning optimiser and learning rate."""
        cfg = self.train_config
        ckpt = f"{cfg.checkpoint_dir}/{stage}" if cfg.checkpoint_dir else None
        if stage != "neumf":
            return dataclasses.replace(cfg, checkpoint_dir=ckpt)
        lr = self.finetune_lr
        if lr is None:
            lr = cfg.lr if self.finetune_optimizer.lower() == "sgd" else cfg.lr / 10
        return dataclasses.replace(cfg, checkpoint_dir=ckpt, optimizer=self.finetune_optimizer, lr=lr)

    def _build(self, meta: dict[str, Any]) -> nn.Module:
        if self._pretrained is not None:
            return NeuMFModule.from_pretrained(*self._pretrained, alpha=self.alpha)
        return NeuMFModule(meta["n_users"], meta["n_items"], self._stage or self.mode, self.dim,
                           tuple(self.mlp_layers), self.init_std)

    def _examples(self, data: Interactions) -> dict[str, torch.Tensor]:
        self.sampler_ = UniformSampler(data.n_items, exclude=self.seen_, device=self.device_)
        return super()._examples(data)

    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        u, i = batch["user"], batch["item"]
        neg = self.sampler_.sample(u, self.n_negatives, generator=generator)
        logits = self.module_(u.unsqueeze(1), torch.cat([i.unsqueeze(1), neg], 1))
        # -log sigmoid(y_ui) - sum_j log(1 - sigmoid(y_uj)): the paper's log loss per positive
        return losses.bce_loss(logits[:, 0], logits[:, 1:])

    # ---- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Logits [len(users), n_items], computed in user x item blocks of bounded memory."""
        m = self.module_
        users = users.to(self.device_).long()
        items = torch.arange(self.n_items_, device=self.device_)
        out = torch.empty((len(users), self.n_items_), device=self.device_)
        rows = max(1, min(len(users), _SCORE_BLOCK // m.max_width))
        cols = max(1, min(self.n_items_, _SCORE_BLOCK // (rows * m.max_width)))
        for r in range(0, len(users), rows):
            for c in range(0, self.n_items_, cols):
                out[r : r + rows, c : c + cols] = m(users[r : r + rows, None], items[None, c : c + cols])
        return out
