"""Item-based k-nearest-neighbour CF (Sarwar et al. 2001) with shrunk cosine similarity.

    sim(i, j) = |U_i & U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrink)

Only each item's `k` most similar neighbours are kept; a user's score for item j sums the
similarities from the items in the user's history that have j among their neighbours.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recstack.data.dataset import Interactions
from recstack.evaluation.ranking import topk
from recstack.models.base import Recommender


class ItemKNN(Recommender):
    """Item-item kNN.

    Args:
        k: neighbours kept per item.
        shrink: shrinkage added to the cosine denominator (damps similarities from few users).
        block: items per block when computing similarities (bounds memory to block x n_items).
    """

    name = "itemknn"

    def __init__(self, k: int = 200, shrink: float = 10.0, block: int = 2048, device: str = "auto") -> None:
        super().__init__(device)
        self.k = k
        self.shrink = shrink
        self.block = block

    def _fit(self, data: Interactions) -> None:
        x = self.seen_.astype(np.float32)
        n = x.shape[1]
        xt = x.T.tocsr()
        norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel()).astype(np.float32)
        k = min(self.k, n - 1) if n > 1 else 0
        rows, cols, vals = [], [], []
        for s in range(0, n, self.block):
            e = min(n, s + self.block)
            co = torch.from_numpy((xt[s:e] @ x).toarray())  # co-occurrence counts [block, n]
            denom = torch.from_numpy(norms[s:e]).unsqueeze(1) * torch.from_numpy(norms).unsqueeze(0)
            sim = co / (denom + self.shrink)
            sim[torch.arange(e - s), torch.arange(s, e)] = 0.0  # no self-similarity
            if k == 0:
                continue
            v, i = topk(sim, k)  # deterministic: ties go to the lower item index
            keep = v > 0
            rows.append((torch.arange(s, e).unsqueeze(1).expand_as(i))[keep].numpy())
            cols.append(i[keep].numpy())
            vals.append(v[keep].numpy())
        if rows:
            r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
        else:
            r = c = np.zeros(0, np.int64)
            v = np.zeros(0, np.float32)
        self.sim_ = sp.csr_matrix((v, (r, c)), shape=(n, n), dtype=np.float32)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        s = (self.seen_[users.cpu().numpy()] @ self.sim_).toarray()
        return torch.from_numpy(s).to(self.device_)

    def similar_items(self, items: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k most similar items of each item (from the kept neighbours)."""
        dense = torch.from_numpy(self.sim_[np.atleast_1d(items)].toarray())
        dense[dense == 0] = float("-inf")
        v, i = topk(dense, min(k, self.n_items_))
        return i.numpy(), v.numpy()

    def _state(self) -> dict[str, torch.Tensor]:
        s = self.sim_.tocoo()
        return {
            "sim.row": torch.from_numpy(s.row.astype(np.int64)),
            "sim.col": torch.from_numpy(s.col.astype(np.int64)),
            "sim.val": torch.from_numpy(s.data.astype(np.float32)),
        }

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        n = self.n_items_
        self.sim_ = sp.csr_matrix(
            (state["sim.val"].cpu().numpy(), (state["sim.row"].cpu().numpy(), state["sim.col"].cpu().numpy())),
            shape=(n, n),
        )
