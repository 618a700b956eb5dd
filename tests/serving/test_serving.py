"""Bundles (export, pickle-free load, tamper detection), the HTTP service (endpoints, validation,
metrics, hot swap), a loopback uvicorn server under the load tester, and schemathesis."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time

import numpy as np
import pytest
import schemathesis
import torch
import uvicorn
from conftest import write_group_walk_log
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from typer.testing import CliRunner

from recstack.cli import app as cli_app
from recstack.serving.app import ServiceSettings, create_app
from recstack.serving.bundle import BundleError, load_bundle, read_manifest
from recstack.serving.loadtest import bundle_payloads, check_loopback, run_loadtest

TOKEN = "s3cret"
RECIPE = ["--set", "two_tower.epochs=2", "--set", "two_tower.dim=8", "--set", "two_tower.id_dim=8",
          "--set", "two_tower.history_dim=8", "--set", "two_tower.tower=[16]", "--set", "itemknn.k=10",
          "--set", "index.hnsw_m=8", "--set", "index.ef_construction=32"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def versioned_copy(src, dst, version: str):
    """A copy of a bundle with another version label (the manifest is not among hashed files)."""
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    m["version"] = version
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    write_group_walk_log(root / "log.csv")
    torch.set_num_threads(1)
    res = CliRunner().invoke(cli_app, ["export", str(root / "v1"), "--data", f"csv:{root / 'log.csv'}",
                                       "--version", "v1", *RECIPE])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    versioned_copy(root / "v1", root / "v2", "v2")
    return {"root": root, "v1": root / "v1", "v2": root / "v2", "summary": summary}


# ---- bundles --------------------------------------------------------------------------------------
def test_export_writes_a_checked_pickle_free_bundle(bundles):
    v1 = bundles["v1"]
    assert bundles["summary"]["version"] == "v1"
    m = read_manifest(v1)
    names = set(m["files"])
    assert {"pipeline.json", "catalog/ids.npy", "users/items.npy", "models/two_tower/weights.safetensors",
            "indexes/two_tower/index.faiss", "matrices/ease/data.npy"} <= names
    # the CTR rankers (default recipe "ctr_blend"): weights, feature pipeline and store, no pickle
    assert {"extras/coarse_ctr/weights.safetensors", "extras/fine_ctr/config.json",
            "extras/fine_ctr/store/items.parquet"} <= names
    allowed = (".json", ".npy", ".safetensors", ".faiss", ".parquet")
    assert all(n.endswith(allowed) for n in names), names
    b = load_bundle(v1)
    assert b.version == "v1" and b.assets.catalog.n_items == 45 and b.assets.users.n_users == 60
    # deterministic: the same request twice through a freshly loaded bundle
    again = load_bundle(v1)
    for kw in ({"user_id": "u3"}, {"history": [100, 101]}, {}):
        a = b.pipeline.run(b.pipeline.request(**kw)[0]).items
        assert np.array_equal(a, again.pipeline.run(again.pipeline.request(**kw)[0]).items)
    res = CliRunner().invoke(cli_app, ["export", str(v1), "--data", "csv:/nonexistent.csv"])
    assert res.exit_code == 2 and "exists" in res.output


def test_tampered_bundles_are_refused(bundles, tmp_path):
    t = versioned_copy(bundles["v1"], tmp_path / "t", "t")
    (t / "evil.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(BundleError, match="unlisted"):
        load_bundle(t)
    (t / "evil.pkl").unlink()
    f = t / "catalog" / "popularity.npy"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="changed"):
        load_bundle(t)
    f.unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(t)
    with pytest.raises(BundleError, match="not a recstack bundle"):
        load_bundle(tmp_path)


def test_rebundle_with_a_new_pipeline_config(bundles, tmp_path):
    from recstack.pipeline import PipelineConfig
    from recstack.serving.bundle import rebundle

    cfg = load_bundle(bundles["v1"]).config.to_dict()
    cfg["rerank"] = {**cfg["rerank"], "mmr_lambda": 1.0, "category_cap": None, "promoted": [{"item": 130, "slot": 0}]}
    cfg["max_k"], cfg["default_k"] = 4, 4
    out = rebundle(bundles["v1"], tmp_path / "v3", PipelineConfig.from_dict(cfg), version="v3")
    b = load_bundle(out)
    assert b.version == "v3" and b.manifest["info"]["rebundled_from"]["version"] == "v1"
    res = b.pipeline.run(b.pipeline.request(user_id="u1")[0])  # u1 walks group 1: 130 is new to them
    assert b.assets.catalog.ids[res.items[0]] == 130 and res.trace[0].rule == "promoted"
    with TestClient(create_app(out, ServiceSettings(warmup_requests=0))) as c:
        body = c.post("/recommend", json={"user_id": "u1", "k": 10}).json()  # schema-valid: clamped
        assert len(body["items"]) == 4 and "exceeds this bundle's max_k" in body["warnings"][0]
        first = body["items"][0]
        assert (first["item_id"], first["score"], first["rule"]) == (130, None, "promoted")


def test_feedback_teaches_the_exploration_bandit(bundles, tmp_path):
    """A bundle whose re-ranking explores: /recommend fills exploration slots from the items with
    little history, and /feedback (item + click) updates the bandit's counts."""
    from recstack.pipeline import PipelineConfig
    from recstack.serving.bundle import rebundle

    cfg = load_bundle(bundles["v1"]).config.to_dict()
    cfg["rerank"] = {**cfg["rerank"], "explore": {"policy": "thompson", "max_share": 0.3,
                                                  "max_popularity": 10**9}}
    out = rebundle(bundles["v1"], tmp_path / "explore", PipelineConfig.from_dict(cfg), version="ex")
    with TestClient(create_app(out, ServiceSettings(warmup_requests=0))) as c:
        body = c.post("/recommend", json={"user_id": "u1", "k": 10, "explain": True}).json()
        explored = [it["item_id"] for it in body["items"] if it["rule"] == "explore"]
        assert len(explored) == 3
        explorer = c.app.state.holder.current.pipeline.reranker.explorer
        idx = int(load_bundle(out).assets.catalog.id_map.lookup([explored[0]])[0])
        before = (int(explorer.shown[idx]), int(explorer.clicked[idx]))
        for click in (True, False, True):
            r = c.post("/feedback", json={"user_id": "u1", "item_id": explored[0], "click": click})
            assert r.status_code == 200
        assert (int(explorer.shown[idx]), int(explorer.clicked[idx])) == (before[0] + 3, before[1] + 2)


# ---- the service --------------------------------------------------------------------------------
@pytest.fixture()
def client(bundles):
    app = create_app(bundles["v1"], ServiceSettings(admin_token=TOKEN, warmup_requests=2))
    with TestClient(app) as c:
        yield c


def test_recommend_paths_and_validation(client):
    r = client.post("/recommend", json={"user_id": "u1", "k": 5, "explain": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 5 and body["bundle_version"] == "v1" and not body["cold_start"]
    assert {"retrieval", "coarse", "fine", "rerank", "total"} <= set(body["timings_ms"])
    first = body["items"][0]
    assert first["sources"] and first["rule"] and set(first["stage_scores"]) >= {"retrieval", "coarse", "fine"}
    hist = client.post("/recommend", json={"history": [115, "116", 99999], "user_id": "nobody"}).json()
    assert len(hist["items"]) == 10 and len(hist["warnings"]) == 2 and "stage_scores" not in hist["items"][0] or \
        hist["items"][0]["stage_scores"] is None
    assert not {115, 116} & {i["item_id"] for i in hist["items"]}
    cold = client.post("/recommend", json={}).json()
    # no user and no history: the personalised coarse ranker abstains (the fine ranker may still
    # score candidates from item features alone)
    assert cold["cold_start"] and "coarse" in cold["skipped_stages"] and len(cold["items"]) == 10
    filt = client.post("/recommend", json={"user_id": "u1", "filters": {"exclude_items": [first["item_id"]]}}).json()
    assert first["item_id"] not in {i["item_id"] for i in filt["items"]}
    for bad in ({"k": 0}, {"k": 101}, {"user": "u1"}, {"history": "u1"}, {"k": "many"}, {"history": [None]}):
        r = client.post("/recommend", json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert isinstance(r.json()["detail"], list)  # FastAPI's located validation errors
    assert client.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}).status_code in (400, 422)


def test_similar_health_ready_metrics_openapi(client):
    r = client.get("/items/101/similar", params={"k": 3})
    assert r.status_code == 200 and len(r.json()["items"]) == 3
    assert all(i["item_id"] != 101 for i in r.json()["items"])
    assert client.get("/items/nope/similar").status_code == 404
    assert client.get("/items/101/similar", params={"k": 0}).status_code == 422
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").json() == {"ready": True, "bundle_version": "v1", "reason": None}
    metrics = client.get("/metrics").text
    assert 'recstack_http_requests_total{method="GET",route="/items/{item_id}/similar",status="200"}' in metrics
    assert "recstack_pipeline_stage_seconds_bucket" in metrics
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/items/{item_id}/similar", "/health", "/ready", "/metrics", "/admin/reload"} <= set(paths)
    client.app.state.holder.draining = True  # what shutdown does
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["reason"] == "draining"
    client.app.state.holder.draining = False


def test_admin_reload(client, bundles, tmp_path):
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"X-Admin-Token": "wrong"}).status_code == 401
    r = client.post("/admin/reload", json={"path": str(bundles["v2"])}, headers={"X-Admin-Token": TOKEN})
    assert r.status_code == 200, r.text
    assert r.json()["previous_version"] == "v1" and r.json()["version"] == "v2"
    assert client.post("/recommend", json={"user_id": "u1"}).json()["bundle_version"] == "v2"
    broken = bundles["root"] / "broken"  # inside the allowed root, but not a bundle
    broken.mkdir(exist_ok=True)
    bad = client.post("/admin/reload", json={"path": str(broken)}, headers={"X-Admin-Token": TOKEN})
    assert bad.status_code == 422 and "still serving" in bad.json()["detail"]
    assert client.get("/ready").json()["bundle_version"] == "v2"
    assert 'recstack_bundle_swaps_total{result="failed"} 1.0' in client.get("/metrics").text


def test_admin_reload_allow_list(client, bundles, tmp_path):
    h = {"X-Admin-Token": TOKEN}
    outside = tmp_path / "v9"  # a real bundle, outside the served bundle's parent directory
    versioned_copy(bundles["v1"], outside, "v9")
    escape = f"{bundles['root']}/../{tmp_path.name}/v9"  # `..` is resolved before the check
    link = bundles["root"] / "link_out"  # a symlink inside the root pointing outside
    if not link.exists():
        link.symlink_to(outside)
    for path in (outside, escape, link, "/etc", bundles["root"]):
        r = client.post("/admin/reload", json={"path": str(path)}, headers=h)
        assert r.status_code == 403, (path, r.text)
        assert "outside the allowed bundle roots" in r.json()["detail"]
    assert 'recstack_bundle_swaps_total{result="refused"}' in client.get("/metrics").text
    # --bundle-root widens it: the same bundle is accepted
    app = create_app(bundles["v1"], ServiceSettings(admin_token=TOKEN, warmup_requests=0,
                                                    bundle_roots=(bundles["root"], tmp_path)))
    with TestClient(app) as c:
        r = c.post("/admin/reload", json={"path": str(outside)}, headers=h)
        assert r.status_code == 200 and r.json()["version"] == "v9"


def test_admin_disabled_without_token(bundles):
    with TestClient(create_app(bundles["v1"], ServiceSettings(warmup_requests=0))) as c:
        assert c.post("/admin/reload", headers={"X-Admin-Token": "x"}).status_code == 403


# ---- a real loopback server under load, with a hot swap ---------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def live_server(bundles):
    port = free_port()
    app = create_app(bundles["v1"], ServiceSettings(admin_token=TOKEN, warmup_requests=2))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            if time.time() > deadline or not thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True  # graceful: in-flight requests finish first
        thread.join(timeout=15)
    assert not thread.is_alive()


def test_hot_swap_under_load_fails_no_request(live_server, bundles):
    payloads = bundle_payloads(bundles["v1"], n=200)
    rep = run_loadtest(live_server, payloads, rate=60, duration=2.5, concurrency=16,
                       swap={"at": 1.0, "path": str(bundles["v2"]), "token": TOKEN})
    assert rep.sent == 150 and rep.ok == 150 and rep.errors == 0, rep
    assert rep.swap["status"] == 200 and rep.swap["response"]["version"] == "v2"
    assert rep.latency_ms["p50"] > 0 and rep.qps > 0


def test_loadtest_guards():
    for url in ("http://8.8.8.8:80", "ftp://127.0.0.1", "not a url"):
        with pytest.raises(ValueError):
            check_loopback(url)
    check_loopback("http://localhost:1")
    with pytest.raises(ValueError, match="duration"):
        run_loadtest("http://127.0.0.1:1", [{}], duration=10_000)
    res = CliRunner().invoke(cli_app, ["loadtest", "http://example.com", "--payloads", "/dev/null"])
    assert res.exit_code == 2


# ---- A/B experiments: two bundles behind one service -----------------------------------------------
def read_events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_single_bundle_answers_as_variant_default(client):
    body = client.post("/recommend", json={"user_id": "u1", "k": 3}, headers={"X-Request-ID": "req-1"}).json()
    assert (body["variant"], body["experiment"], body["request_id"]) == ("default", None, "req-1")
    assert client.post("/recommend", json={}).json()["request_id"]  # generated when not given
    fb = client.post("/feedback", json={"request_id": "req-1", "item_id": 101, "click": True}).json()
    assert fb == {"logged": False, "request_id": "req-1", "variant": "default", "experiment": None}
    assert client.get("/experiment").json()["variants"][0]["name"] == "default"
    assert client.get("/items/101/similar").json()["variant"] == "default"
    metrics = client.get("/metrics").text
    assert 'recstack_variant_requests_total{variant="default"} 2.0' in metrics
    assert 'recstack_feedback_clicks_total{variant="default"} 1.0' in metrics


def test_ab_split_is_deterministic_logged_and_counted(bundles, tmp_path):
    from recstack.abtest import assign_variant
    from recstack.serving.abtest import ABTestConfig, VariantConfig

    exp = ABTestConfig("exp1", [VariantConfig("A", str(bundles["v1"]), 0.7), VariantConfig("B", str(bundles["v2"]), 0.3)])
    log = tmp_path / "events.jsonl"
    app = create_app(settings=ServiceSettings(admin_token=TOKEN, warmup_requests=0, event_log=log), experiment=exp)
    n = 600
    with TestClient(app) as c:
        seen = {}
        for i in range(n):
            user = f"u{i % 60}" if i % 2 else f"x{i}"  # known and unknown users alike
            r = c.post("/recommend", json={"user_id": user, "k": 3})
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["experiment"] == "exp1" and body["variant"] == assign_variant(user, ["A", "B"], [0.7, 0.3], salt="exp1")
            assert body["bundle_version"] == {"A": "v1", "B": "v2"}[body["variant"]]
            assert seen.setdefault(user, body["variant"]) == body["variant"]  # deterministic per user
            if i % 3 == 0:  # a click on the first item, echoing the request id and variant
                fb = c.post("/feedback", json={"request_id": body["request_id"], "variant": body["variant"],
                                               "item_id": body["items"][0]["item_id"], "position": 0, "click": True})
                assert fb.status_code == 200 and fb.json()["variant"] == body["variant"], fb.text
        # anonymous: the session id is the unit; without one, the request id
        s = {c.post("/recommend", json={"session_id": "sess-9", "history": [101]}).json()["variant"] for _ in range(5)}
        assert len(s) == 1
        anon = c.post("/recommend", json={}, headers={"X-Request-ID": "anon-1"}).json()
        assert anon["variant"] == assign_variant("anon-1", ["A", "B"], [0.7, 0.3], salt="exp1")
        metrics = c.get("/metrics").text
        counted = {v: float(next(line.split()[-1] for line in metrics.splitlines()
                                 if line.startswith(f'recstack_variant_requests_total{{variant="{v}"}}'))) for v in "AB"}
        assert sum(counted.values()) == n + 6
        assert 'recstack_variant_request_seconds_count{variant="B"}' in metrics
        assert 'recstack_variant_bundle_info{variant="B",version="v2"} 1.0' in metrics
        # feedback validation and per-variant hot swap
        assert c.post("/feedback", json={"click": True}).status_code == 422
        assert c.post("/feedback", json={"request_id": "r"}).status_code == 422
        assert c.post("/feedback", json={"request_id": "r", "variant": "Z", "click": True}).status_code == 404
        assert c.post("/admin/reload", json={}, headers={"X-Admin-Token": TOKEN}).status_code == 422
        r = c.post("/admin/reload", json={"variant": "B", "path": str(bundles["v1"])}, headers={"X-Admin-Token": TOKEN})
        assert r.status_code == 200 and r.json()["variant"] == "B" and r.json()["version"] == "v1", r.text
        info = c.get("/experiment").json()
        assert [(v["name"], v["share"], v["bundle_version"]) for v in info["variants"]] == [("A", 0.7, "v1"), ("B", 0.3, "v1")]
        assert c.get("/ready").json()["ready"]
    events = read_events(log)  # the log is flushed and closed at shutdown
    imps = [e for e in events if e["type"] == "impression"]
    fbs = [e for e in events if e["type"] == "feedback"]
    assert len(imps) == n + 6 and len(fbs) == n // 3 and all(e["variant"] in ("A", "B") for e in events)
    assert imps[0]["items"][0] == {"item": imps[0]["items"][0]["item"], "pos": 0} and len(imps[0]["items"]) == 3
    assert {e["propensity"] for e in imps} == {0.7, 0.3} and {e["unit"] for e in imps} == {"user", "session", "request"}
    share_b = sum(e["variant"] == "B" for e in imps[:n]) / n
    assert abs(share_b - 0.3) < 0.1  # 300 distinct users: about 5 standard deviations
    assert counted == {v: sum(e["variant"] == v for e in imps) for v in "AB"}
    res = CliRunner().invoke(cli_app, ["abtest", "analyze", str(log), "--ips-policy", "B"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["experiments"] == ["exp1"] and out["unjoined_feedback"] == 0 and out["feedback"] == n // 3
    assert set(out["comparisons"]) == {"B"} and out["expected_shares"] == {"A": 0.7, "B": 0.3}
    assert out["ips"]["kind"] == "variant" and 0 <= out["ips"]["snips"] <= 1


def test_serve_cli_rejects_ambiguous_sources(bundles, tmp_path):
    from recstack.serving.abtest import ABTestConfig, parse_variant

    res = CliRunner().invoke(cli_app, ["serve", str(bundles["v1"]), "--variant", f"A={bundles['v1']}"])
    assert res.exit_code == 2 and "exactly one" in res.output
    assert CliRunner().invoke(cli_app, ["serve"]).exit_code == 2
    v = parse_variant(f"B={bundles['v2']}:0.25")
    assert (v.name, v.bundle, v.weight) == ("B", str(bundles["v2"]), 0.25)
    assert parse_variant("C=/a:b").bundle == "/a:b"
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("name: e\nvariants:\n  - {name: A, bundle: a, weight: 2}\n  - {name: B, bundle: /abs/b}\n")
    e = ABTestConfig.load(cfg)
    assert e.variants[0].bundle == str(tmp_path / "a") and e.shares == {"A": 2 / 3, "B": 1 / 3} and e.salt == "e"
    res = CliRunner().invoke(cli_app, ["serve", str(bundles["v1"]), "--abtest", str(cfg)])
    assert res.exit_code == 2 and "exactly one of BUNDLE, --abtest or --variant" in res.output
    assert CliRunner().invoke(cli_app, ["serve", "--experiment", str(cfg)]).exit_code == 2  # renamed: --abtest
    assert CliRunner().invoke(cli_app, ["experiment", "analyze", str(cfg)]).exit_code == 2  # renamed: abtest analyze
    for bad in ("name: e\nvariants: []\n", "name: e\nvariants:\n  - {name: A, bundle: a, weight: 0}\n",
                "name: e\nvariants:\n  - {name: A, bundle: a}\n  - {name: A, bundle: b}\n", "name: e\nfoo: 1\n"):
        cfg.write_text(bad)
        with pytest.raises(ValueError):
            ABTestConfig.load(cfg)


# ---- schemathesis: no input makes the service fail -------------------------------------------------
@pytest.fixture()
def api_schema(bundles):
    app = create_app(bundles["v1"], ServiceSettings(admin_token=TOKEN, warmup_requests=0))
    app.state.holder.load()  # the ASGI transport does not run the lifespan
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")



def test_fast_json_response_matches_the_json_module():
    """/recommend answers are rendered by orjson when installed: the same JSON document as
    starlette's JSONResponse, and the json module still renders what orjson refuses."""
    from starlette.responses import JSONResponse

    from recstack.serving.app import FastJSONResponse

    body = {"items": [{"item_id": "é-1", "score": 0.1 + 0.2, "sources": ["a"], "stage_scores": {"x": None}},
                      {"item_id": 7, "score": 1e-7, "sources": [], "source_ranks": {"a": 3}}],
            "cold_start": False, "timings_ms": {"total": 3.1416}, "experiment": None}
    assert json.loads(FastJSONResponse(body).body) == json.loads(JSONResponse(body).body) == body
    big = {"item_id": 2**70}
    assert json.loads(FastJSONResponse(big).body) == big
    assert FastJSONResponse(body).headers["content-type"] == "application/json"

@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_fails_with_a_server_error(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, case.body, response.text)


def test_loadtest_pool_reads_every_answer_form_and_drops_closed_connections():
    """The lean HTTP/1.1 client: Content-Length and chunked answers are read to their last byte,
    `Connection: close` and a server that closes idle keep-alive connections cost no request."""
    import asyncio

    from recstack.serving.loadtest import _Pool

    answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
               b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
               b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"]
    served = []

    async def handle(reader, writer):
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            n = int([ln for ln in head.decode().split("\r\n") if ln.lower().startswith("content-length")][0].split(":")[1])
            body = await reader.readexactly(n)
            served.append(body)
            answer = answers[(len(served) - 1) % len(answers)]
            writer.write(answer)
            await writer.drain()
            if b"close" in answer or len(served) == 4:  # the 4th: an idle-timeout close after answering
                break
        writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = _Pool(f"http://127.0.0.1:{port}", 2, timeout=5.0)
        req = pool.encode("/x", {"a": 1})
        statuses = []
        for _ in range(6):
            statuses.append(await pool.post(req))
            await asyncio.sleep(0.05)  # lets the client see a server-side close before reuse
        pool.close()
        server.close()
        return statuses

    statuses = asyncio.run(main())
    assert statuses == [200, 201, 503, 200, 201, 503]
    assert served == [b'{"a": 1}'] * 6


def test_serve_cli_passes_the_batching_settings(bundles, monkeypatch):
    import recstack.serving.server as server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda bundle, host, port, settings, **kw: seen.update(s=settings))
    res = CliRunner().invoke(cli_app, ["serve", str(bundles["v1"]), "--max-batch", "8", "--batch-wait-ms", "2",
                                       "--plan-fraction", "0.8", "--deadline-ms", "150"])
    assert res.exit_code == 0, res.output
    s = seen["s"]
    assert (s.max_batch, s.batch_wait_ms, s.plan_fraction, s.deadline_ms) == (8, 2.0, 0.8, 150.0)
    assert CliRunner().invoke(cli_app, ["serve", str(bundles["v1"]), "--max-batch", "0"]).exit_code == 2
