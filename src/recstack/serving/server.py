"""`recstack serve`: run the service with uvicorn, tuned for small per-request work on few cores."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch
import uvicorn

from recstack.serving.abtest import ABTestConfig
from recstack.serving.app import ServiceSettings, create_app


def configure_runtime(threads: int = 1) -> None:
    """One compute thread per process: a request's tensors are tiny, so intra-op threads only
    add hand-off latency and contend with the server's own thread; a shorter GIL switch
    interval keeps the event loop responsive while a worker thread computes."""
    torch.set_num_threads(threads)
    if importlib.util.find_spec("faiss") is not None:  # bundles with an exact index need no Faiss
        import faiss

        faiss.omp_set_num_threads(threads)
    sys.setswitchinterval(0.001)


def serve(bundle: str | Path | None, host: str = "127.0.0.1", port: int = 8000,
          settings: ServiceSettings | None = None, threads: int = 1,
          graceful_timeout: float = 10.0, log_level: str = "warning",
          experiment: ABTestConfig | None = None) -> None:
    """Serve `bundle` (or the variants of an A/B `experiment`) until SIGINT / SIGTERM; on
    shutdown, new connections are refused, /ready turns 503, and in-flight requests get up to
    `graceful_timeout` seconds to finish."""
    configure_runtime(threads)
    app = create_app(bundle, settings, experiment=experiment)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False,
                timeout_graceful_shutdown=graceful_timeout, lifespan="on")
