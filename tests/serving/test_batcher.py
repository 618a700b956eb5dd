"""The micro-batcher (issue 22): concurrent submits become one call, results and errors go back to
their own request, max batch and max wait are honoured, and a request whose deadline ran out
while it queued is shed instead of computed. Deadlines use a fake clock; the one real-time test
(max wait) only checks a lower bound and a generous upper one."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi.testclient import TestClient

from recstack.serving.app import ServiceSettings, create_app
from recstack.serving.batcher import BatchStats, MicroBatcher, Shed


class Recorder:
    """A batched function that doubles numbers, fails on negative ones, and records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, list[int], list[float | None]]] = []

    def __call__(self, key, requests, deadlines):
        self.calls.append((key, list(requests), list(deadlines)))
        return [ValueError(f"bad {r}") if r < 0 else 2 * r for r in requests]


async def submit_all(b: MicroBatcher, values, key="k", **kw):
    return await asyncio.gather(*(b.submit(key, v, **kw) for v in values), return_exceptions=True)


def test_concurrent_requests_become_one_call_with_results_split_back():
    run, stats = Recorder(), []
    b = MicroBatcher(run, max_batch=32, on_batch=stats.append)
    out = asyncio.run(submit_all(b, [1, 2, 3, 4, 5]))
    assert out == [2, 4, 6, 8, 10]
    assert [len(c[1]) for c in run.calls] == [5]
    assert stats[0].size == 5 and stats[0].shed == 0 and len(stats[0].waits) == 5


def test_batches_run_on_an_executor_thread_when_given_one():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    threads = []

    def run(key, requests, deadlines):
        threads.append(threading.current_thread().name)
        return [ValueError("bad") if r < 0 else r * 3 for r in requests]

    with ThreadPoolExecutor(1, thread_name_prefix="batch-test") as pool:
        out = asyncio.run(submit_all(MicroBatcher(run, executor=pool), [1, -2, 3]))
    assert out[0] == 3 and out[2] == 9 and isinstance(out[1], ValueError)
    assert threads and all(t.startswith("batch-test") for t in threads)


def test_max_batch_is_honoured():
    run = Recorder()
    out = asyncio.run(submit_all(MicroBatcher(run, max_batch=4), list(range(10))))
    assert out == [2 * v for v in range(10)]
    assert [len(c[1]) for c in run.calls] == [4, 4, 2]
    assert [c[1] for c in run.calls][0] == [0, 1, 2, 3]  # first come, first served


def test_a_failing_request_does_not_fail_the_others():
    run = Recorder()
    out = asyncio.run(submit_all(MicroBatcher(run), [1, -1, 3]))
    assert out[0] == 2 and out[2] == 6
    assert isinstance(out[1], ValueError) and "bad -1" in str(out[1])
    assert len(run.calls) == 1


def test_a_call_that_raises_reaches_every_request_of_that_call_only():
    def run(key, requests, deadlines):
        if key == "broken":
            raise RuntimeError("model crashed")
        return [r + 1 for r in requests]

    async def main():
        b = MicroBatcher(run)
        return await asyncio.gather(b.submit("broken", 1), b.submit("ok", 2), b.submit("broken", 3),
                                    return_exceptions=True)

    out = asyncio.run(main())
    assert isinstance(out[0], RuntimeError) and isinstance(out[2], RuntimeError) and out[1] == 3


def test_requests_of_different_keys_never_share_a_call():
    run = Recorder()

    async def main():
        b = MicroBatcher(run)
        return await asyncio.gather(b.submit("v1", 1), b.submit("v2", 2), b.submit("v1", 3))

    assert asyncio.run(main()) == [2, 4, 6]
    assert sorted((c[0], c[1]) for c in run.calls) == [("v1", [1, 3]), ("v2", [2])]


def test_max_wait_holds_a_batch_open_for_later_requests():
    run = Recorder()

    async def main(wait_ms, gap_s):
        b = MicroBatcher(run, max_wait_ms=wait_ms)
        first = asyncio.create_task(b.submit("k", 1))
        await asyncio.sleep(gap_s)
        second = asyncio.create_task(b.submit("k", 2))
        t0 = time.perf_counter()
        await asyncio.gather(first, second)
        return time.perf_counter() - t0

    # held open 400 ms: the request sent 20 ms after the first joins its batch
    asyncio.run(main(400.0, 0.02))
    assert [c[1] for c in run.calls] == [[1, 2]]
    # no wait: the first request runs alone, at once
    run.calls.clear()
    asyncio.run(main(0.0, 0.05))
    assert [c[1] for c in run.calls] == [[1], [2]]

    async def lone(wait_ms):
        b = MicroBatcher(run, max_wait_ms=wait_ms)
        t0 = time.perf_counter()
        await b.submit("k", 5)
        return time.perf_counter() - t0

    assert 0.1 <= asyncio.run(lone(100.0)) < 5.0  # a lone request waits out max_wait, no longer than needed


def test_a_request_past_its_deadline_is_shed_not_computed():
    """Fake clock at 100 s: a request with 3 ms left, needing 7 ms for the cheapest answer, is
    shed when its batch forms; one with 1 s left and one without a deadline are computed."""
    run, stats = Recorder(), []
    b = MicroBatcher(run, clock=lambda: 100.0, on_batch=stats.append)

    async def main():
        return await asyncio.gather(b.submit("k", 1, deadline=100.003, min_left_ms=7.0),
                                    b.submit("k", 2, deadline=101.0, min_left_ms=7.0),
                                    b.submit("k", 3), return_exceptions=True)

    out = asyncio.run(main())
    assert isinstance(out[0], Shed) and out[0].left_ms == pytest.approx(3.0)
    assert out[1:] == [4, 6]
    assert run.calls[0][1] == [2, 3] and run.calls[0][2] == [101.0, None]  # deadlines reach the call
    assert stats[0].shed == 1 and stats[0].size == 2


def test_process_sheds_whatever_expired_while_it_queued():
    """A request queued at t=0 with a 200 ms deadline, its batch formed at t=0.5 s (the loop was
    busy): shed, never run."""
    now = [0.0]
    run = Recorder()
    b = MicroBatcher(run, clock=lambda: now[0])

    async def main():
        task = asyncio.ensure_future(b.submit("k", 1, deadline=0.2, min_left_ms=7.0))
        now[0] = 0.5
        return await asyncio.gather(task, return_exceptions=True)

    out = asyncio.run(main())
    assert isinstance(out[0], Shed) and out[0].left_ms < 0 and run.calls == []


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Recorder(), max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(Recorder(), max_wait_ms=-1)
    with pytest.raises(ValueError, match="max_batch"):
        ServiceSettings(max_batch=0)
    assert isinstance(BatchStats(1, 0.0, 0, [0.0]).waits, list)


# ---- through the service --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from conftest import write_group_walk_log
    from test_serving_deadline import RECIPE
    from typer.testing import CliRunner

    from recstack.cli import app as cli_app

    root = tmp_path_factory.mktemp("batcher")
    write_group_walk_log(root / "log.csv")
    res = CliRunner().invoke(cli_app, ["export", str(root / "v1"), "--data", f"csv:{root / 'log.csv'}",
                                       "--version", "v1", *RECIPE])
    assert res.exit_code == 0, res.output
    return root / "v1"


BODIES = [{"user_id": "u1", "k": 5, "explain": True}, {"user_id": "u7"}, {"history": [115, "116", 99999]}, {},
          {"user_id": "u2", "filters": {"exclude_items": [101, 102]}}, {"user_id": "u30", "k": 12}]


def comparable(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("timings_ms", "request_id")}


@pytest.mark.usefixtures("one_torch_thread")
def test_batched_service_answers_like_the_unbatched_one(bundle):
    answers = {}
    for max_batch in (1, 16):
        with TestClient(create_app(bundle, ServiceSettings(max_batch=max_batch))) as c:
            answers[max_batch] = [c.post("/recommend", json=b).json() for b in BODIES]
            metrics = c.get("/metrics").text
        if max_batch > 1:
            assert "recstack_batch_size_count 6.0" in metrics
    for a, b in zip(answers[1], answers[16], strict=True):
        a, b = comparable(a), comparable(b)
        for x, y in zip(a.pop("items"), b.pop("items"), strict=True):
            assert x["item_id"] == y["item_id"] and x["rule"] == y["rule"]
            assert (x["score"] is None) == (y["score"] is None)
            if x["score"] is not None:
                assert x["score"] == pytest.approx(y["score"], abs=1e-5)
        assert a == b


@pytest.mark.usefixtures("one_torch_thread")
def test_request_start_header_counts_time_before_the_server_read_it(bundle):
    """`X-Request-Start` 199 ms old against a 200 ms deadline: shed (503) before any work; a stamp
    hours old is clamped to one deadline (still shed, not an error); a fresh stamp is served;
    with `trust_request_start=False` the header is ignored."""
    with TestClient(create_app(bundle, ServiceSettings(deadline_ms=200.0))) as c:
        old = c.post("/recommend", json={"user_id": "u1"}, headers={"X-Request-Start": f"t={time.time() - 0.199:.6f}"})
        assert old.status_code == 503 and old.headers["retry-after"] == "1" and "shed" in old.json()["detail"]
        ancient = c.post("/recommend", json={"user_id": "u1"}, headers={"X-Request-Start": f"t={time.time() - 9999:.3f}"})
        assert ancient.status_code == 503
        ms = c.post("/recommend", json={"user_id": "u1"}, headers={"X-Request-Start": f"{(time.time() - 0.199) * 1e3:.0f}"})
        assert ms.status_code == 503  # milliseconds are understood too
        fresh = c.post("/recommend", json={"user_id": "u1"}, headers={"X-Request-Start": f"t={time.time():.6f}"})
        assert fresh.status_code == 200 and fresh.json()["degraded"] is None
        junk = c.post("/recommend", json={"user_id": "u1"}, headers={"X-Request-Start": "soon"})
        assert junk.status_code == 200
    with TestClient(create_app(bundle, ServiceSettings(deadline_ms=200.0, trust_request_start=False))) as c:
        old = c.post("/recommend", json={"user_id": "u1"}, headers={"X-Request-Start": f"t={time.time() - 0.199:.6f}"})
        assert old.status_code == 200


def test_batch_size_is_capped_by_measured_time_per_request():
    """A fake clock makes every batch take 10 ms per request: with max_batch_ms 30, after the
    first batch (measured) later batches take 3 requests at most."""
    now = [0.0]

    def run(key, requests, deadlines):
        now[0] += 0.010 * len(requests)
        return list(requests)

    b = MicroBatcher(run, max_batch=32, max_batch_ms=30.0, clock=lambda: now[0])
    sizes = []
    b.on_batch = lambda s: sizes.append(s.size)
    assert b.limit() == 32  # nothing measured yet
    out = asyncio.run(submit_all(b, list(range(10))))
    assert out == list(range(10))
    assert sizes[0] == 10 and b.per_request_s == pytest.approx(0.010)
    assert b.limit() == 3
    sizes.clear()
    asyncio.run(submit_all(b, list(range(7))))
    assert sizes == [3, 3, 1]
    with pytest.raises(ValueError, match="max_batch_ms"):
        MicroBatcher(run, max_batch_ms=0)
