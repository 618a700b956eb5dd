"""`recstack loadtest URL`: open-loop load at a fixed rate against a loopback service.

Requests are sent on a fixed schedule (not "as fast as the last answer allows"), and latency is
measured from each request's scheduled time, so a stalled server shows up in the percentiles
instead of silently lowering the offered load. Bounded: a request count and a duration cap, and
only loopback addresses are accepted.

For http URLs the client is a lean HTTP/1.1 one on asyncio streams (keep-alive connections,
request bytes encoded before the clock starts, each answer read to its last byte and its
status checked). A general-purpose client costs ~3 ms of CPU and latency per request on a small
machine (measured: POST to a 405 endpoint at 100 QPS, p50 3.5 ms with httpx), which the load
generator, sharing the cores with the server, would otherwise charge to the server. https URLs
go through httpx.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import json
import socket
import subprocess
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from recstack.optional import needs

with needs("serve", "recstack.serving"):
    import httpx

MAX_DURATION = 600.0
MAX_REQUESTS = 1_000_000


def check_loopback(url: str) -> None:
    """Raise ValueError unless `url` is http(s) to a loopback address."""
    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError(f"loadtest: '{url}' is not an http(s) URL")
    try:
        infos = socket.getaddrinfo(u.hostname, None)
    except socket.gaierror as e:
        raise ValueError(f"loadtest: cannot resolve '{u.hostname}': {e}") from None
    addrs = {info[4][0] for info in infos}
    if not addrs or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs):
        raise ValueError(f"loadtest: only loopback targets are allowed; '{u.hostname}' resolves to {sorted(addrs)}")


def bundle_payloads(bundle: str | Path, n: int = 2000, seed: int = 0, k: int = 10,
                    known: float = 0.7, anonymous: float = 0.2) -> list[dict[str, Any]]:
    """Request bodies drawn from a bundle's ids: `known` share by user id, `anonymous` share by a
    real user's last 1-20 items, the rest cold start (no user, no history)."""
    bundle = Path(bundle)
    users = np.load(bundle / "users" / "ids.npy", allow_pickle=False)
    indptr = np.load(bundle / "users" / "indptr.npy", allow_pickle=False)
    hist = np.load(bundle / "users" / "items.npy", allow_pickle=False)
    items = np.load(bundle / "catalog" / "ids.npy", allow_pickle=False)
    rng = np.random.default_rng(seed)
    kinds = rng.choice(3, size=n, p=[known, anonymous, 1 - known - anonymous])
    who = rng.integers(0, len(users), size=n)
    lens = rng.integers(1, 21, size=n)
    out = []
    for kind, u, length in zip(kinds.tolist(), who.tolist(), lens.tolist(), strict=True):
        if kind == 0:
            out.append({"user_id": users[u].item(), "k": k})
        elif kind == 1:
            seq = hist[indptr[u] : indptr[u + 1]][-length:]
            out.append({"history": items[seq].tolist(), "k": k})
        else:
            out.append({"k": k})
    return out


@dataclass
class LoadReport:
    url: str
    rate: float
    duration_s: float
    sent: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    qps: float  # completed requests per second of wall time
    latency_ms: dict[str, float]  # p50, p95, p99, max, mean (from the scheduled send time)
    swap: dict[str, Any] | None = None
    p99_ms_by_second: list[float] = field(default_factory=list)  # by scheduled send second
    deadline_ms: float | None = None  # the service's deadline the answers are checked against
    late: int = 0  # requests answered (or failed) later than `deadline_ms` after their send time
    # the server's own counts over the run (deltas of its /metrics; None when unreadable):
    # /recommend outcomes by "outcome/reason", and the micro-batcher's batches and mean size
    server: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _HTTPError(Exception):
    """A malformed or cut-off answer from the server."""


class _Pool:
    """Keep-alive HTTP/1.1 connections to one host: POSTs of pre-encoded JSON bodies, answers
    read in full (Content-Length or chunked), at most `size` connections."""

    def __init__(self, url: str, size: int, timeout: float) -> None:
        u = urlparse(url)
        self.host, self.port = u.hostname, u.port or 80
        self.size, self.timeout, self.opened = size, timeout, 0
        self.idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = deque()
        self.free = asyncio.Semaphore(size)

    def encode(self, path: str, body: dict) -> bytes:
        """A complete request (no `X-Request-Start` stamp)."""
        head, data = self.encode_parts(path, body)
        return head + b"\r\n" + data

    def encode_parts(self, path: str, body: dict) -> tuple[bytes, bytes]:
        """(the head without its closing blank line, the body): `stamp` completes it."""
        data = json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n")
        return head.encode(), data

    @staticmethod
    def stamp(encoded: tuple[bytes, bytes], sent: float) -> bytes:
        """The request with `X-Request-Start: t=<Unix seconds>` (its scheduled send time): the
        server counts its deadline from then, socket-buffer time included."""
        head, data = encoded
        return b"%sX-Request-Start: t=%.6f\r\n\r\n%s" % (head, sent, data)

    async def open(self, n: int) -> None:
        """Open `n` connections ahead (before the clock starts)."""
        for _ in range(min(n, self.size)):
            self.idle.append(await asyncio.open_connection(self.host, self.port))
            self.opened += 1

    async def post(self, request: bytes) -> int:
        """Send one request, read its whole answer; the HTTP status."""
        async with self.free:
            conn = None
            while self.idle and conn is None:
                # oldest first: connections take turns, so none sits idle past the server's
                # keep-alive timeout; one the server closed anyway is dropped, not reused
                conn = self.idle.popleft()
                if conn[0].at_eof() or conn[1].is_closing():
                    conn[1].close()
                    conn = None
            if conn is None:
                conn = await asyncio.open_connection(self.host, self.port)
                self.opened += 1
            reader, writer = conn
            try:
                status, keep = await asyncio.wait_for(self._exchange(reader, writer, request), self.timeout)
            except BaseException:
                writer.close()
                raise
            if keep:
                self.idle.append(conn)
            else:
                writer.close()
            return status

    @staticmethod
    async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        request: bytes) -> tuple[int, bool]:
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise _HTTPError(f"bad status line {lines[0]!r}")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif "content-length" in headers:
            await reader.readexactly(int(headers["content-length"]))
        else:
            raise _HTTPError("answer without a length")
        return int(parts[1]), headers.get("connection", "").lower() != "close"

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def _run(url: str, path: str, payloads: Sequence[dict], rate: float, duration: float,
               max_requests: int, concurrency: int, timeout: float,
               swap: dict[str, Any] | None, client: str, deadline_ms: float | None = None) -> LoadReport:
    n = min(max_requests, int(rate * duration))
    lat = np.full(n, np.nan)
    kinds: Counter[str] = Counter()
    ok = 0
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    lean = client == "lean" and urlparse(url).scheme == "http"
    pool = _Pool(url, concurrency, timeout) if lean else None
    encoded = [pool.encode_parts(path, b) for b in payloads] if lean else []
    if lean:  # connections a steady 100 QPS keeps busy, opened before the clock starts
        await pool.open(4)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        before = await _server_counts(client)
        start = time.perf_counter() + 0.05
        wall_start = time.time() + (start - time.perf_counter())

        async def one(j: int) -> None:
            nonlocal ok
            due = start + j / rate
            if lean:
                try:
                    status = await pool.post(pool.stamp(encoded[j % len(encoded)], wall_start + j / rate))
                    if status == 200:
                        ok += 1
                    else:
                        kinds[f"http {status}"] += 1
                except TimeoutError:  # before OSError, its base class
                    kinds["Timeout"] += 1
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                        _HTTPError) as e:
                    kinds[type(e).__name__] += 1
                lat[j] = time.perf_counter() - due
                return
            async with sem:
                try:
                    r = await client.post(path, json=payloads[j % len(payloads)])
                    if r.status_code == 200:
                        ok += 1
                    else:
                        kinds[f"http {r.status_code}"] += 1
                except httpx.HTTPError as e:
                    kinds[type(e).__name__] += 1
            lat[j] = time.perf_counter() - due

        swap_result: dict[str, Any] | None = None

        async def do_swap() -> None:
            nonlocal swap_result
            await asyncio.sleep(max(0.0, start + swap["at"] - time.perf_counter()))
            t0 = time.perf_counter()
            body = {"path": str(swap["path"])} if swap.get("path") else {}
            try:
                r = await client.post("/admin/reload", json=body, timeout=120.0,
                                      headers={"X-Admin-Token": swap.get("token") or ""})
                swap_result = {"at_s": swap["at"], "status": r.status_code, "seconds": time.perf_counter() - t0,
                               "response": r.json()}
            except httpx.HTTPError as e:
                swap_result = {"at_s": swap["at"], "status": None, "error": repr(e)}

        tasks = []
        swap_task = asyncio.create_task(do_swap()) if swap else None
        for j in range(n):
            delay = start + j / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(j)))
        await asyncio.gather(*tasks)
        if swap_task is not None:
            await swap_task
        wall = time.perf_counter() - start
        after = await _server_counts(client)
    if pool is not None:
        pool.close()
    ms = lat[np.isfinite(lat)] * 1e3
    pct = {f"p{q}": round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)} if ms.size else {}
    if ms.size:
        pct |= {"max": round(float(ms.max()), 3), "mean": round(float(ms.mean()), 3)}
    errors = sum(kinds.values())
    second = (np.arange(n) / rate).astype(int)
    by_second = [round(float(np.percentile(lat[(second == s) & np.isfinite(lat)] * 1e3, 99)), 2)
                 for s in range(int(second.max(initial=-1)) + 1) if np.isfinite(lat[second == s]).any()]
    late = int((~(lat <= deadline_ms / 1e3)).sum()) if deadline_ms else 0  # NaN (never answered) counts
    server = None
    if before is not None and after is not None:
        server = {key: round(after.get(key, 0.0) - before.get(key, 0.0), 6) for key in after}
        batches = server.get("batches", 0.0)
        server["mean_batch_size"] = round(server.get("batched_requests", 0.0) / batches, 3) if batches else None
    return LoadReport(url, rate, round(wall, 3), n, ok, errors, dict(kinds), round((ok + errors) / wall, 2),
                      pct, swap_result, by_second, deadline_ms, late, server)


def _parse_counts(text: str) -> dict[str, float]:
    """The counters a load test reports from a service's Prometheus text: /recommend outcomes
    ("full/", "degraded/skip_fine", ..., "shed/deadline") and the batcher's batches."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("recstack_recommend_outcomes_total{"):
            labels, _, value = line.partition("} ")
            kv = dict(part.split("=", 1) for part in labels.split("{", 1)[1].split(","))
            out[f"{kv['outcome'].strip(chr(34))}/{kv['reason'].strip(chr(34))}"] = float(value)
        elif line.startswith("recstack_batch_size_count "):
            out["batches"] = float(line.split()[1])
        elif line.startswith("recstack_batch_size_sum "):
            out["batched_requests"] = float(line.split()[1])
    return out


async def _server_counts(client: Any) -> dict[str, float] | None:
    try:
        r = await client.get("/metrics", timeout=10.0)
        return _parse_counts(r.text) if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError, KeyError):
        return None


def run_loadtest(url: str, payloads: Sequence[dict], rate: float = 100.0, duration: float = 30.0,
                 max_requests: int = 100_000, path: str = "/recommend", concurrency: int = 64,
                 timeout: float = 10.0, swap: dict[str, Any] | None = None,
                 client: str = "lean", deadline_ms: float | None = 200.0) -> LoadReport:
    """Send `min(max_requests, rate * duration)` POSTs of `payloads` (cycled) to `url + path` at
    `rate` per second. `swap` = {"at": seconds, "path": bundle or None, "token": admin token}
    triggers a hot swap during the run. `client`: "lean" (the asyncio HTTP/1.1 client, http
    URLs) or "httpx" (for comparison; always used for https). `deadline_ms`: the service's
    deadline (`recstack serve`'s default 200 ms); the report counts requests answered later
    (`late`). The lean client stamps each request with `X-Request-Start` (its scheduled time).
    The report's `server` holds the service's own counts over the run (outcomes, batches)."""
    check_loopback(url)
    if client not in ("lean", "httpx"):
        raise ValueError(f"loadtest: client must be 'lean' or 'httpx', got {client!r}")
    if not payloads:
        raise ValueError("loadtest: no payloads")
    if not 0 < rate <= 10_000:
        raise ValueError(f"loadtest: rate must be in (0, 10000], got {rate}")
    if not 0 < duration <= MAX_DURATION:
        raise ValueError(f"loadtest: duration must be in (0, {MAX_DURATION:.0f}] s, got {duration}")
    if not 1 <= max_requests <= MAX_REQUESTS:
        raise ValueError(f"loadtest: max_requests must be in [1, {MAX_REQUESTS}], got {max_requests}")
    enabled = gc.isenabled()
    gc.disable()  # a collector pause in the load generator would be charged to the server
    try:
        return asyncio.run(_run(url.rstrip("/"), path, payloads, rate, duration, max_requests,
                                concurrency, timeout, swap, client, deadline_ms))
    finally:
        if enabled:
            gc.enable()


def read_payloads(path: str | Path) -> list[dict[str, Any]]:
    """Request bodies from a JSON-lines file."""
    out = []
    for j, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{j}: not JSON ({e})") from None
    return out


def free_port() -> int:
    """A free TCP port on the loopback interface (for a benchmark's own server)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> float:
    """Poll `url`/ready until it answers 200 -> seconds waited; exits if the server process
    `proc` dies or the timeout passes."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=1.0).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server not ready in time")
