"""A weighted blend of recommenders fitted on the same data.

Each member's scores for a user are standardised over the catalogue (zero mean, unit variance
per row: members score on different scales) and summed with the member's weight:
    score(u, .) = sum_k w_k * (s_k(u, .) - mean) / std
Members are any registered models, declared as data:
    Blend(members=[{"model": "bspm"}, {"model": "ease", "params": {"l2": 100}}], weights=[1, 0.5])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from recstack.data.dataset import Interactions
from recstack.models.base import Recommender, get_model_class


def _standardise(s: torch.Tensor) -> torch.Tensor:
    s = s.float()
    finite = torch.isfinite(s)
    s = torch.where(finite, s, torch.zeros_like(s))
    n = finite.sum(1, keepdim=True).clamp_min(1)
    mean = s.sum(1, keepdim=True) / n
    var = (torch.where(finite, s - mean, torch.zeros_like(s)) ** 2).sum(1, keepdim=True) / n
    return torch.where(finite, (s - mean) / var.sqrt().clamp_min(1e-12), torch.full_like(s, float("-inf")))


class Blend(Recommender):
    """Weighted sum of standardised member scores.

    Args:
        members: list of {"model": registered name, "params": {constructor arguments}}.
        weights: one weight per member (None: equal weights).
    """

    name = "blend"

    def __init__(self, members: Sequence[dict[str, Any]] = ({"model": "bspm"}, {"model": "ease"}),
                 weights: Sequence[float] | None = None, device: str = "auto") -> None:
        super().__init__(device)
        self.members = members
        self.weights = weights

    def _weights(self) -> list[float]:
        weights = [1.0] * len(self.members) if self.weights is None else list(self.weights)
        if len(weights) != len(self.members) or not self.members:
            raise ValueError(f"blend: {len(self.members)} members but {len(weights)} weights")
        return weights

    def _make(self) -> list[Recommender]:
        self._weights()
        out = []
        for i, spec in enumerate(self.members):
            if not isinstance(spec, dict) or "model" not in spec:
                raise ValueError(f"blend: member {i} must be a dict with a 'model' key, got {spec!r}")
            cls = get_model_class(spec["model"])
            out.append(cls(**spec.get("params", {}), device=self.device))
        return out

    def _fit(self, data: Interactions) -> None:
        self.models_ = [m.fit(data) for m in self._make()]

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        self._check_fitted()
        total = None
        for w, m in zip(self._weights(), self.models_, strict=True):
            if w == 0:
                continue
            s = float(w) * _standardise(m.score_all(users.to(m.device_)).to(self.device_))
            total = s if total is None else total + s
        if total is None:
            raise ValueError("blend: every weight is zero")
        return total

    # ---- persistence: each member's tensors under a "k." prefix, its meta in a list -------------
    def _state(self) -> dict[str, torch.Tensor]:
        return {f"{i}.{k}": v for i, m in enumerate(self.models_) for k, v in m._state().items()}

    def _meta(self) -> dict[str, Any]:
        return {"members": [m._meta() for m in self.models_]}

    def _restore_meta(self, meta: dict[str, Any]) -> None:
        self.models_ = self._make()
        for m, sub in zip(self.models_, meta["members"], strict=True):
            m.device_, m.n_users_, m.n_items_, m.seen_ = self.device_, self.n_users_, self.n_items_, self.seen_
            m._restore_meta(sub)

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        for i, m in enumerate(self.models_):
            m._load_state({k[len(f"{i}."):]: v for k, v in state.items() if k.startswith(f"{i}.")})
