"""Issue 22: bad input never gets a 500 (NaN / Infinity, lone surrogates, NUL in a reload path,
a corrupt bundle whose hashes were recomputed), request bodies are capped (413) and 422 answers
quote inputs only briefly, /recommend returns k items or says why, and items carry the
catalogue's title and categories. Each test fails on 6876c74."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import schemathesis
import torch
from conftest import write_group_walk_log
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from typer.testing import CliRunner

from recstack.cli import app as cli_app
from recstack.serving.app import ServiceSettings, create_app
from recstack.serving.bundle import load_bundle, write_bundle

TOKEN = "s3cret"
RECIPE = ["--set", "two_tower.epochs=1", "--set", "two_tower.dim=8", "--set", "two_tower.id_dim=8",
          "--set", "two_tower.history_dim=8", "--set", "two_tower.tower=[16]", "--set", "itemknn.k=10",
          "--set", "index.hnsw_m=8", "--set", "index.ef_construction=32"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """v1: 60 users x 45 items (three groups of 15) exported by the CLI; meta: the same assets
    with titles, three categories, small stage pools (default_k 5) and a category cap of 4."""
    root = tmp_path_factory.mktemp("robust")
    write_group_walk_log(root / "log.csv")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    res = CliRunner().invoke(cli_app, ["export", str(root / "v1"), "--data", f"csv:{root / 'log.csv'}",
                                       "--version", "v1", *RECIPE])
    torch.set_num_threads(n)
    assert res.exit_code == 0, res.output
    b = load_bundle(root / "v1")
    a, cat = b.assets, b.assets.catalog
    group = (np.asarray(cat.ids, np.int64) - 100) // 15
    cat.titles = np.asarray([f"Movie {i} (199{i % 10})" for i in cat.ids.tolist()], dtype=object)
    cat.category_names = np.asarray(["g0", "g1", "g2"])
    cat.category_bits = np.left_shift(np.uint64(1), group.astype(np.uint64))
    cat.primary_category = group.astype(np.int32)
    cfg = b.config
    cfg.coarse.keep, cfg.fine.keep, cfg.default_k, cfg.max_k = 10, 5, 5, 40
    cfg.rerank.category_cap, cfg.rerank.mmr_lambda = 4, 1.0
    write_bundle(root / "meta", cfg, cat, a.users, a.models, a.indexes, a.matrices, a.extras, version="meta")
    return {"root": root, "v1": root / "v1", "meta": root / "meta"}


@pytest.fixture()
def client(bundles):
    app = create_app(bundles["v1"], ServiceSettings(admin_token=TOKEN, warmup_requests=0))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def assert_one_line(r, status: int) -> None:
    assert r.status_code == status, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and len(detail) <= 600, detail


# ---- defect 1: no 500 on NaN / Infinity, lone surrogates, NUL paths, corrupt bundles --------------
BAD_JSON = [b'{"k": NaN}', b'{"user_id": Infinity, "k": 5}', b'{"context": {"x": -Infinity}}',
            b'{"k": 1e999}', b'{"user_id": "\\ud800"}', b'{"history": ["a\\udfff"]}',
            b'{"context": {"\\ud800": 1}}', b'{"session_id": "\xed\xa0\x80"}', b"[" * 50_000]


@pytest.mark.parametrize("path", ["/recommend", "/feedback", "/admin/reload"])
@pytest.mark.parametrize("body", BAD_JSON, ids=range(len(BAD_JSON)))
def test_nan_infinity_and_lone_surrogates_are_a_400(client, path, body):
    r = client.post(path, content=body, headers={"content-type": "application/json", "X-Admin-Token": TOKEN})
    assert_one_line(r, 400)
    assert "not valid JSON" in r.json()["detail"]
    assert client.post("/recommend", json={"user_id": "u1", "k": 3}).status_code == 200


def test_feedback_reward_nan_is_a_400_not_a_500(client):
    r = client.post("/feedback", content=b'{"user_id": "u1", "reward": NaN}',
                    headers={"content-type": "application/json"})
    assert_one_line(r, 400)


def test_reload_with_a_nul_in_the_path_is_a_4xx(client, bundles):
    r = client.post("/admin/reload", json={"path": f"{bundles['v1']}\x00/x"}, headers={"X-Admin-Token": TOKEN})
    assert_one_line(r, 422)
    assert client.post("/recommend", json={"user_id": "u1"}).json()["bundle_version"] == "v1"


def _rehash(bundle) -> None:
    """Recompute every file's hash in the manifest: the integrity check passes, the files may not load."""
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"] = {f: hashlib.sha256((bundle / f).read_bytes()).hexdigest() for f in m["files"]}
    (bundle / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("victim,damage", [
    ("models/two_tower/weights.safetensors", "garbage"),
    ("indexes/two_tower/index.faiss", "garbage"),
    ("catalog/popularity.npy", "truncate"),
    ("users/indptr.npy", "shuffle"),
    ("extras/fine_ctr/weights.safetensors", "garbage"),
])
def test_reload_of_a_corrupt_bundle_with_recomputed_hashes_keeps_the_old_one(client, bundles, victim, damage):
    bad = bundles["root"] / f"corrupt_{victim.replace('/', '_')}"
    if bad.exists():
        shutil.rmtree(bad)
    shutil.copytree(bundles["v1"], bad)
    f = bad / victim
    data = f.read_bytes()
    if damage == "garbage":
        f.write_bytes(b"\x00garbage\xff" * 16)
    elif damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    else:  # a well-formed .npy whose values break the store: user offsets reversed
        arr = np.load(f)
        np.save(f, arr[::-1].copy())
    _rehash(bad)
    r = client.post("/admin/reload", json={"path": str(bad)}, headers={"X-Admin-Token": TOKEN})
    assert_one_line(r, 422)
    assert "still serving the previous one" in r.json()["detail"]
    ok = client.post("/recommend", json={"user_id": "u1", "k": 3})
    assert ok.status_code == 200 and ok.json()["bundle_version"] == "v1"
    assert client.get("/ready").json()["bundle_version"] == "v1"


def test_bad_json_keeps_the_keep_alive_connection_of_a_real_server(bundles):
    """Through uvicorn: a NaN body and a lone surrogate get a 400 and the same keep-alive
    connection then serves a valid request."""
    import http.client
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    app = create_app(bundles["v1"], ServiceSettings(warmup_requests=0))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        statuses = []
        for body in (b'{"k": NaN}', b'{"user_id": "\ud800"}', b'{"user_id": "u1", "k": 3}'):
            conn.request("POST", "/recommend", body=body, headers={"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            statuses.append((resp.status, resp.getheader("connection")))
        assert statuses == [(400, None), (400, None), (200, None)], statuses
        conn.close()
    finally:
        server.should_exit = True
        thread.join(timeout=15)


# ---- defect 2: a body limit (413) and short 422 answers -------------------------------------------
def test_oversized_bodies_get_a_413(bundles):
    big = json.dumps({"history": list(range(300_000))}).encode()  # ~2.3 MB, over the 1 MiB default
    with TestClient(create_app(bundles["v1"], ServiceSettings(warmup_requests=0)),
                    raise_server_exceptions=False) as c:
        for path in ("/recommend", "/feedback", "/admin/reload"):
            assert_one_line(c.post(path, content=big, headers={"content-type": "application/json"}), 413)

        def chunks():  # no Content-Length: counted while read
            for _ in range(40):
                yield b" " * 65536

        assert_one_line(c.post("/recommend", content=chunks(), headers={"content-type": "application/json"}), 413)
        assert c.post("/recommend", json={"history": list(range(100, 145)), "k": 5}).status_code == 200
    small = ServiceSettings(warmup_requests=0, max_body_bytes=64)
    with TestClient(create_app(bundles["v1"], small), raise_server_exceptions=False) as c:
        assert_one_line(c.post("/recommend", json={"history": list(range(100, 145))}), 413)
        assert c.post("/recommend", json={"user_id": "u1", "k": 3}).status_code == 200
    with pytest.raises(ValueError):
        ServiceSettings(max_body_bytes=0)


def test_422_quotes_only_a_short_part_of_the_input(client):
    for bad in ({"user_id": "x" * 5000}, {"history": [[1] * 3000]}, {"filters": {"exclude_items": [None] * 1000}},
                {"context": {"k" * 5000: 1}}):
        r = client.post("/recommend", json=bad)
        assert r.status_code == 422, r.text[:200]
        assert len(r.content) < 3000, len(r.content)
        assert isinstance(r.json()["detail"], list)


# ---- defect 3: k items, or how many and why ------------------------------------------------------
def test_recommend_returns_k_when_the_catalogue_allows(bundles):
    with TestClient(create_app(bundles["meta"], ServiceSettings(warmup_requests=0))) as c:
        # pools sized for default_k 5 (fine keep 5) and a cap of 4 per category over 3 categories
        for body in ({"k": 12}, {"history": [100, 101], "k": 12}, {"user_id": "u1", "k": 11}):
            r = c.post("/recommend", json=body).json()
            assert len(r["items"]) == body["k"], (body, len(r["items"]))
            assert r["returned"] == body["k"] and r["note"] is None, r
            assert not any(it["item_id"] in body.get("history", ()) for it in r["items"])
        # the cap allows 4 per category: 12 of the 45 items; u1 (group g1) has seen 12 of g1's 15
        for body, n in (({"k": 20}, 12), ({"user_id": "u1", "k": 12}, 11)):
            r = c.post("/recommend", json=body).json()
            assert r["returned"] == len(r["items"]) == n and "category cap (4 items per category)" in r["note"], r
        r = c.post("/recommend", json={"user_id": "u4", "k": 10, "filters": {"categories": ["g1"]}}).json()
        assert r["returned"] == 3 and "only 3 catalogue items are eligible" in r["note"], r
        r = c.post("/recommend", json={"k": 100}).json()  # over max_k 40: clamped, and said so
        assert r["returned"] == 12 and r["note"]


def test_recommend_without_a_cap_fills_k(client):
    body = client.post("/recommend", json={"user_id": "u1", "k": 33}).json()  # 45 items, 12 seen
    assert len(body["items"]) == 33 and body["returned"] == 33 and body["note"] is None
    body = client.post("/recommend", json={"user_id": "u1", "k": 40}).json()
    assert len(body["items"]) == 33 and body["returned"] == 33
    assert "only 33 catalogue items are eligible" in body["note"]


# ---- defect 4: title and other metadata of each item ---------------------------------------------
def test_items_carry_the_catalogue_title_and_categories(bundles):
    with TestClient(create_app(bundles["meta"], ServiceSettings(warmup_requests=0))) as c:
        items = c.post("/recommend", json={"user_id": "u1", "k": 5}).json()["items"]
        for it in items:
            i = it["item_id"]
            assert it["title"] == f"Movie {i} (199{i % 10})" and it["categories"] == [f"g{(i - 100) // 15}"]
            assert "score" in it
        sim = c.get("/items/101/similar", params={"k": 3}).json()["items"]
        assert sim and all(s["title"] == f"Movie {s['item_id']} (199{s['item_id'] % 10})" for s in sim)
    with TestClient(create_app(bundles["v1"], ServiceSettings(warmup_requests=0))) as c:
        it = c.post("/recommend", json={"user_id": "u1", "k": 3}).json()["items"][0]
        assert "title" not in it and "categories" not in it  # this bundle's data had none


def test_catalog_keeps_the_titles_of_the_training_data(tmp_path):
    from recstack.data import from_raw
    from recstack.data.dataset import FeatureTable
    from recstack.pipeline.catalog import ItemCatalog

    data = from_raw(np.array([1, 1, 2, 3]), np.array([10, 11, 12, 10]), timestamp=np.arange(4))
    titles = [f"title of {i}" for i in data.item_vocab.raw.tolist()]
    data.item_features = FeatureTable(n=data.n_items, text={"title": np.asarray(titles, dtype=object)})
    cat = ItemCatalog.from_interactions(data, None)
    assert cat.titles.tolist() == titles
    again = ItemCatalog.load(cat.save(tmp_path / "catalog"))
    assert again.titles.tolist() == titles


# ---- defect 5: schemathesis, with the NaN / surrogate / oversized cases above -------------------
_LIMIT = 4096
_APP: dict[str, TestClient] = {}


@pytest.fixture()
def api_schema(bundles):
    app = create_app(bundles["v1"], ServiceSettings(admin_token=TOKEN, warmup_requests=0, max_body_bytes=_LIMIT))
    app.state.holder.load()  # the ASGI transport does not run the lifespan
    _APP["client"] = TestClient(app, raise_server_exceptions=False)  # the same app, for raw bodies
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


def poisoned(body: dict) -> list[bytes]:
    """A generated body with a NaN, an Infinity, a lone surrogate (as value and as key) in place
    of its first fields: JSON the service must refuse with a 400."""
    out = []
    for key in list(body)[:3]:
        for bad in (float("nan"), float("-inf"), "\ud800"):
            out.append(json.dumps({**body, key: bad}).encode())  # json.dumps writes NaN / \ud800
    out.append(json.dumps({**body, "\udfff": 1}).encode())
    return out


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_schemathesis_finds_no_server_error(case):
    response = case.call(headers={"X-Admin-Token": TOKEN})
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])
    if case.method.upper() != "POST" or not isinstance(case.body, dict):
        return
    c, path = _APP["client"], case.formatted_path
    h = {"content-type": "application/json", "X-Admin-Token": TOKEN}
    for raw in poisoned(case.body):
        r = c.post(path, content=raw, headers=h)
        assert r.status_code == (413 if len(raw) > _LIMIT else 400), (path, raw[:200], r.status_code, r.text[:300])
    r = c.post(path, content=json.dumps(case.body).encode() + b" " * _LIMIT, headers=h)  # oversized
    assert r.status_code == 413, (path, r.status_code, r.text[:300])
