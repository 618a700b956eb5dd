"""Deterministic traffic split: a user always lands in the same variant of an experiment.

The bucket is a hash of (experiment salt, user id), uniform on [0, 1); variants own
consecutive intervals whose lengths are their weights. A different salt reshuffles users, so
two experiments run at once are independent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def bucket(user: str | int, salt: str = "") -> float:
    """A number in [0, 1) fixed by (salt, user): the first 8 bytes of SHA-256, scaled."""
    digest = hashlib.sha256(f"{salt}\x1f{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_variant(user: str | int, variants: Sequence[str], weights: Sequence[float] | None = None,
                   salt: str = "") -> str:
    """The variant of `user`: variant i gets a weights[i] / sum(weights) share of users.

    Raises:
        ValueError: no variants, a weight count that differs, or non-positive weights.
    """
    if not variants:
        raise ValueError("assign_variant: no variants")
    weights = [1.0] * len(variants) if weights is None else [float(w) for w in weights]
    if len(weights) != len(variants) or min(weights) <= 0:
        raise ValueError(f"assign_variant: need one positive weight per variant, got {weights} for {list(variants)}")
    x = bucket(user, salt) * sum(weights)
    acc = 0.0
    for v, w in zip(variants, weights, strict=True):
        acc += w
        if x < acc:
            return v
    return variants[-1]  # float rounding at the top edge
