"""EASE refuses, with the figures, a solve that does not fit in memory (issue 22)."""

from __future__ import annotations

import numpy as np
import pytest

import recstack.models.ease as ease_module
from recstack.data import from_raw
from recstack.models import EASE


def _log(n_items: int, n_users: int = 50, per_user: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    items[:n_items] = np.arange(n_items)[: len(items)]  # every item appears
    return from_raw(users, items)


def test_ease_refuses_a_solve_larger_than_the_free_memory_with_the_figures(monkeypatch):
    data = _log(n_items=600, n_users=40)
    # 600 x 600 float32 = 1.4 MB a matrix; 5 of them at the peak; 1 MiB free
    monkeypatch.setattr(ease_module, "available_memory_bytes", lambda: 2**20, raising=False)
    with pytest.raises(ValueError, match=r"ease: the solve for 600 items needs about 6\.9 MiB .* 1\.0 MiB is available"):
        EASE(device="cpu").fit(data)


def test_ease_fits_when_the_free_memory_is_enough(monkeypatch):
    data = _log(n_items=200)
    monkeypatch.setattr(ease_module, "available_memory_bytes", lambda: 2**40, raising=False)
    model = EASE(device="cpu").fit(data)
    assert model.B_.shape == (data.n_items, data.n_items)


def test_ease_memory_estimate_counts_the_dense_copies_of_the_solve():
    from recstack.models.ease import CPU_PEAK_COPIES, solve_memory_bytes

    n = 10_000
    unit = 4 * n * n
    assert solve_memory_bytes(n, 0, "cpu") == {"host": CPU_PEAK_COPIES * unit, "device": 0}
    assert CPU_PEAK_COPIES == 5  # gram, LAPACK's Fortran copy, two triangles, their sum
    # a dense co-occurrence matrix (8 bytes a non-zero) costs more than its dense copy
    assert solve_memory_bytes(n, n * n, "cuda")["host"] == 3 * unit
    assert solve_memory_bytes(n, 0, "cuda")["device"] == 3 * unit


def test_available_memory_reads_meminfo_without_psutil(monkeypatch, tmp_path):
    import builtins

    from recstack.models.ease import available_memory_bytes

    real_import, real_open = builtins.__import__, builtins.open

    def no_psutil(name, *a, **kw):
        if name == "psutil":
            raise ImportError(name)
        return real_import(name, *a, **kw)

    fake = tmp_path / "meminfo"
    fake.write_text("MemTotal:       25165824 kB\nMemFree:         1000000 kB\nMemAvailable:   20971520 kB\n")
    monkeypatch.setattr(builtins, "__import__", no_psutil)
    monkeypatch.setattr(builtins, "open", lambda f, *a, **kw: real_open(fake if f == "/proc/meminfo" else f, *a, **kw))
    assert available_memory_bytes() == 20 * 2**30
