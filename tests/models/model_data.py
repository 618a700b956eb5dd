"""Generated interaction data shared by the model tests (imported by name: pytest puts this
folder on sys.path)."""

from __future__ import annotations

import numpy as np

from recstack.data import from_raw
from recstack.models import Recommender


def planted(n_per_group: int = 20, n_half: int = 15, per_user: int = 8, seed: int = 0):
    """Two user groups; group g only consumes items of half g of the catalogue."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(2 * n_per_group):
        g = u // n_per_group
        own = rng.choice(n_half, per_user, replace=False)
        own[0] = u % n_half  # every item gets at least one user
        users += [u] * per_user
        items += list(g * n_half + own)
    data = from_raw(np.array(users), np.array(items), timestamp=np.arange(len(users)))
    group = np.arange(2 * n_per_group) // n_per_group
    return data, group, n_half


def own_group_share(model: Recommender, group: np.ndarray, n_half: int, k: int = 5) -> float:
    recs, _ = model.recommend(np.arange(len(group)), k=k)
    return float(((recs // n_half) == group[:, None]).mean())


def random_data(n_users: int = 30, n_items: int = 20, density: float = 0.25, seed: int = 0):
    rng = np.random.default_rng(seed)
    m = rng.random((n_users, n_items)) < density
    m[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    m[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    u, i = np.nonzero(m)
    return from_raw(u, i, timestamp=np.arange(len(u))), m.astype(np.float32)
