"""Prometheus metrics of one service instance (its own registry: no global state), and a pure
ASGI middleware that counts and times every request by route template."""

from __future__ import annotations

import time

from recstack.optional import needs

with needs("serve", "recstack.serving"):
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_STAGES = ("retrieval", "coarse", "fine", "rerank", "total")
# /recommend outcomes under the deadline: (outcome, reason) label pairs exported from the start
OUTCOMES = (("full", ""), ("degraded", "skip_fine"), ("degraded", "skip_ranking"), ("degraded", "popular"),
            ("shed", "deadline"))
# the scope key holding when a request arrived (`time.perf_counter()`): set by the server's
# protocol when it reads the request, else by `MetricsMiddleware` when the app first sees it
ARRIVAL = "recstack.arrival"
_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServiceMetrics:
    """The service's counters and histograms."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("recstack_http_requests_total", "HTTP requests by route and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("recstack_http_request_seconds", "HTTP request latency by route",
                                 ["route"], buckets=_BUCKETS, registry=r)
        self.stage = Histogram("recstack_pipeline_stage_seconds", "pipeline stage latency",
                               ["stage"], buckets=_BUCKETS, registry=r)
        self.cold_start = Counter("recstack_cold_start_total", "requests served by the cold-start path", registry=r)
        self.warnings = Counter("recstack_request_warnings_total", "warnings returned (e.g. unknown ids)", registry=r)
        self.outcomes = Counter("recstack_recommend_outcomes_total",
                                "/recommend answers under the deadline: full, degraded (by reason) or shed (503)",
                                ["outcome", "reason"], registry=r)
        self.outcome = {o: self.outcomes.labels(*o) for o in OUTCOMES}  # resolved once
        self.queue_wait = Histogram("recstack_queue_wait_seconds",
                                    "time a /recommend request waited before its handler started",
                                    buckets=_BUCKETS, registry=r)
        # dynamic micro-batching of /recommend (`recstack.serving.batcher`)
        self.batch_size = Histogram("recstack_batch_size", "/recommend requests per batched pipeline call",
                                    buckets=(1, 2, 4, 8, 16, 24, 32, 48, 64, 128), registry=r)
        self.batch_seconds = Histogram("recstack_batch_seconds", "duration of one batched pipeline call",
                                       buckets=_BUCKETS, registry=r)
        self.batch_wait = Histogram("recstack_batch_queue_seconds",
                                    "time a /recommend request waited in the batcher's queue", buckets=_BUCKETS,
                                    registry=r)
        self.swaps = Counter("recstack_bundle_swaps_total", "bundle hot swaps", ["result"], registry=r)
        # export the series at 0 before the first request; children resolved once (no label
        # lookup per request)
        self._stage_children = {stage: self.stage.labels(stage) for stage in _STAGES}
        self.bundle = Gauge("recstack_bundle_loaded_timestamp_seconds", "load time of the served bundle",
                            ["version"], registry=r)
        # A/B: per-variant traffic, latency and feedback (variant "default" without an experiment)
        self.variant_requests = Counter("recstack_variant_requests_total", "/recommend answers by A/B variant",
                                        ["variant"], registry=r)
        self.variant_latency = Histogram("recstack_variant_request_seconds",
                                         "/recommend handler time by A/B variant", ["variant"],
                                         buckets=_BUCKETS, registry=r)
        self.feedback = Counter("recstack_feedback_total", "feedback events by A/B variant",
                                ["variant"], registry=r)
        self.feedback_clicks = Counter("recstack_feedback_clicks_total", "clicks reported by A/B variant",
                                       ["variant"], registry=r)
        self.feedback_reward = Gauge("recstack_feedback_reward_sum", "sum of feedback rewards by A/B variant "
                                     "(a gauge: rewards may be negative)", ["variant"], registry=r)
        self.variant_bundle = Gauge("recstack_variant_bundle_info", "bundle version served by each A/B variant",
                                    ["variant", "version"], registry=r)
        self._variant_versions: dict[str, str] = {}

    def add_variant(self, name: str) -> tuple[Counter, Histogram]:
        """Export a variant's series at 0 and return its (request counter, latency histogram)
        children, resolved once so the request path skips the label lookup."""
        self.feedback.labels(name)
        self.feedback_clicks.labels(name)
        self.feedback_reward.labels(name)
        return self.variant_requests.labels(name), self.variant_latency.labels(name)

    def set_variant_bundle(self, variant: str, version: str) -> None:
        old = self._variant_versions.get(variant)
        if old is not None:
            self.variant_bundle.remove(variant, old)
        self._variant_versions[variant] = version
        self.variant_bundle.labels(variant, version).set(1)

    def observe_feedback(self, variant: str, click: bool, reward: float) -> None:
        self.feedback.labels(variant).inc()
        if click:
            self.feedback_clicks.labels(variant).inc()
        if reward:
            self.feedback_reward.labels(variant).inc(reward)

    def observe_stages(self, timings_ms: dict[str, float]) -> None:
        for stage, child in self._stage_children.items():
            if stage in timings_ms:
                child.observe(timings_ms[stage] / 1e3)

    def observe_batch(self, stats) -> None:
        """One batch of the micro-batcher (`BatchStats`): its size, duration and queue waits
        (shed requests are counted by the handler, as outcome `shed`)."""
        if stats.size:
            self.batch_size.observe(stats.size)
            self.batch_seconds.observe(stats.seconds)
        for w in stats.waits:
            self.batch_wait.observe(w)

    def set_bundle(self, version: str) -> None:
        self.bundle.clear()
        self.bundle.labels(version).set(time.time())

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Counts requests and observes latency, labelled by route template (`/items/{item_id}/similar`,
    not the raw path, to bound label cardinality)."""

    def __init__(self, app, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        scope.setdefault(ARRIVAL, t0)  # the deadline clock starts here unless the server stamped earlier
        status = {"code": 500}

        async def send_wrapper(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(label, scope.get("method", ""), str(status["code"])).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - t0)
