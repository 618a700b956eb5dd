"""`recstack serve`: run the service with uvicorn, tuned for small per-request work on few cores."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import torch

from recstack.optional import needs

with needs("serve", "recstack.serving"):
    import uvicorn

from recstack.serving.abtest import ABTestConfig
from recstack.serving.app import ServiceSettings, create_app
from recstack.serving.metrics import ARRIVAL


def stamped_http_protocol() -> type | str:
    """uvicorn's httptools protocol, stamping each request's scope with when its bytes were read
    off the socket (`ARRIVAL`), so the deadline counts the time a request then waits for the
    event loop behind other requests (which the app itself cannot see). "auto" (no stamp: the
    clock starts when the app first sees the request) when httptools is not installed."""
    if importlib.util.find_spec("httptools") is None:  # pragma: no cover - depends on the environment
        return "auto"
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class StampedHttpToolsProtocol(HttpToolsProtocol):
        _read_at = 0.0

        def data_received(self, data: bytes) -> None:
            self._read_at = time.perf_counter()  # one clock read per socket read
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope[ARRIVAL] = self._read_at  # type: ignore[literal-required]

    return StampedHttpToolsProtocol


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
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, http=stamped_http_protocol(),
                timeout_graceful_shutdown=graceful_timeout, lifespan="on")
