"""Base class for models trained by the shared `Trainer`.

A subclass supplies four pieces and inherits fit/recommend/save/load:

    _setup(data)  -> meta (JSON-able: sizes, feature cardinalities) learned from the data
    _build(meta)  -> the nn.Module (the paper's boxes)
    _examples(data) -> training examples as aligned tensors on the device
    _loss(batch, generator) -> scalar loss for one batch (the paper's objective)
    score_all(users) -> [len(users), n_items] scores

Optimisation settings (epochs, lr, batch_size, ...) are `TrainConfig` fields and can be passed
to any neural model's constructor as keyword arguments.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recstack.configs.params import ParamSpec, specs_from_dataclass
from recstack.data.dataset import Interactions
from recstack.data.interop import InteractionsLike, as_interactions
from recstack.distributed.metrics import evaluate_ranking_sharded
from recstack.models.base import Recommender, model_hparams
from recstack.training.trainer import EpochStep, TrainConfig, Trainer, TrainResult, TrainStep

_TRAIN_FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


class NeuralRecommender(Recommender):
    """A Recommender whose parameters live in `self.module_` and are learned by `Trainer`.

    The training settings (`TrainConfig` fields: epochs, lr, batch_size, ...) are
    hyper-parameters too, passed as keyword arguments; a model's own values for them are its
    ``_defaults``.
    """

    def __init__(self, device: str = "auto", **train: Any) -> None:
        super().__init__(device)
        unknown = set(train) - _TRAIN_FIELDS
        if unknown:
            raise ValueError(f"{self.name}: unknown hyper-parameter(s) {sorted(unknown)}; "
                             f"valid: {', '.join(sorted(self.param_specs()))}")
        defaults = {k: v for k, v in self._merged_defaults().items() if k in _TRAIN_FIELDS}
        self.train_config = TrainConfig(**{**defaults, **train})

    # ---- hyper-parameters: the subclass's own arguments plus the TrainConfig fields -------------
    @classmethod
    def _extra_specs(cls) -> dict[str, ParamSpec]:
        return specs_from_dataclass(TrainConfig)

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        train = dataclasses.asdict(self.train_config)
        return {k: (train[k] if k in _TRAIN_FIELDS else getattr(self, k)) for k in self.param_specs()} \
            | {"device": self.device}

    def set_params(self, **params: Any) -> NeuralRecommender:
        device = params.pop("device", None)
        for k, v in self.check_params(params).items():
            if k in _TRAIN_FIELDS:
                setattr(self.train_config, k, v)
            else:
                setattr(self, k, v)
        if device is not None:
            self.device = device
        return self

    # ---- training ------------------------------------------------------------------------------
    def fit(self, data: InteractionsLike, valid: InteractionsLike | None = None,
            valid_exclude: sp.csr_matrix | None = None) -> NeuralRecommender:
        """Train on `data`; with `valid`, early-stop on `train_config.monitor` (full ranking,
        excluding `valid_exclude`, by default the training items).

        `data` and `valid` may be anything :func:`recstack.data.as_interactions` takes (scipy
        sparse matrix, pandas / polars DataFrame, Arrow table); `valid` is encoded with the
        vocabularies of `data` (a matrix of the same shape; a frame with known ids)."""
        data = as_interactions(data)
        valid = None if valid is None else as_interactions(valid, like=data)
        self._validate_params()
        self._start_fit(data)
        torch.manual_seed(self.train_config.seed)
        np.random.seed(self.train_config.seed)
        self.meta_ = self._setup(data)
        self.module_ = self._build(self.meta_).to(self.device_)
        examples = self._examples(data)
        validate = None
        if valid is not None and len(valid):
            k = int(self.train_config.monitor.split("@")[1])
            test = valid.csr()
            exclude = self.seen_ if valid_exclude is None else valid_exclude

            def validate() -> dict[str, float]:
                # under torchrun each rank ranks its block of users; per-user values are gathered
                res = evaluate_ranking_sharded(self.score_all, test, exclude, ks=(k,), device=str(self.device_))
                return res.summary()

        self.train_result_: TrainResult = Trainer(self.train_config, hparams=model_hparams(self)).fit(
            self.module_, self._loss, examples, validate, self.device_, train_step=self._train_step()
        )
        return self

    def _train_step(self) -> TrainStep | EpochStep | None:
        """The model's own training step (or epoch) for the trainer (e.g. a CUDA-graphed one), or
        None for the trainer's plain step. Called after `_examples`."""
        return None

    # ---- subclass hooks ------------------------------------------------------------------------
    def _setup(self, data: Interactions) -> dict[str, Any]:
        return {"n_users": data.n_users, "n_items": data.n_items}

    def _build(self, meta: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def _examples(self, data: Interactions) -> dict[str, torch.Tensor]:
        """Default: one example per interaction (user, item) on the device."""
        return {
            "user": torch.as_tensor(data.user, device=self.device_),
            "item": torch.as_tensor(data.item, device=self.device_),
        }

    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    # ---- persistence ---------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return self.meta_

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        self.meta_ = meta
        self.module_ = self._build(meta).to(self.device_)

    def _state(self) -> dict[str, torch.Tensor]:
        return {f"module.{k}": v for k, v in self.module_.state_dict().items()}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.module_.load_state_dict({k[len("module."):]: v for k, v in state.items() if k.startswith("module.")})
        self.module_.eval()
