"""The served bundle and its hot swap: requests take a reference to the current bundle when they
start and keep it to the end; a swap loads and warms the new bundle completely, then replaces the
reference in one assignment. No request ever sees a half-loaded bundle, none fails."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from recstack.serving.bundle import Bundle, BundleError, load_bundle


class SwapInProgress(RuntimeError):
    """Another swap is running."""


class BundleHolder:
    """Holds the current `Bundle`; `swap` replaces it atomically."""

    def __init__(self, path: str | Path, verify: bool = True, warmup: int = 20) -> None:
        self.path, self.verify, self.warmup = Path(path), verify, warmup
        self._current: Bundle | None = None
        self._swap_lock = threading.Lock()
        self.draining = False

    @property
    def current(self) -> Bundle | None:
        return self._current

    def load(self) -> Bundle:
        """Initial load (at startup)."""
        b = self._prepare(self.path)
        self._current = b
        return b

    def swap(self, path: str | Path | None = None) -> tuple[str, Bundle, float]:
        """Load `path` (default: the served path again, re-resolving symlinks), warm it up and
        make it current -> (previous version, new bundle, seconds)."""
        if not self._swap_lock.acquire(blocking=False):
            raise SwapInProgress("a bundle swap is already in progress")
        try:
            t0 = time.perf_counter()
            target = Path(path) if path is not None else self.path
            new = self._prepare(target)
            old = self._current
            self._current = new  # the swap: one reference assignment
            self.path = target
            return (old.version if old else ""), new, time.perf_counter() - t0
        finally:
            self._swap_lock.release()

    def _prepare(self, path: Path) -> Bundle:
        """Load and warm up `path`; any failure (a corrupt file whose hash was recomputed fails
        in numpy, safetensors, Faiss or the warm-up, not in the integrity check) is a
        `BundleError` with a one-line message, so the served bundle stays in place."""
        try:
            b = load_bundle(path, verify=self.verify)
            warm_up(b, self.warmup)
        except BundleError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever a broken file raises
            raise BundleError(f"{path}: cannot load bundle: {type(e).__name__}: {e}") from e
        return b


def warm_up(bundle: Bundle, n: int) -> None:
    """Run `n` requests through a freshly loaded pipeline, so lazy initialisation (allocator,
    index, torch kernels) happens before it takes traffic."""
    p = bundle.pipeline
    users = bundle.assets.users
    rng = np.random.default_rng(0)
    for j in range(n):
        if j % 3 == 2 or users.n_users == 0:
            req, _ = p.request(history=bundle.assets.catalog.ids[rng.integers(0, bundle.assets.catalog.n_items, 5)].tolist())
        else:
            req, _ = p.request(user_id=users.ids[rng.integers(0, users.n_users)].item())
        p.run(req)
    p.run(p.request()[0])  # cold start
