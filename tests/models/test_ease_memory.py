"""EASE fits in memory: one dense matrix, checked before the solve (issues 21, 22)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import recstack.models.ease as ease_module
from recstack.data import from_raw
from recstack.data.transforms import split
from recstack.models import EASE
from recstack.models.ease import (
    CPU_PEAK_COPIES,
    GPU_DEVICE_COPIES,
    GPU_HOST_COPIES,
    SLACK_BYTES,
    gram_into,
    solve_memory_bytes,
    solve_torch,
)


def _log(n_items: int, n_users: int = 50, per_user: int = 20, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = np.repeat(np.arange(n_users), per_user)
    items = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)])
    items[:n_items] = np.arange(n_items)[: len(items)]  # every item appears
    return from_raw(users, items)


def _x(n_users: int, n_items: int, density: float, seed: int = 0) -> sp.csr_matrix:
    x = sp.random(n_users, n_items, density=density, format="csr", random_state=seed, dtype=np.float32)
    x.data[:] = 1
    return x


def test_ease_refuses_a_solve_larger_than_the_free_memory_with_the_figures_on_one_line(monkeypatch):
    data = _log(n_items=600, n_users=40)
    n = data.n_items
    need = solve_memory_bytes(n, len(data), "cpu")["host"]
    monkeypatch.setattr(ease_module, "available_memory_bytes", lambda: 2**20, raising=False)
    with pytest.raises(ValueError) as err:
        EASE(device="cpu").fit(data)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"ease: the solve for 600 items needs about {need / 2**20:.1f} MiB of memory")
    assert "one dense 600 x 600 float32 matrix (1.4 MiB)" in msg
    assert "but 1.0 MiB is available" in msg


def test_ease_fits_when_the_free_memory_is_enough_and_records_its_memory(monkeypatch):
    data = _log(n_items=200)
    monkeypatch.setattr(ease_module, "available_memory_bytes", lambda: 2**40, raising=False)
    model = EASE(device="cpu").fit(data)
    assert model.B_.shape == (data.n_items, data.n_items)
    memory = model.fit_info_["memory"]
    assert memory["estimate_gib"] == round(solve_memory_bytes(200, len(data))["host"] / 2**30, 3)
    assert memory["available_gib"] == 1024.0
    assert 0 < memory["peak_rss_gib"] < 1024


def test_fit_model_passes_the_memory_figures_to_the_train_output():
    from recstack.workflow.experiment import fit_model

    parts = split(_log(n_items=150, n_users=60), "ratio", valid_frac=0.0, test_frac=0.2, seed=0)
    info = fit_model(EASE(device="cpu"), parts)
    assert info["fit_on"] == "train"
    assert set(info["memory"]) >= {"estimate_gib", "available_gib", "peak_rss_gib"}
    json.dumps(info)  # printed in recstack train's JSON line


def test_ease_memory_estimate_counts_one_dense_matrix_and_the_working_blocks():
    n = 40_981  # Gowalla
    unit = 4 * n * n
    assert (CPU_PEAK_COPIES, GPU_HOST_COPIES, GPU_DEVICE_COPIES) == (1, 0, 2)
    cpu = solve_memory_bytes(n, 810_128, "cpu")
    assert cpu["device"] == 0
    assert unit < cpu["host"] < unit + 512 * 2**20  # 6.3 GiB and a few hundred MiB of blocks
    assert cpu["host"] < 12 * 10**9
    cuda = solve_memory_bytes(n, 810_128, "cuda")
    assert cuda["host"] < 512 * 2**20
    assert 2 * unit < cuda["device"] < 2 * unit + 128 * 2**20


def test_the_default_max_items_lets_gowalla_in():
    assert EASE().max_items >= 40_981


def test_the_working_blocks_stay_within_what_the_estimate_counts(monkeypatch):
    # numpy / scipy allocations (the blocks of X^T X, X transposed) are traced; the one dense
    # buffer is torch's and LAPACK works in it in place (the RSS test below measures all)
    n = 1_500
    monkeypatch.setattr(ease_module, "GRAM_BLOCK_ENTRIES", n * n // 16)  # blocks of n / 16 rows
    x = _x(3_000, n, 0.02)
    g = torch.empty(n, n)
    ptr = g.data_ptr()
    tracemalloc.start()
    try:
        b = solve_torch(gram_into(x, g, 50.0))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert b.data_ptr() == ptr
    assert 0 < peak <= solve_memory_bytes(n, x.nnz, "cpu")["host"] - 4 * n * n - SLACK_BYTES


def test_rss_growth_of_a_fit_stays_within_the_estimate():
    # a fresh process whose peak RSS (VmHWM) is reset to its current RSS just before the fit
    # (Linux's /proc/self/clear_refs), so the peak after it is what the fit added
    code = textwrap.dedent("""
        import json, numpy as np
        import recstack.models.ease as E
        from recstack.data import from_raw

        def status(key):
            for line in open("/proc/self/status"):
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024

        n = 4_000
        E.GRAM_BLOCK_ENTRIES = n * n // 16
        rng = np.random.default_rng(0)
        data = from_raw(rng.integers(0, 6_000, 240_000), rng.integers(0, n, 240_000))
        model = E.EASE(device="cpu")
        # warm up the library paths the fit uses (BLAS threads and buffers) on a tiny problem
        E.solve_torch(E.gram_into(data.csr()[:, :50].tocsr(), E.torch.empty(50, 50), 1.0))
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status("VmRSS")
        model.fit(data)
        print(json.dumps({"n": data.n_items, "nnz": len(data), "growth": status("VmHWM") - before}))
    """)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak RSS")
    out = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                    text=True).stdout.strip().splitlines()[-1])
    unit = 4 * out["n"] ** 2
    assert 0.9 * unit <= out["growth"] <= solve_memory_bytes(out["n"], out["nnz"], "cpu")["host"]
    assert out["growth"] < 1.6 * unit  # no second dense matrix


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
