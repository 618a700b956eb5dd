"""Exact search: one matrix product and a deterministic top-k (the reference for recall)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from recstack.evaluation.ranking import topk
from recstack.files import save_safetensors
from recstack.index.base import VectorIndex, as_matrix
from recstack.index.config import IndexConfig

_FILE = "vectors.safetensors"


class ExactIndex(VectorIndex):
    """Brute force with torch: ties broken towards the lower id, like every recstack ranking.

    Queries are processed in blocks so the [block, ntotal] score matrix stays near 256 MB.
    """

    def __init__(self, vectors: np.ndarray, config: IndexConfig | None = None) -> None:
        config = config or IndexConfig(kind="exact")
        v = as_matrix(vectors)
        super().__init__(config, v.shape[1], v.shape[0])
        self.vectors = torch.from_numpy(v)
        # ||v||^2 once, for the l2 metric (score = 2 q.v - ||v||^2 - ||q||^2)
        self._sqnorm = (self.vectors * self.vectors).sum(1) if config.metric == "l2" else None

    @torch.no_grad()
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q, k = self._check_search(queries, k)
        qt = torch.from_numpy(q)
        kk = min(k, self.ntotal)
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        block = max(1, (64 * 1024 * 1024) // max(1, self.ntotal))
        for s in range(0, len(q), block):
            qb = qt[s : s + block]
            sim = qb @ self.vectors.T
            if self._sqnorm is not None:
                sim = 2 * sim - self._sqnorm - (qb * qb).sum(1, keepdim=True)
            v, i = topk(sim, kk)
            scores[s : s + len(qb), :kk] = v.numpy()
            ids[s : s + len(qb), :kk] = i.numpy()
        return scores, ids

    def _save_payload(self, path: Path) -> list[str]:
        save_safetensors({"vectors": self.vectors.contiguous()}, str(path / _FILE))
        return [_FILE]

    @classmethod
    def load_payload(cls, path: Path, config: IndexConfig) -> ExactIndex:
        return cls(load_file(str(path / _FILE))["vectors"].numpy(), config)
