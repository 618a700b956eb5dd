"""The estimator API every recstack model follows.

    model = EASE(l2=500.0).fit(train)          # hyper-parameters in the constructor, work in fit
    items, scores = model.recommend(users, k=10)
    model.save("out/ease"); EASE.load("out/ease")  # JSON config + safetensors, never pickle

Models work on encoded indices (0..n_users-1, 0..n_items-1); the dataset's vocabularies map raw
ids to indices and back.
"""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from recstack import __version__
from recstack.data.dataset import Interactions
from recstack.evaluation.ranking import resolve_device, topk

_REGISTRY: dict[str, type[Recommender]] = {}


class Recommender:
    """Base class: subclasses set `name`, implement `_fit`, `score_all` and the state hooks."""

    name: ClassVar[str] = "base"

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.name != "base":
            _REGISTRY[cls.name] = cls

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    # ---- hyper-parameters (scikit-learn style: constructor arguments) ---------------------------
    def get_params(self) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def set_params(self, **params: Any) -> Recommender:
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"{self.name}: unknown hyper-parameter '{k}'; valid: {sorted(valid)}")
            setattr(self, k, v)
        return self

    # ---- training ------------------------------------------------------------------------------
    def fit(self, data: Interactions) -> Recommender:
        """Learn from `data`; its interactions become the 'seen' items excluded by `recommend`."""
        self.device_ = resolve_device(self.device)
        self.n_users_, self.n_items_ = data.n_users, data.n_items
        self.seen_ = data.csr()
        self._fit(data)
        return self

    def _fit(self, data: Interactions) -> None:
        raise NotImplementedError

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_items_"):
            raise RuntimeError(f"{self.name}: call fit() (or load()) before using the model")

    # ---- scoring -------------------------------------------------------------------------------
    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """Scores of every item for each user in `users` -> float tensor [len(users), n_items]."""
        raise NotImplementedError

    @torch.no_grad()
    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Scores of aligned (user, item) pairs."""
        self._check_fitted()
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        out = np.empty(len(users), np.float32)
        uniq, inv = np.unique(users, return_inverse=True)
        for s in range(0, len(uniq), self._batch_rows()):
            chunk = uniq[s : s + self._batch_rows()]
            sel = (inv >= s) & (inv < s + len(chunk))
            full = self.score_all(torch.as_tensor(chunk, device=self.device_))
            rows = torch.as_tensor(inv[sel] - s, device=self.device_)
            cols = torch.as_tensor(items[sel], device=self.device_)
            out[sel] = full[rows, cols].float().cpu().numpy()
        return out

    @torch.no_grad()
    def recommend(
        self, users: np.ndarray | int, k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for each user -> (items int64 [n, k], scores float32 [n, k]).

        Ties are broken towards the lower item index. With `exclude_seen`, items the user
        interacted with in the training data are never returned.
        """
        self._check_fitted()
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        if users.size and (users.min() < 0 or users.max() >= self.n_users_):
            raise IndexError(f"{self.name}: user index out of range [0, {self.n_users_})")
        k = min(k, self.n_items_)
        items_out = np.empty((len(users), k), np.int64)
        scores_out = np.empty((len(users), k), np.float32)
        for s in range(0, len(users), self._batch_rows()):
            batch = users[s : s + self._batch_rows()]
            scores = self.score_all(torch.as_tensor(batch, device=self.device_)).float()
            if exclude_seen:
                scores = mask_rows(scores, self.seen_, batch)
            v, i = topk(scores, k)
            items_out[s : s + len(batch)] = i.cpu().numpy()
            scores_out[s : s + len(batch)] = v.cpu().numpy()
        return items_out, scores_out

    def _batch_rows(self) -> int:
        # keep a users x items score block near 256 MB
        return max(1, (64 * 1024 * 1024) // max(1, self.n_items_))

    # ---- persistence (JSON + safetensors; never pickle) ------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        """Learned tensors to save (subclasses extend)."""
        return {}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `_state`."""

    def _meta(self) -> dict[str, Any]:
        """JSON-able facts learned in fit that loading needs besides the tensors (e.g. shapes)."""
        return {}

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        """Inverse of `_meta`, called before `_load_state`."""

    def save(self, path: str | Path) -> Path:
        """Write `config.json` and `weights.safetensors` into directory `path`."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        params = {k: v for k, v in self.get_params().items() if k != "device"}
        config = {
            "model": self.name,
            "params": params,
            "n_users": self.n_users_,
            "n_items": self.n_items_,
            "meta": self._meta(),
            "recstack_version": __version__,
        }
        state = {k: v.detach().contiguous().cpu() for k, v in self._state().items()}
        seen = self.seen_.tocsr()
        state["seen.indptr"] = torch.from_numpy(seen.indptr.astype(np.int64))
        state["seen.indices"] = torch.from_numpy(seen.indices.astype(np.int64))
        save_file(state, str(path / "weights.safetensors"))
        (path / "config.json").write_text(json.dumps(config, indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> Recommender:
        """Load a model saved by `save`; the class is taken from config.json."""
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        model_cls = get_model_class(config["model"])
        if cls is not Recommender and not issubclass(model_cls, cls):
            raise TypeError(f"{path} holds a '{config['model']}' model, not {cls.name}")
        model = model_cls(**config["params"], device=device)
        model.device_ = resolve_device(device)
        model.n_users_, model.n_items_ = config["n_users"], config["n_items"]
        state = load_file(str(path / "weights.safetensors"))
        indptr = state.pop("seen.indptr").numpy()
        indices = state.pop("seen.indices").numpy()
        model.seen_ = sp.csr_matrix(
            (np.ones(len(indices), np.float32), indices, indptr), shape=(model.n_users_, model.n_items_)
        )
        model._restore_meta(config.get("meta", {}))
        model._load_state({k: v.to(model.device_) for k, v in state.items()})
        return model


def mask_rows(scores: torch.Tensor, matrix: sp.csr_matrix, rows: np.ndarray) -> torch.Tensor:
    """Set scores[r, j] = -inf wherever matrix[rows[r], j] is nonzero (vectorised, in place)."""
    indptr = matrix.indptr
    starts, ends = indptr[rows], indptr[rows + 1]
    lens = ends - starts
    if lens.sum() == 0:
        return scores
    r = np.repeat(np.arange(len(rows)), lens)
    offs = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    c = matrix.indices[np.repeat(starts, lens) + offs]
    scores[torch.as_tensor(r, device=scores.device), torch.as_tensor(c, device=scores.device)] = float("-inf")
    return scores


def csr_rows_torch(matrix: sp.csr_matrix, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """The selected CSR rows as a torch sparse CSR tensor on `device` (for sparse @ dense)."""
    sub = matrix[rows]
    with warnings.catch_warnings():  # torch flags sparse CSR as beta; the indices come from a valid scipy CSR
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.as_tensor(sub.indptr, dtype=torch.int64), torch.as_tensor(sub.indices, dtype=torch.int64),
            torch.as_tensor(sub.data, dtype=torch.float32), size=sub.shape,
        ).to(device)


def get_model_class(name: str) -> type[Recommender]:
    import recstack.models  # noqa: F401  (registers every model)

    key = name.lower()
    if key not in _REGISTRY:
        raise ValueError(f"unknown model '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def available_models() -> list[str]:
    import recstack.models  # noqa: F401

    return sorted(_REGISTRY)
