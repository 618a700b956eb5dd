"""MostPopular: every user gets the items with the most training interactions."""

from __future__ import annotations

import torch

from recstack.data.dataset import Interactions
from recstack.models.base import Recommender


class MostPopular(Recommender):
    """Scores each item by its number of training interactions (ties -> lower index)."""

    name = "pop"

    def __init__(self, device: str = "auto") -> None:
        super().__init__(device)

    def _fit(self, data: Interactions) -> None:
        counts = torch.as_tensor(data.csr().getnnz(axis=0), dtype=torch.float32)
        self.counts_ = counts.to(self.device_)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return self.counts_.unsqueeze(0).expand(len(users), -1).clone()

    def _state(self) -> dict[str, torch.Tensor]:
        return {"counts": self.counts_}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.counts_ = state["counts"]
