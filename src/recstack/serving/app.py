"""The HTTP service (FastAPI): `create_app(bundle_path)`; `recstack serve` runs it with uvicorn.

    POST /recommend              user id and/or recent items, k, filters, context -> items + trace
    GET  /items/{item_id}/similar
    GET  /health                 liveness (the process answers)
    GET  /ready                  readiness (a bundle is loaded and the server is not draining)
    GET  /metrics                Prometheus
    POST /admin/reload           hot swap to a bundle (needs the admin token)
    POST /feedback               a click / reward on a recommendation (A/B event log)
    GET  /experiment             the A/B experiment served (variants, shares, bundle versions)
    GET  /openapi.json, /docs    the schema

A/B: `create_app(experiment=ABTestConfig(...))` serves several bundles, one per variant; a
request goes to the variant of its hashed user id (or session id, else request id), see
`recstack.serving.abtest`. Without an A/B test the one bundle is the variant `default`.

`create_app` builds the shared `_Service` (settings, A/B test, one `_Lane` per variant, metrics)
and registers the routes group by group: `_add_recommend_route`, `_add_abtest_routes`
(/feedback, /experiment), `_add_similar_route`, `_add_probe_routes` (/health, /ready, /metrics)
and `_add_admin_routes` (/admin/reload).
"""

from __future__ import annotations

import gc
import hmac
import importlib.util
import json
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from recstack.optional import needs

with needs("serve", "recstack.serving"):
    from fastapi import FastAPI, Header, HTTPException, Query, Request
    from fastapi import Path as PathParam
    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from fastapi.routing import APIRoute
    from prometheus_client import CONTENT_TYPE_LATEST

from recstack import __version__
from recstack.pipeline.pipeline import DEGRADED
from recstack.serving.abtest import ABTestConfig, EventLog, now
from recstack.serving.batcher import MicroBatcher, Shed
from recstack.serving.bundle import Bundle, BundleError
from recstack.serving.metrics import ARRIVAL, MetricsMiddleware, ServiceMetrics
from recstack.serving.schemas import (
    MAX_K,
    ABTestInfo,
    ErrorBody,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    Ready,
    RecommendRequest,
    RecommendResponse,
    ReloadRequest,
    ReloadResponse,
    SimilarResponse,
)
from recstack.serving.state import BundleHolder, SwapInProgress


@dataclass
class ServiceSettings:
    """Service options.

    Args:
        admin_token: enables POST /admin/reload for requests carrying it in `X-Admin-Token`
            (None = hot swap over HTTP disabled).
        verify_bundle: check every bundle file's hash on load.
        warmup_requests: requests run through a new bundle before it takes traffic.
        event_log: JSON-lines file that gets one line per /recommend answer (`impression`) and
            per /feedback call (`feedback`), written by a background thread; None = no log.
        bundle_roots: directories POST /admin/reload may load bundles from (a path must resolve,
            symlinks and `..` followed, to somewhere strictly inside one); None = the parent
            directory of each served bundle.
        max_body_bytes: largest request body accepted; a larger one is answered 413 before it
            is read (a /recommend body is a few hundred bytes; 1 MiB leaves room for 1000-id lists).
        deadline_ms: latency budget of a /recommend request, counted from its arrival (time
            waiting in the server's queue included). Short of time, the pipeline skips its
            costliest stages (the answer's `degraded` says which); with less left than the
            cheapest answer costs, the request is shed: 503 with `Retry-After`. None = no deadline.
        retry_after_s: the `Retry-After` header of a shed request.
        max_batch: dynamic micro-batching of concurrent /recommend requests: at most this many
            run through the pipeline in one batched call (`Pipeline.run_batch`); 1 = every
            request runs alone (`Pipeline.run`).
        batch_wait_ms: how long a batch is held open for more requests (0: it takes what has
            queued when the event loop has read all pending requests; see
            `recstack.serving.batcher`).
        max_batch_ms: a batch takes at most this much work at the measured cost per request
            (so it holds the event loop that long at most; None: `max_batch` only).
        batch_thread: run the batched pipeline calls on one worker thread, so the event loop
            keeps reading, shedding and answering requests while a batch computes (torch and
            Faiss release the GIL); False: on the event loop itself (measured on 2 shared cores
            at 300 QPS, one run each: 0 vs 59 answers past the deadline, p99 126 vs 141 ms).
        plan_fraction: the pipeline plans its stages to be done this fraction of the deadline
            after arrival (the rest of the deadline is headroom: the answer's rendering and
            write, the batch it shares the loop with, a scheduler that takes the core away);
            shedding still waits for the whole deadline. Under sustained overload the queue
            then settles near this point instead of at the deadline (a standing-queue target,
            as in CoDel). 1.0: plan to the deadline itself.
        trust_request_start: count a request's deadline from its `X-Request-Start` header
            (`t=<Unix seconds>`, as nginx and the load test send it) when that is earlier than
            the moment the server read it, so time spent in the kernel's socket buffer while
            the server was busy counts too; at most one deadline earlier.
    """

    admin_token: str | None = None
    verify_bundle: bool = True
    warmup_requests: int = 10
    event_log: str | Path | None = None
    bundle_roots: tuple[str | Path, ...] | None = None
    max_body_bytes: int = 1 << 20
    deadline_ms: float | None = 200.0
    retry_after_s: int = 1
    max_batch: int = 32
    batch_wait_ms: float = 0.0
    max_batch_ms: float | None = 50.0
    batch_thread: bool = True
    plan_fraction: float = 0.5
    trust_request_start: bool = True

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be >= 1, got {self.max_body_bytes}")
        if self.deadline_ms is not None and not 0 < self.deadline_ms < 1e7:
            raise ValueError(f"deadline_ms must be > 0 (or None), got {self.deadline_ms}")
        if self.retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {self.retry_after_s}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        if not 0 < self.plan_fraction <= 1:
            raise ValueError(f"plan_fraction must be in (0, 1], got {self.plan_fraction}")
        if not 0 <= self.batch_wait_ms <= 1000:
            raise ValueError(f"batch_wait_ms must be in [0, 1000], got {self.batch_wait_ms}")


def allowed_bundle_path(path: str | Path, roots: tuple[Path, ...]) -> bool:
    """True when `path` resolves (symlinks and `..` followed) strictly inside one of `roots`
    (False for a path that cannot be resolved, e.g. one with a NUL character)."""
    try:
        target = Path(path).resolve()
    except (OSError, ValueError, RuntimeError):  # NUL byte, name too long, symlink loop
        return False
    return any(target != root and target.is_relative_to(root) for root in roots)


def one_line(text: str, limit: int = 300) -> str:
    """`text` on one line (whitespace runs -> one space), cut to `limit` characters: error
    messages stay short and never echo a whole input."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- request bodies: size limit and strict JSON ---------------------------------------------------
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"number {one_line(text, 40)} is out of range (numbers must be finite)")
    return x


_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)  # built once


def _has_lone_surrogate(obj: Any) -> bool:
    """True when a string (or dict key) anywhere in `obj` holds an unpaired UTF-16 surrogate,
    which no UTF-8 answer can carry."""
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return False


def parse_json_body(body: bytes) -> Any:
    """Strict JSON: NaN / Infinity (and numbers that overflow to them), lone surrogates,
    invalid UTF-8 and absurd nesting raise `json.JSONDecodeError`, which FastAPI turns into a
    validation error the service answers 400. The surrogate walk runs only when the body holds
    a surrogate escape, so ordinary bodies cost one `json.loads`."""
    try:
        text = body.decode("utf-8")
        obj = _DECODER.decode(text)
    except json.JSONDecodeError:
        raise
    except UnicodeDecodeError as e:
        raise json.JSONDecodeError("the body is not UTF-8", "", e.start) from None
    except (ValueError, RecursionError) as e:  # parse hooks, int digit limit, nesting depth
        raise json.JSONDecodeError(one_line(str(e) or type(e).__name__, 120), "", 0) from None
    if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(obj):
        raise json.JSONDecodeError("a string holds a lone UTF-16 surrogate", "", 0)
    return obj


class _StrictRequest(Request):
    """A request whose body is capped (`max_body` bytes: 413 before reading more) and parsed
    by `parse_json_body`."""

    max_body = 1 << 20

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            limit = self.max_body
            length = self.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                raise HTTPException(413, f"request body over the {limit}-byte limit")
            chunks, size = [], 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > limit:
                    raise HTTPException(413, f"request body over the {limit}-byte limit")
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_json_body(await self.body())
        return self._json


def _route_class(max_body: int) -> type[APIRoute]:
    """An `APIRoute` whose handlers see `_StrictRequest`s capped at `max_body` bytes."""
    request_class = type("StrictRequest", (_StrictRequest,), {"max_body": max_body})

    class StrictRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Any]:
            handler = super().get_route_handler()

            async def strict_handler(request: Request) -> Response:
                return await handler(request_class(request.scope, request.receive))

            return strict_handler

    return StrictRoute


_ECHO = 80  # characters of an invalid input a 422 answer quotes


def _clip(value: Any) -> Any:
    """An invalid input as a 422 answer quotes it: short values as they are, long strings and
    containers cut to `_ECHO` characters of their JSON text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= _ECHO else value[:_ECHO] + "..."
    text = json.dumps(value, default=str)
    return value if len(text) <= _ECHO else text[:_ECHO] + "..."


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """400 with one line for a body that is not JSON; 422 with FastAPI's located errors for an
    invalid one, each quoting at most `_ECHO` characters of the input (10 errors at most)."""
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        why = (bad_json.get("ctx") or {}).get("error", "JSON decode error")
        return JSONResponse({"detail": one_line(f"the body is not valid JSON: {why}")}, 400)
    short = []
    for e in errors[:10]:
        e = {k: v for k, v in e.items() if k != "url"}
        if "input" in e:
            e["input"] = _clip(e["input"])
        e["loc"] = [_clip(x) for x in e.get("loc", ())]
        if "ctx" in e:
            e["ctx"] = {k: _clip(v if isinstance(v, str | int | float | bool) or v is None else str(v))
                        for k, v in e["ctx"].items()}
        e["msg"] = one_line(e.get("msg", ""), 200)
        short.append(e)
    if len(errors) > 10:
        short.append({"type": "truncated", "loc": [], "msg": f"{len(errors) - 10} more errors"})
    return JSONResponse({"detail": jsonable_encoder(short)}, 422)


def freeze_heap(collect: bool = True) -> None:
    """Move the loaded bundle's objects out of the garbage collector's view: full collections
    then scan only per-request garbage instead of pausing on the whole model (a stall that
    shows up as a p99 spike). After a hot swap `collect=False`: a full collection holds the GIL
    for ~0.15 s while requests are being served, and freezing a little garbage is harmless."""
    if collect:
        gc.collect()
    gc.freeze()


def compute_thread_initializer() -> Callable[[], None]:
    """An initializer for the service's compute worker thread: the creating thread's torch
    intra-op thread count, applied in the worker to torch and to Faiss's OpenMP.

    OpenMP's thread count is a per-thread setting: `recstack serve` sets it to 1 on the main
    thread (`configure_runtime`), but a new thread starts from OpenMP's default (every core),
    and a Faiss search of several queries (a micro-batch's ANN search) then forks a team of
    threads that spin against the server's other threads: measured on the 2-core CPU, 12
    queries in a fresh thread 12.1 ms against 2.9 ms on the main thread and 3.2 ms in a
    thread configured here."""
    import torch

    n = torch.get_num_threads()

    def init() -> None:
        torch.set_num_threads(n)
        if importlib.util.find_spec("faiss") is not None:
            import faiss

            faiss.omp_set_num_threads(n)

    return init


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


try:  # orjson serialises a /recommend answer ~5x faster than the json module (optional)
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None


class FastJSONResponse(JSONResponse):
    """`JSONResponse` rendered by orjson when it is installed: the same JSON for the payloads
    the endpoints build (str keys, finite floats, ints, str, None); anything orjson refuses
    (e.g. an int beyond 64 bits) falls back to the json module."""

    def render(self, content: Any) -> bytes:
        if orjson is not None:
            try:
                return orjson.dumps(content)
            except TypeError:  # orjson.JSONEncodeError subclasses TypeError
                pass
        return super().render(content)


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "the body is not valid JSON (NaN, Infinity and lone "
                                             "surrogates included)"},
    413: {"model": ErrorBody, "description": "the body is over the size limit"},
    422: {"model": ErrorBody, "description": "invalid request"},
    503: {"model": ErrorBody, "description": "no bundle loaded yet"},
}
_RECOMMEND_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS, 503: {"model": ErrorBody, "description": "no bundle loaded yet, or overloaded: the request's "
                                                        "deadline left no time to answer (shed; see Retry-After)"}}


class _Lane:
    """One variant: its bundle holder, traffic share and pre-resolved metric children."""

    __slots__ = ("holder", "share", "requests", "latency")

    def __init__(self, holder: BundleHolder, share: float, requests: Any, latency: Any) -> None:
        self.holder, self.share, self.requests, self.latency = holder, share, requests, latency


@dataclass
class _Service:
    """What the route groups share: the settings, the A/B test served (a single-bundle service
    is a one-variant test named `default`), one lane per variant, the metrics and the reload
    allow-list."""

    settings: ServiceSettings
    abtest: ABTestConfig
    name: str | None  # the `experiment` field of the answers: None when serving one bundle
    lanes: dict[str, _Lane]
    metrics: ServiceMetrics
    roots: tuple[Path, ...]

    @property
    def holder(self) -> BundleHolder:
        """The control's holder: it answers /items/{id}/similar and /ready's version."""
        return self.lanes[self.abtest.control].holder

    @property
    def split(self) -> bool:
        return len(self.lanes) > 1


def _service(bundle_path: str | Path | None, settings: ServiceSettings,
             experiment: ABTestConfig | None) -> _Service:
    """Validate the arguments of `create_app` and build the lanes (bundles are loaded later, at
    startup) and the allow-list of bundle roots for POST /admin/reload."""
    if (bundle_path is None) == (experiment is None):
        raise ValueError("create_app: give either a bundle path or an experiment")
    exp = experiment or ABTestConfig.single(bundle_path)
    metrics = ServiceMetrics()
    lanes: dict[str, _Lane] = {}
    for v in exp.variants:
        h = BundleHolder(v.bundle, verify=settings.verify_bundle, warmup=settings.warmup_requests)
        lanes[v.name] = _Lane(h, exp.shares[v.name], *metrics.add_variant(v.name))
    roots = tuple(Path(r).resolve() for r in settings.bundle_roots) if settings.bundle_roots else tuple(
        {lane.holder.path.absolute().parent.resolve() for lane in lanes.values()})
    name = experiment.name if experiment is not None else None
    return _Service(settings, exp, name, lanes, metrics, roots)


def _lifespan(svc: _Service) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Startup: load every variant's bundle, freeze the heap, open the event log. Shutdown: mark
    the lanes draining (/ready turns 503 while in-flight requests finish), close the log."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for name, lane in svc.lanes.items():
            b = lane.holder.load()
            svc.metrics.set_variant_bundle(name, b.version)
        svc.metrics.set_bundle(svc.holder.current.version)
        freeze_heap()
        app.state.event_log = EventLog(svc.settings.event_log) if svc.settings.event_log else None
        try:
            yield
        finally:
            for lane in svc.lanes.values():
                lane.holder.draining = True  # shutdown: /ready turns 503 while in-flight requests finish
            batcher = getattr(app.state, "batcher", None)
            if batcher is not None:
                await batcher.close()
                if batcher.executor is not None:
                    batcher.executor.shutdown(wait=False)
            if app.state.event_log is not None:
                app.state.event_log.close()

    return lifespan


def _teach_explorer(holder: BundleHolder, item_id: Any, click: bool) -> None:
    """An impression (and whether it was clicked) for the re-ranking stage's exploration bandit,
    when the served pipeline explores (`RerankConfig.explore`); unknown items are ignored."""
    b = holder.current
    explorer = b.pipeline.reranker.explorer if b is not None else None
    if explorer is None:
        return
    idx = b.assets.catalog.id_map.lookup([item_id])
    if len(idx) and idx[0] >= 0:
        explorer.update(idx[:1], [int(click)])


def _current(h: BundleHolder) -> Bundle:
    """The bundle `h` serves now (503 before the first load)."""
    b = h.current
    if b is None:
        raise HTTPException(503, "no bundle loaded yet")
    return b


def _sent_at(request: Request, arrived: float, now: float, deadline_s: float) -> float:
    """The arrival time to count a deadline from: the `X-Request-Start: t=<Unix seconds>`
    header's moment on the `perf_counter` clock when it is earlier than `arrived` (the request
    sat in the socket buffer while the server was busy), at most one deadline earlier (a skewed
    or forged stamp can only get the request shed); else `arrived`."""
    raw = request.headers.get("x-request-start")
    if raw is None:
        return arrived
    try:
        sent = float(raw.removeprefix("t="))
    except ValueError:
        return arrived
    if sent > 1e11:  # milliseconds (Heroku-style stamps)
        sent /= 1e3
    at = now - (time.time() - sent)
    return max(min(arrived, at), arrived - deadline_s)


def _unit(body: RecommendRequest, rid: str) -> tuple[str, str | int]:
    """The A/B assignment unit of a request: its user id, else its session id, else `rid`."""
    if body.user_id is not None:
        return "user", body.user_id
    if body.session_id is not None:
        return "session", body.session_id
    return "request", rid


def _items(ids: list[Any], trace: list[Any], explain: bool, meta: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The `items` of a /recommend answer: id, the catalogue's title and categories when the
    bundle has them, score, sources, rule (stage scores and source ranks when `explain`)."""
    items = []
    for raw, t in zip(ids, trace, strict=True):
        item = {"item_id": raw, **meta[t.item], "score": t.scores["final"], "sources": t.sources, "rule": t.rule}
        if explain:
            item["stage_scores"] = {k: (None if v is None else _finite(v)) for k, v in t.scores.items()}
            item["source_ranks"] = t.source_ranks
        items.append(item)
    return items


def create_app(bundle_path: str | Path | None = None, settings: ServiceSettings | None = None,
               experiment: ABTestConfig | None = None) -> FastAPI:
    """A FastAPI app serving the bundle at `bundle_path`, or the variants of an A/B `experiment`
    (one bundle each), loaded at startup."""
    settings = settings or ServiceSettings()
    svc = _service(bundle_path, settings, experiment)
    app = FastAPI(title="recstack", version=__version__, lifespan=_lifespan(svc),
                  description="Recommendations through a four-stage pipeline "
                              "(retrieval, coarse ranking, fine ranking, re-ranking).")
    app.router.route_class = _route_class(settings.max_body_bytes)  # before the routes are added
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(MetricsMiddleware, metrics=svc.metrics)
    app.state.holder, app.state.metrics, app.state.settings = svc.holder, svc.metrics, settings
    app.state.experiment, app.state.holders = svc.abtest, {name: lane.holder for name, lane in svc.lanes.items()}
    app.state.event_log = None
    # registration order = the order of the paths in /openapi.json
    _add_recommend_route(app, svc)
    _add_abtest_routes(app, svc)
    _add_similar_route(app, svc)
    _add_probe_routes(app, svc)
    _add_admin_routes(app, svc)
    return app


def _add_recommend_route(app: FastAPI, svc: _Service) -> None:
    """POST /recommend."""
    exp, exp_name, lanes, metrics, split = svc.abtest, svc.name, svc.lanes, svc.metrics, svc.split
    settings = svc.settings
    deadline_ms = settings.deadline_ms
    deadline_s = deadline_ms / 1e3 if deadline_ms is not None else None
    plan_ms = deadline_ms * settings.plan_fraction if deadline_ms is not None else None
    plan_s = plan_ms / 1e3 if plan_ms is not None else None
    retry_after = str(settings.retry_after_s)
    full, shed = metrics.outcome[("full", "")], metrics.outcome[("shed", "deadline")]
    trust_start = settings.trust_request_start and deadline_s is not None
    # one batcher for every lane: a batch is split by pipeline, so bundles never mix in a call
    pool = (ThreadPoolExecutor(1, thread_name_prefix="recstack-batch", initializer=compute_thread_initializer())
            if settings.batch_thread else None)
    # answering (items, JSON, the write) happens on the loop after a batch, one request after
    # another: a batch of n plans to finish its pipeline work n answers before the deadlines
    answer_s = [0.0]  # moving average of one answer's seconds after its result came back

    def run_batch(p: Any, reqs: list[tuple[Any, float | None]], deadlines: list[float | None]) -> list[Any]:
        # the batcher sheds by the deadline; the pipeline plans by each request's plan time
        margin = answer_s[0] * len(reqs)
        return p.run_batch([r for r, _ in reqs], [t - margin if t is not None else None for _, t in reqs])

    batcher = (MicroBatcher(run_batch, settings.max_batch,
                            settings.batch_wait_ms, on_batch=metrics.observe_batch, executor=pool,
                            max_batch_ms=settings.max_batch_ms)
               if settings.max_batch > 1 else None)
    app.state.batcher = batcher

    def shed_answer(left_ms: float) -> JSONResponse:
        shed.inc()
        return JSONResponse({"detail": f"overloaded: {max(left_ms, 0.0):.0f} ms left of the {deadline_ms:.0f} ms "
                                       "deadline, request shed; retry later"},
                            503, headers={"Retry-After": retry_after})

    @app.post("/recommend", response_model=RecommendResponse, responses=_RECOMMEND_ERRORS)
    async def recommend(body: RecommendRequest, request: Request,
                        x_request_id: Annotated[str | None, Header(max_length=128)] = None) -> Any:
        """Top-k items for a user id and/or recent items (neither: cold-start path). Unknown ids
        are ignored and reported in `warnings`. Under an A/B experiment the variant is chosen
        by a hash of `user_id`, else `session_id`, else the request id."""
        # async on purpose: the work is a few bounded milliseconds of CPU, and running it on the
        # event loop avoids a thread hop and GIL ping-pong per request (measured at 100 QPS on
        # 2 cores: mean handler time 6.1 -> 4.1 ms); the slow hot swap runs in a worker thread
        t0 = time.perf_counter()
        rid = x_request_id or uuid.uuid4().hex
        unit_kind, unit = _unit(body, rid)
        variant = exp.assign(unit) if split else exp.control
        lane = lanes[variant]
        b = _current(lane.holder)  # one reference for the whole request: a swap cannot change it midway
        p = b.pipeline
        deadline = plan = None
        if deadline_s is not None:  # the clock started on arrival: queueing counts against the budget
            arrived = request.scope.get(ARRIVAL, t0)
            if trust_start:
                arrived = _sent_at(request, arrived, t0, deadline_s)
            metrics.queue_wait.observe(max(0.0, t0 - arrived))
            deadline = arrived + deadline_s
            plan = arrived + plan_s  # the pipeline plans to be done by then; the rest is headroom
            left = (deadline - t0) * 1e3
            if left < p.min_budget_ms:  # not even the cheapest answer fits: shed, fast
                return shed_answer(left)
        k, clamp = min(body.k, p.config.max_k), body.k > p.config.max_k
        f = body.filters
        req, warnings = p.request(user_id=body.user_id, history=body.history, k=k,
                                  exclude_items=f.exclude_items, categories=f.categories,
                                  exclude_categories=f.exclude_categories, context=body.context)
        if clamp:
            warnings.append(f"k={body.k} exceeds this bundle's max_k; returning {k}")
        if batcher is not None:
            try:
                res = await batcher.submit(p, (req, plan), deadline, p.min_budget_ms if deadline is not None else 0.0)
            except Shed as e:  # its deadline ran out while it queued behind a batch
                return shed_answer(e.left_ms)
            t_res = time.perf_counter()
        else:
            res = p.run(req, plan)
        degraded = None
        if res.degraded is None:
            full.inc()
        else:
            child = metrics.outcome.get(("degraded", res.degraded))
            (child or metrics.outcomes.labels("degraded", res.degraded)).inc()
            degraded = f"{DEGRADED.get(res.degraded, res.degraded)}: {max(res.left_ms, 0.0):.0f} ms left of {plan_ms:.0f}"
        ids = b.assets.catalog.id_map.decode(res.items)
        items = _items(ids, res.trace, body.explain, b.item_meta)
        note = res.note
        if note is None and clamp:
            note = f"k={body.k} exceeds this bundle's max_k ({k})"
        metrics.observe_stages(res.timings_ms)
        if warnings:
            metrics.warnings.inc(len(warnings))
        if res.cold_start:
            metrics.cold_start.inc()
        lane.requests.inc()
        elapsed = time.perf_counter() - t0
        lane.latency.observe(elapsed)
        log = app.state.event_log
        if log is not None:  # queued only; a background thread serialises and writes
            log.write({"ts": now(), "type": "impression", "request_id": rid, "experiment": exp_name,
                       "variant": variant, "propensity": lane.share, "unit": unit_kind,
                       "unit_id": str(unit), "user": body.user_id, "session": body.session_id,
                       "bundle_version": b.version, "k": k, "cold_start": res.cold_start,
                       "degraded": res.degraded, "items": [{"item": raw, "pos": j} for j, raw in enumerate(ids)],
                       "latency_ms": round(elapsed * 1e3, 3)})
        # built to match RecommendResponse here; returning the response directly skips a second
        # validation pass of our own output (the schema stays in the OpenAPI; tests check it)
        answer = FastJSONResponse({"items": items, "warnings": warnings, "cold_start": res.cold_start,
                                 "bundle_version": b.version,
                                 "timings_ms": {k: round(v, 4) for k, v in res.timings_ms.items()},
                                 "counts": res.counts, "skipped_stages": res.skipped,
                                 "returned": len(items), "note": note, "degraded": degraded,
                                 "request_id": rid, "variant": variant, "experiment": exp_name})
        if batcher is not None:
            spent = time.perf_counter() - t_res
            answer_s[0] = spent if answer_s[0] == 0.0 else 0.9 * answer_s[0] + 0.1 * spent
        return answer


def _feedback_variant(svc: _Service, body: FeedbackRequest) -> str | None:
    """The variant a /feedback call is counted under: the echoed one (404 when not served),
    else the one of its user / session; None for a request-level unit (the analysis finds it
    through request_id)."""
    exp, lanes = svc.abtest, svc.lanes
    if body.variant is not None:
        if body.variant not in lanes:
            # 404: a well-formed reference to a variant this service does not serve
            raise HTTPException(404, f"unknown variant {body.variant!r} (serving {list(lanes)})")
        return body.variant
    if not svc.split:
        return exp.control
    if body.user_id is not None:
        return exp.assign(body.user_id)
    if body.session_id is not None:
        return exp.assign(body.session_id)
    return None  # a request-level unit: the analysis finds it through request_id


def _add_abtest_routes(app: FastAPI, svc: _Service) -> None:
    """POST /feedback and GET /experiment."""
    exp, exp_name, lanes, metrics = svc.abtest, svc.name, svc.lanes, svc.metrics

    @app.post("/feedback", response_model=FeedbackResponse,
              responses={**_ERRORS, 404: {"model": ErrorBody, "description": "unknown variant"}})
    async def feedback(body: FeedbackRequest) -> dict[str, Any]:
        """Record what the user did with a recommendation (`click` and/or `reward`), tagged with
        the variant: the one echoed from the /recommend answer, else the one of `user_id` /
        `session_id`. Quote `request_id` so the analysis can join it to its impression."""
        if body.request_id is None and body.user_id is None and body.session_id is None:
            raise HTTPException(422, "feedback needs request_id, user_id or session_id")
        if body.click is None and body.reward is None:
            raise HTTPException(422, "feedback needs click or reward")
        variant = _feedback_variant(svc, body)
        click = bool(body.click)
        reward = float(body.reward) if body.reward is not None else float(click)
        metrics.observe_feedback(variant or "unknown", click, reward)
        if body.item_id is not None and body.click is not None:
            _teach_explorer(lanes[variant if variant in lanes else exp.control].holder, body.item_id, click)
        log = app.state.event_log
        if log is not None:
            log.write({"ts": now(), "type": "feedback", "request_id": body.request_id, "experiment": exp_name,
                       "variant": variant, "user": body.user_id, "session": body.session_id,
                       "item": body.item_id, "pos": body.position, "click": body.click, "reward": reward})
        return {"logged": log is not None, "request_id": body.request_id, "variant": variant,
                "experiment": exp_name}

    @app.get("/experiment", response_model=ABTestInfo)
    async def experiment_info() -> dict[str, Any]:
        """The experiment served: variants with their weights, traffic shares and bundles."""
        return {"name": exp_name, "control": exp.control, "event_log": app.state.event_log is not None,
                "variants": [{"name": v.name, "weight": v.weight, "share": exp.shares[v.name],
                              "bundle_version": lanes[v.name].holder.current.version
                              if lanes[v.name].holder.current is not None else None,
                              "path": str(lanes[v.name].holder.path)} for v in exp.variants]}


def _add_similar_route(app: FastAPI, svc: _Service) -> None:
    """GET /items/{item_id}/similar, answered by the control variant."""
    holder, control = svc.holder, svc.abtest.control

    @app.get("/items/{item_id}/similar", response_model=SimilarResponse, response_model_exclude_none=True,
             responses={404: {"model": ErrorBody, "description": "unknown item"}, **_ERRORS})
    async def similar(item_id: Annotated[str, PathParam(max_length=256)],
                k: Annotated[int, Query(ge=1, le=MAX_K)] = 10) -> dict[str, Any]:
        """Items most similar to `item_id` (item-to-item neighbours, completed by the ANN index)."""
        b = _current(holder)
        p = b.pipeline
        k = min(k, p.config.max_k)
        idx = int(b.assets.catalog.id_map.lookup([item_id])[0])
        if idx < 0:
            raise HTTPException(404, f"unknown item id {item_id!r}")
        try:
            items, scores, source = p.similar(idx, k)
        except LookupError as e:
            raise HTTPException(404, str(e)) from None
        raw = b.assets.catalog.id_map.decode(items)
        return {"item_id": b.assets.catalog.id_map.decode([idx])[0], "source": source, "bundle_version": b.version,
                "variant": control,
                "items": [{"item_id": i, **b.item_meta[j], "score": _finite(float(s)) or 0.0}
                          for i, j, s in zip(raw, items.tolist(), scores.tolist(), strict=True)]}


def _add_probe_routes(app: FastAPI, svc: _Service) -> None:
    """GET /health, /ready and /metrics."""
    holder, lanes, metrics = svc.holder, svc.lanes, svc.metrics

    @app.get("/health", response_model=Health)
    async def health() -> dict[str, str]:
        """Liveness: the process is up and answering."""
        return {"status": "ok"}

    @app.get("/ready", response_model=Ready, responses={503: {"model": Ready, "description": "not ready"}})
    async def ready() -> Any:
        """Readiness: every variant's bundle is loaded and the server is not shutting down."""
        b = holder.current
        draining = any(lane.holder.draining for lane in lanes.values())
        if draining or any(lane.holder.current is None for lane in lanes.values()):
            reason = "draining" if draining else "loading"
            return JSONResponse({"ready": False, "bundle_version": b.version if b else None, "reason": reason}, 503)
        return {"ready": True, "bundle_version": b.version}

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                              "description": "Prometheus text format"}})
    async def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


_RELOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "the body is not valid JSON"},
    401: {"model": ErrorBody, "description": "missing or wrong admin token"},
    403: {"model": ErrorBody, "description": "admin endpoints disabled, or a path outside the bundle roots"},
    409: {"model": ErrorBody, "description": "a swap is already running"},
    422: {"model": ErrorBody, "description": "the bundle cannot be loaded"},
}


def _reload_target(svc: _Service, body: ReloadRequest | None, x_admin_token: str | None) -> str:
    """Check a POST /admin/reload call (token, path inside the bundle roots, variant) and return
    the name of the variant to swap."""
    settings, roots, lanes, metrics = svc.settings, svc.roots, svc.lanes, svc.metrics
    if settings.admin_token is None:
        raise HTTPException(403, "admin endpoints are disabled (start the service with an admin token)")
    if x_admin_token is None or not hmac.compare_digest(x_admin_token.encode(), settings.admin_token.encode()):
        raise HTTPException(401, "missing or wrong X-Admin-Token")
    if body and body.path is not None and "\x00" in body.path:
        metrics.swaps.labels("refused").inc()
        raise HTTPException(422, "bundle path contains a NUL character")
    if body and body.path is not None and not allowed_bundle_path(body.path, roots):
        metrics.swaps.labels("refused").inc()
        raise HTTPException(403, one_line(f"bundle path {one_line(repr(body.path), 200)} is outside the "
                                          f"allowed bundle roots {[str(r) for r in roots]} "
                                          "(recstack serve --bundle-root DIR)", 600))
    name = body.variant if body and body.variant is not None else (None if svc.split else svc.abtest.control)
    if name is None:
        raise HTTPException(422, f"name the variant to swap (one of {list(lanes)})")
    if name not in lanes:
        raise HTTPException(422, f"unknown variant {name!r} (serving {list(lanes)})")
    return name


def _add_admin_routes(app: FastAPI, svc: _Service) -> None:
    """POST /admin/reload (hot swap of one variant's bundle)."""
    lanes, metrics, control = svc.lanes, svc.metrics, svc.abtest.control

    @app.post("/admin/reload", response_model=ReloadResponse, responses=_RELOAD_ERRORS)
    def reload(body: ReloadRequest | None = None,
               x_admin_token: Annotated[str | None, Header(max_length=256)] = None) -> dict[str, Any]:
        """Hot swap: load, check and warm up a bundle, then serve it; in-flight requests finish
        on the old one. Without `path`, the served path is loaded again (a symlink such as
        `current -> v2` is re-resolved). Under an A/B experiment with several variants, `variant`
        names the one to swap; the others keep serving."""
        name = _reload_target(svc, body, x_admin_token)
        try:
            prev, new, seconds = lanes[name].holder.swap(body.path if body else None)
        except SwapInProgress as e:
            metrics.swaps.labels("busy").inc()
            raise HTTPException(409, str(e)) from None
        except (BundleError, OSError, ValueError) as e:
            metrics.swaps.labels("failed").inc()
            raise HTTPException(422, one_line(f"bundle not loaded, still serving the previous one: {e}", 500)) from None
        metrics.swaps.labels("ok").inc()
        metrics.set_variant_bundle(name, new.version)
        if name == control:
            metrics.set_bundle(new.version)
        freeze_heap(collect=False)
        return {"previous_version": prev, "version": new.version, "path": str(new.path),
                "seconds": round(seconds, 3), "variant": name}
