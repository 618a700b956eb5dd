"""A request in index space, and its encoding from raw ids (unknown ids -> warnings)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recstack.pipeline.catalog import ItemCatalog, UserStore

_SHOWN = 5  # unknown ids quoted in a warning


@dataclass
class Request:
    """What every stage sees.

    Attributes:
        user: known user index, or None (anonymous / unknown user).
        history: recent item indices, oldest first (stored history + the request's items).
        exclude: sorted unique item indices never to return (seen, blocked, excluded).
        k: result size.
        include_bits / exclude_bits: category filters (bit masks; 0 = no filter).
        context: free-form request context passed to rankers (device, time of day, ...).
        recent: item indices the request itself carried (not in the stored history).
        scale: candidate pool multiplier, set by `Pipeline.run`: k / default_k when k exceeds
            the pipeline's default_k (sources and ranking stages then keep proportionally more,
            so a large k is not starved by pools sized for the default k), else 1.
    """

    user: int | None
    history: np.ndarray
    exclude: np.ndarray
    k: int
    include_bits: np.uint64 = np.uint64(0)
    exclude_bits: np.uint64 = np.uint64(0)
    context: Mapping[str, Any] = field(default_factory=dict)
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    category_bits: np.ndarray | None = None
    scale: float = 1.0

    def pool(self, n: int) -> int:
        """`n` (a source's or stage's configured size) scaled to this request's k."""
        return n if self.scale <= 1.0 else math.ceil(n * self.scale)

    @property
    def cold_start(self) -> bool:
        """No known user and no history: only context-free sources (popular, fresh) apply."""
        return self.user is None and self.history.size == 0

    def eligible(self, items: np.ndarray) -> np.ndarray:
        """Boolean mask of `items` that may be returned (vectorised)."""
        ok = np.ones(len(items), bool)
        if self.exclude.size:
            pos = np.minimum(np.searchsorted(self.exclude, items), self.exclude.size - 1)
            ok &= self.exclude[pos] != items
        if self.category_bits is not None and (self.include_bits or self.exclude_bits):
            bits = self.category_bits[items]
            if self.include_bits:
                ok &= (bits & self.include_bits) != 0
            if self.exclude_bits:
                ok &= (bits & self.exclude_bits) == 0
        return ok


def _unknown(what: str, values: Sequence[Any], idx: np.ndarray) -> list[str]:
    bad = [values[j] for j in np.flatnonzero(idx < 0)]
    if not bad:
        return []
    shown = ", ".join(repr(v) for v in bad[:_SHOWN]) + (", ..." if len(bad) > _SHOWN else "")
    return [f"{len(bad)} unknown {what} ignored: {shown}"]


def encode_request(catalog: ItemCatalog, users: UserStore, *, user_id: Any = None,
                   history: Sequence[Any] = (), k: int = 10, exclude_items: Sequence[Any] = (),
                   categories: Sequence[str] = (), exclude_categories: Sequence[str] = (),
                   context: Mapping[str, Any] | None = None, history_len: int = 50,
                   filter_seen: bool = True, blocked: np.ndarray | None = None,
                   ) -> tuple[Request, list[str]]:
    """Raw ids -> a `Request`, plus human-readable warnings about what was ignored.

    Unknown users and items never fail a request: they are dropped with a warning. A request
    with neither a known user nor known history items takes the cold-start path.
    """
    warnings: list[str] = []
    user = None
    if user_id is not None:
        u = users.id_map.lookup([user_id])[0]
        if u < 0:
            warnings.append(f"unknown user id {user_id!r} ignored")
        else:
            user = int(u)
    recent = catalog.id_map.lookup(list(history))
    warnings += _unknown("history item id(s)", list(history), recent)
    recent = recent[recent >= 0]
    stored = users.history(user) if user is not None else np.zeros(0, np.int64)
    full = np.concatenate([stored, recent]) if recent.size else stored
    parts = [full] if filter_seen else []
    if exclude_items:
        ex = catalog.id_map.lookup(list(exclude_items))
        warnings += _unknown("excluded item id(s)", list(exclude_items), ex)
        parts.append(ex[ex >= 0])
    if blocked is not None and blocked.size:
        parts.append(blocked)
    exclude = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    inc, bad_inc = catalog.category_mask(list(categories))
    exc, bad_exc = catalog.category_mask(list(exclude_categories))
    if bad_inc or bad_exc:
        warnings.append(f"unknown categories ignored: {', '.join(repr(c) for c in bad_inc + bad_exc)}")
    req = Request(user=user, history=full[-history_len:].astype(np.int64), exclude=exclude.astype(np.int64),
                  k=int(k), include_bits=inc, exclude_bits=exc, context=dict(context or {}),
                  recent=recent.astype(np.int64), category_bits=catalog.category_bits)
    return req, warnings
