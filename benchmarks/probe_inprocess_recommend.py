"""In-process cost of one /recommend (no sockets): FastAPI's TestClient over `create_app`.

    python benchmarks/probe_inprocess_recommend.py BUNDLE [LABEL]

Sends 50 warm-up requests, then one request for each of users 1..399 (k=10), and prints the
mean, median and p99 milliseconds.
"""

from __future__ import annotations

import sys
import time

import numpy as np
from fastapi.testclient import TestClient

from recstack.serving.app import create_app


def main() -> None:
    bundle = sys.argv[1] if len(sys.argv) > 1 else "/tmp/qs22/bundle"
    label = sys.argv[2] if len(sys.argv) > 2 else ""
    with TestClient(create_app(bundle)) as client:
        users = list(range(1, 400))
        for u in users[:50]:
            client.post("/recommend", json={"user_id": u, "k": 10})
        ms = []
        for u in users:
            t0 = time.perf_counter()
            r = client.post("/recommend", json={"user_id": u, "k": 10})
            ms.append((time.perf_counter() - t0) * 1e3)
            if r.status_code != 200:
                raise SystemExit(f"user {u}: HTTP {r.status_code}: {r.text[:200]}")
    a = np.array(ms)
    print(f"{label} mean {a.mean():.2f} p50 {np.median(a):.2f} p99 {np.percentile(a, 99):.2f} ms")


if __name__ == "__main__":
    main()
