"""Serving under load (issue 22): every /recommend request has a deadline counted from its
arrival; queueing that eats the budget gets a degraded answer (costliest stages skipped) or a
fast 503, each outcome counted. Overload is simulated deterministically: an ASGI wrapper
back-dates a request's arrival stamp (time "spent in the queue"), or a stage is made slow."""

from __future__ import annotations

import json
import re
import socket
import threading
import time

import pytest
import torch
import uvicorn
from conftest import write_group_walk_log
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from recstack.cli import app as cli_app
from recstack.pipeline import PipelineConfig
from recstack.serving.app import ServiceSettings, create_app
from recstack.serving.bundle import load_bundle, rebundle
from recstack.serving.metrics import ARRIVAL
from recstack.serving.server import stamped_http_protocol

RECIPE = ["--set", "two_tower.epochs=2", "--set", "two_tower.dim=8", "--set", "two_tower.id_dim=8",
          "--set", "two_tower.history_dim=8", "--set", "two_tower.tower=[16]", "--set", "itemknn.k=10",
          "--set", "index.hnsw_m=8", "--set", "index.ef_construction=32"]
# planned stage costs x10 (ms), so the bands below are 100+ ms wide and real stage times (a few
# ms) never decide the outcome: a request needs, left at its start, 450 ms for every stage, 300
# without the fine ranker, 200 without any ranking stage, 70 for the popular answer
BIG = {"retrieval": 150.0, "coarse": 100.0, "fine": 150.0, "rerank": 50.0, "fallback": 20.0}
DEADLINE = 2000.0
BODIES = [{"user_id": "u1", "k": 5, "explain": True}, {"user_id": "u7"}, {"user_id": "u30", "k": 12},
          {"history": [115, "116", 99999]}, {}, {"user_id": "u2", "filters": {"exclude_items": [101, 102]}}]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """v1: 60 users walking through three groups of 15 items, exported by the CLI; big: the same
    assets with the planned stage costs `BIG`."""
    root = tmp_path_factory.mktemp("deadline")
    write_group_walk_log(root / "log.csv")
    torch.set_num_threads(1)
    res = CliRunner().invoke(cli_app, ["export", str(root / "v1"), "--data", f"csv:{root / 'log.csv'}",
                                       "--version", "v1", *RECIPE])
    assert res.exit_code == 0, res.output
    cfg = PipelineConfig.from_dict({**load_bundle(root / "v1").config.to_dict(), "budget_ms": BIG})
    rebundle(root / "v1", root / "big", cfg, version="big")
    return {"v1": root / "v1", "big": root / "big"}


class Queued:
    """ASGI wrapper: every HTTP request arrives `wait` seconds "late", as if it had waited that
    long in the server's queue (the stamp the server's protocol would have set on arrival)."""

    def __init__(self, app) -> None:
        self.app, self.wait = app, 0.0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            scope[ARRIVAL] = time.perf_counter() - self.wait
        await self.app(scope, receive, send)


def outcomes(client: TestClient) -> dict[tuple[str, str], float]:
    text = client.get("/metrics").text
    pat = r'^recstack_recommend_outcomes_total\{outcome="(\w+)",reason="(\w*)"\} ([0-9.e+]+)$'
    return {(o, r): float(v) for o, r, v in re.findall(pat, text, re.M)}


def comparable(body: dict) -> dict:
    """An answer without what legitimately differs between two runs (timings, request id)."""
    return {k: v for k, v in body.items() if k not in ("timings_ms", "request_id")}


def test_ample_budget_answers_exactly_as_without_a_deadline(bundles):
    """The default deadline (200 ms) with no queueing: same items, scores, traces and counts as
    a service without deadlines; every answer counted as full."""
    with TestClient(create_app(bundles["v1"], ServiceSettings(deadline_ms=None, warmup_requests=0))) as plain, \
            TestClient(create_app(bundles["v1"], ServiceSettings(warmup_requests=0))) as timed:
        for body in BODIES:
            a, b = plain.post("/recommend", json=body), timed.post("/recommend", json=body)
            assert a.status_code == b.status_code == 200, (a.text, b.text)
            assert b.json()["degraded"] is None and b.json()["returned"] == body.get("k", 10)
            assert comparable(a.json()) == comparable(b.json())
        assert outcomes(timed)[("full", "")] == len(BODIES)
        assert outcomes(plain)[("full", "")] == len(BODIES)  # no deadline: every answer is full
        assert sum(v for (o, _), v in outcomes(timed).items() if o != "full") == 0


@pytest.mark.parametrize("waited_ms, reason, text", [
    (1650, "skip_fine", "skipped fine ranking"),        # 350 ms left: coarse fits, fine does not
    (1750, "skip_ranking", "skipped the ranking stages"),  # 250 ms left: retrieval only
    (1870, "popular", "answered from the popular / fresh"),  # 130 ms left: no personalised retrieval
])
def test_budget_eaten_by_queueing_gives_a_degraded_answer_in_time(bundles, waited_ms, reason, text):
    app = Queued(create_app(bundles["big"], ServiceSettings(deadline_ms=DEADLINE, warmup_requests=0, plan_fraction=1.0)))
    with TestClient(app) as client:
        full = client.post("/recommend", json={"user_id": "u4"}).json()
        app.wait = waited_ms / 1e3
        t0 = time.perf_counter()
        r = client.post("/recommend", json={"user_id": "u4"})
        spent_ms = (time.perf_counter() - t0) * 1e3
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["degraded"].startswith(text) and body["degraded"].endswith(f"ms left of {DEADLINE:.0f}")
        left = float(re.search(r": (\d+) ms left", body["degraded"]).group(1))
        assert -1 <= DEADLINE - waited_ms - left < 60  # the time left when the work was cut (rounded)
        assert waited_ms + spent_ms < DEADLINE  # answered before the deadline
        assert body["returned"] == 10 and body["note"] is None and full["degraded"] is None  # still k items
        assert "fine" in body["skipped_stages"] and "fine" not in full["skipped_stages"]
        counts = outcomes(client)
        assert counts[("degraded", reason)] == 1 and counts[("full", "")] == 1
        assert sum(v for (o, _), v in counts.items() if o == "degraded") == 1


@pytest.mark.parametrize("waited_ms", [1950, 5000])  # 50 ms left (< 70 for the cheapest answer); past it
def test_no_time_left_is_a_fast_503_with_retry_after(bundles, waited_ms):
    app = Queued(create_app(bundles["big"], ServiceSettings(deadline_ms=DEADLINE, warmup_requests=0,
                                                            retry_after_s=2, plan_fraction=1.0)))
    with TestClient(app) as client:
        app.wait = waited_ms / 1e3
        t0 = time.perf_counter()
        r = client.post("/recommend", json={"user_id": "u4"})
        spent_ms = (time.perf_counter() - t0) * 1e3
        assert r.status_code == 503 and r.headers["retry-after"] == "2"
        assert spent_ms < 50  # shed before any pipeline work
        detail = r.json()["detail"]
        assert len(r.content) < 200 and detail.startswith("overloaded:") and "\n" not in detail
        counts = outcomes(client)
        assert counts[("shed", "deadline")] == 1 and counts[("full", "")] == 0
        assert 'recstack_http_requests_total{method="POST",route="/recommend",status="503"} 1.0' in \
            client.get("/metrics").text
        app.wait = 0.0  # the queue drained: full answers again
        assert client.post("/recommend", json={"user_id": "u4"}).json()["degraded"] is None


def test_a_slow_stage_is_cut_at_the_deadline(bundles):
    """A coarse ranker that overruns (injected: it sleeps 0.3 s, past the 200 ms deadline) leaves
    no time for the fine ranker, which is skipped (also slowed: running it would cost 0.3 s more)."""
    app = create_app(bundles["v1"], ServiceSettings(warmup_requests=0))
    with TestClient(app) as client:
        stages = app.state.holder.current.pipeline.stages
        for _, _, ranker in stages:
            score = ranker.score

            def slow(*args, _score=score, **kwargs):
                time.sleep(0.3)
                return _score(*args, **kwargs)

            ranker.score = slow
        t0 = time.perf_counter()
        body = client.post("/recommend", json={"user_id": "u4"}).json()
        assert time.perf_counter() - t0 < 0.3 + 0.2  # the overrun, not the fine stage's 0.3 s
        assert body["degraded"].startswith("skipped fine ranking") and body["skipped_stages"] == ["fine"]
        assert body["returned"] == 10 and outcomes(client)[("degraded", "skip_fine")] == 1


def test_the_server_counts_time_queued_behind_other_requests(bundles):
    """Live uvicorn with the stamped protocol: two pipelined requests read in one go, the first
    blocking the event loop for 0.25 s (a slow stage, as CPU work would) past the 100 ms
    deadline. The second request's clock started when its bytes were read, so it is shed at
    once instead of waiting another 0.25 s for a late answer."""
    app = create_app(bundles["v1"], ServiceSettings(deadline_ms=100, warmup_requests=0, plan_fraction=1.0))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, http=stamped_http_protocol()))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        t_end = time.time() + 30
        while not server.started:
            assert time.time() < t_end and thread.is_alive(), "server did not start"
            time.sleep(0.05)
        for _, _, ranker in app.state.holder.current.pipeline.stages[:1]:
            score = ranker.score
            ranker.score = lambda *a, _score=score, **kw: (time.sleep(0.25), _score(*a, **kw))[1]
        body = json.dumps({"user_id": "u4"}).encode()
        head = (f"POST /recommend HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n").encode()
        raw = head + b"\r\n" + body + head + b"connection: close\r\n\r\n" + body
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(raw)
            data = b""
            while chunk := c.recv(65536):
                data += chunk
        spent = time.perf_counter() - t0
        statuses = re.findall(rb"HTTP/1.1 (\d{3})", data)
        assert statuses == [b"200", b"503"], data[:500]
        assert b"retry-after: 1" in data.lower() and b"skipped fine ranking" in data
        assert spent < 0.25 + 0.2  # the second request did not run the slow stage
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def test_the_pipeline_plans_to_a_fraction_of_the_deadline(bundles):
    """plan_fraction 0.5 of a 2000 ms deadline: a request that waited 650 ms has 350 ms of its
    1000 ms plan left, so it skips the fine stage (as one with 350 ms left of its deadline
    would), although 1350 ms of the deadline remain; shedding still waits for the deadline."""
    app = Queued(create_app(bundles["big"], ServiceSettings(deadline_ms=DEADLINE, warmup_requests=0,
                                                            plan_fraction=0.5)))
    with TestClient(app) as client:
        app.wait = 0.650
        body = client.post("/recommend", json={"user_id": "u4"}).json()
        assert body["degraded"].startswith("skipped fine ranking") and body["degraded"].endswith("ms left of 1000")
        app.wait = 1.5  # past the plan, 500 ms before the deadline: the popular answer, not a 503
        r = client.post("/recommend", json={"user_id": "u4"})
        assert r.status_code == 200 and r.json()["degraded"].startswith("answered from the popular")
        app.wait = 1.95  # 50 ms left of the deadline: shed
        assert client.post("/recommend", json={"user_id": "u4"}).status_code == 503
    with pytest.raises(ValueError, match="plan_fraction"):
        ServiceSettings(plan_fraction=0.0)
