import time, json, sys, statistics as st
import numpy as np
from fastapi.testclient import TestClient
from recstack.serving.app import create_app
import inspect
app = create_app("/tmp/qs22/bundle")
c = TestClient(app)
with c:
    ids = None
    r = c.post("/recommend", json={"user_id": 1, "k": 10})
    assert r.status_code == 200, r.text
    users = list(range(1, 400))
    for u in users[:50]:
        c.post("/recommend", json={"user_id": u, "k": 10})
    ts = []
    for u in users:
        t0 = time.perf_counter(); r = c.post("/recommend", json={"user_id": u, "k": 10}); ts.append(time.perf_counter() - t0)
    ts = np.array(ts) * 1e3
    print(sys.argv[1], "mean %.2f p50 %.2f p99 %.2f ms" % (ts.mean(), np.median(ts), np.percentile(ts, 99)), r.json().get("degraded"))
