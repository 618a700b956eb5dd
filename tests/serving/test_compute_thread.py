"""The service's compute worker thread runs with the process's thread settings: torch's intra-op
thread count, and Faiss's OpenMP thread count (a per-thread setting that a new thread would
otherwise take from OpenMP's default, every core)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from recstack.serving.app import compute_thread_initializer

faiss = pytest.importorskip("faiss")


def test_the_initializer_applies_torch_threads_to_faiss_in_the_worker():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        init = compute_thread_initializer()
        seen = {}

        def fresh() -> None:  # a thread nobody configured: OpenMP's default
            seen["fresh"] = faiss.omp_get_max_threads()

        t = threading.Thread(target=fresh)
        t.start()
        t.join()
        with ThreadPoolExecutor(1, initializer=init) as pool:
            got = pool.submit(lambda: (faiss.omp_get_max_threads(), torch.get_num_threads())).result()
        assert got == (1, 1)
        assert seen["fresh"] >= 1  # (the default; on one core it is 1 anyway)
    finally:
        torch.set_num_threads(before)


def test_the_service_batch_thread_is_configured(tmp_path):
    from recstack.serving.app import ServiceSettings, create_app

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        app = create_app(tmp_path / "bundle", ServiceSettings(batch_thread=True))  # loads at startup only
        pool = app.state.batcher.executor
        try:
            assert pool.submit(faiss.omp_get_max_threads).result() == 1
        finally:
            pool.shutdown(wait=True)
    finally:
        torch.set_num_threads(before)
