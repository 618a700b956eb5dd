"""What the load generator itself adds to measured latency: 100 QPS x 10 s of POSTs to a route
that only answers 405 (`/health` is GET-only), so the server does almost nothing, with each of
`recstack loadtest`'s clients. Starts `recstack serve BUNDLE` on loopback.

    python benchmarks/probe_loadgen_overhead.py --bundle /tmp/i6c/svc/ml_ctr_v1
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys

from recstack.serving.loadtest import free_port, run_loadtest, wait_ready


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "recstack.cli", "serve", args.bundle, "--port", str(port),
                             "--threads", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(url, proc)
        for client in ("httpx", "lean"):
            rep = run_loadtest(url, [{}], rate=100, duration=10, path="/health", client=client)
            print(json.dumps({"client": client, "route": "POST /health (405)", "latency_ms": rep.latency_ms,
                              "answers": rep.error_kinds}))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
