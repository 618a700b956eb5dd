"""Probe (issue 6): the service with N uvicorn worker processes on one port, no hot swap (a swap
would reach only the worker that receives /admin/reload, so `recstack serve` keeps one process).

    python benchmarks/probe_two_workers.py BUNDLE --workers 2 --port 18123 &
    recstack loadtest http://127.0.0.1:18123 --bundle BUNDLE --rate 100 --duration 30
"""

from __future__ import annotations

import argparse
import os

import uvicorn

from recstack.serving.app import ServiceSettings, create_app
from recstack.serving.server import configure_runtime


def make_app():
    """App factory run in each worker process (the bundle path comes through the environment)."""
    configure_runtime(1)
    return create_app(os.environ["RECSTACK_PROBE_BUNDLE"], ServiceSettings())


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--port", type=int, default=18123)
    args = ap.parse_args()
    os.environ["RECSTACK_PROBE_BUNDLE"] = args.bundle
    os.environ["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__)) + os.pathsep + os.environ.get("PYTHONPATH", "")
    uvicorn.run("probe_two_workers:make_app", factory=True, workers=args.workers, host="127.0.0.1",
                port=args.port, log_level="warning", access_log=False)
