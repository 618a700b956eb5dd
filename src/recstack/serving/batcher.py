"""Dynamic micro-batching of concurrent requests on the service's event loop (what Triton's
dynamic batcher does for a model): handlers `submit` work and await its result; one worker
task takes whatever has queued (up to `max_batch`), makes ONE call for the whole batch
(`Pipeline.run_batch`: one sequence-encoder forward, one ANN search, one forward per ranker)
and hands each request its own result or its own exception.

Why batches form without a timer: the batch runs on the event loop thread (no thread hop, no
GIL hand-off per request), so requests that arrive while it computes wait in the socket buffer;
when it ends, the worker yields to the loop until the handlers of those requests have parsed
them and queued (the queue stops growing), then takes them all. At low load a batch is the one
request that came (no added latency); under load the batch grows with the arrival rate times
the batch's own duration, which is what keeps the cost per request falling as load rises.
`max_wait_ms` > 0 additionally holds a batch open that long for more requests.

With an `executor` (one thread), the batch runs there instead and the loop keeps reading,
parsing and answering requests meanwhile: torch releases the GIL in its kernels, so on two
cores the HTTP work of the next batch overlaps the model work of this one; the next batch is
whatever queued during this one.

Batch duration: a batch holds the event loop while it computes (requests that arrive meanwhile
are not even read), so besides `max_batch` its size is capped by time: at most `max_batch_ms`
of work at the measured cost per request (a moving average of the batches' seconds per
request). Under overload this keeps batches short enough that queued requests are read, and
shed or degraded by their deadlines, in time.

Deadlines: a queued request whose time left no longer pays for the cheapest answer
(`min_budget_ms`) is shed (`Shed`, the handler answers 503) when its batch forms instead of
being computed; the others run with their deadlines, so the pipeline degrades each of them
as `Pipeline.run` would. `max_batch` bounds how long one batch holds the loop, and so how
long a request can wait behind it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")  # a request
R = TypeVar("R")  # its result

BatchFn = Callable[[Any, Sequence[T], Sequence[float | None]], Sequence[R | Exception]]


class Shed(Exception):
    """The request's deadline left too little time when its batch formed: answer it with a fast
    503 instead of computing it. `left_ms`: the time that was left (may be negative)."""

    def __init__(self, left_ms: float) -> None:
        super().__init__(f"{left_ms:.0f} ms left")
        self.left_ms = left_ms


@dataclass
class BatchStats:
    """What the batcher reports after each batch (for metrics): its size, the seconds the call
    took, how many requests were shed when it formed, and each request's seconds in the queue."""

    size: int
    seconds: float
    shed: int
    waits: list[float]


@dataclass
class _Item(Generic[T, R]):
    key: Any
    request: T
    deadline: float | None
    min_left_ms: float
    queued: float
    future: asyncio.Future


class MicroBatcher(Generic[T, R]):
    """Batches concurrent `submit` calls into `run(key, requests, deadlines)` calls.

    Args:
        run: the batched function; called with a key (requests of one batch share it: the
            pipeline they were encoded for, so a hot swap or an A/B split never mixes bundles in
            one call), the requests and their deadlines (`time.perf_counter()` times or None);
            returns one result or exception per request, in order. If the call itself raises,
            every request of that call gets the exception.
        max_batch: most requests per call.
        max_wait_ms: how long a batch is held open for more requests after its first one was
            queued (0: take what has queued once the loop has no more handlers to run).
        settle: event-loop turns without a new request after which the queue counts as drained.
        on_batch: called after each batch with its `BatchStats` (metrics).
        clock: `time.perf_counter` (a fake clock in tests).
        executor: run the batched calls there (a one-thread pool) instead of on the loop.
        max_batch_ms: at most this much work per batch at the measured cost per request (None:
            `max_batch` only).
    """

    def __init__(self, run: BatchFn, max_batch: int = 32, max_wait_ms: float = 0.0, settle: int = 2,
                 on_batch: Callable[[BatchStats], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter, executor: Executor | None = None,
                 max_batch_ms: float | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1e3
        self.settle, self.on_batch, self.clock, self.executor = max(0, settle), on_batch, clock, executor
        if max_batch_ms is not None and max_batch_ms <= 0:
            raise ValueError(f"max_batch_ms must be > 0 (or None), got {max_batch_ms}")
        self.max_batch_s = max_batch_ms / 1e3 if max_batch_ms is not None else None
        self.per_request_s = 0.0  # moving average of a batch's seconds per request
        self._queue: deque[_Item] = deque()
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    def __len__(self) -> int:
        return len(self._queue)

    async def submit(self, key: Any, request: T, deadline: float | None = None, min_left_ms: float = 0.0) -> R:
        """Queue `request` and wait for its result (its exception is raised here; `Shed` when its
        deadline leaves less than `min_left_ms` when the batch forms)."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._work())
        fut = loop.create_future()
        self._queue.append(_Item(key, request, deadline, min_left_ms, self.clock(), fut))
        self._wake.set()
        return await fut

    async def close(self) -> None:
        """Stop the worker (pending requests get `CancelledError`)."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.cancel()

    async def _gather(self) -> None:
        """Let the loop run the handlers of requests already read, until the queue is full or
        stops growing (`settle` quiet turns), then hold it open up to `max_wait`."""
        quiet = 0
        limit = self.limit()
        while len(self._queue) < limit and quiet < self.settle:
            before = len(self._queue)
            await asyncio.sleep(0)
            quiet = quiet + 1 if len(self._queue) == before else 0
        if self.max_wait > 0:
            end = self._queue[0].queued + self.max_wait
            while len(self._queue) < limit and (left := end - self.clock()) > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), left)
                except TimeoutError:
                    break

    def limit(self) -> int:
        """Requests the next batch may take: `max_batch`, fewer when `max_batch_ms` of work at
        the measured cost per request is less."""
        if self.max_batch_s is None or self.per_request_s <= 0:
            return self.max_batch
        return max(1, min(self.max_batch, int(self.max_batch_s / self.per_request_s)))

    def _take(self) -> list[_Item]:
        batch, limit = [], self.limit()
        while self._queue and len(batch) < limit:
            item = self._queue.popleft()
            if not item.future.done():  # a client that went away cancelled its handler
                batch.append(item)
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await self._gather()
            batch = self._take()
            if self.executor is None:
                self.process(batch)
                continue
            now = self.clock()
            live, shed = self._shed(batch, now)
            results = await loop.run_in_executor(self.executor, self._call, live) if live else []
            self._resolve(live, results)
            self._report(batch, live, shed, now)

    def process(self, batch: list[_Item]) -> None:
        """Shed the expired requests of `batch`, run the rest (one call per key) and resolve
        every future. Synchronous: runs on the loop thread."""
        if not batch:
            return
        now = self.clock()
        live, shed = self._shed(batch, now)
        self._resolve(live, self._call(live))
        self._report(batch, live, shed, now)

    def _shed(self, batch: list[_Item], now: float) -> tuple[list[_Item], int]:
        """Fail with `Shed` the requests whose time left is below their minimum -> (the others,
        how many were shed)."""
        live, shed = [], 0
        for item in batch:
            left_ms = (item.deadline - now) * 1e3 if item.deadline is not None else float("inf")
            if left_ms < item.min_left_ms:
                item.future.set_exception(Shed(left_ms))
                shed += 1
            else:
                live.append(item)
        return live, shed

    def _call(self, live: list[_Item]) -> list[Any]:
        """One `run` call per key -> a result or exception per item of `live`, in order. Touches
        no future (it may run on the executor's thread)."""
        results: list[Any] = [None] * len(live)
        groups: dict[int, list[int]] = {}
        for j, item in enumerate(live):
            groups.setdefault(id(item.key), []).append(j)
        for rows in groups.values():
            try:
                got = self.run(live[rows[0]].key, [live[j].request for j in rows], [live[j].deadline for j in rows])
                if len(got) != len(rows):
                    raise RuntimeError(f"batched call returned {len(got)} results for {len(rows)} requests")
            except Exception as e:  # noqa: BLE001 - the call failed as a whole: every request sees why
                got = [e] * len(rows)
            for j, res in zip(rows, got, strict=True):
                results[j] = res
        return results

    @staticmethod
    def _resolve(live: list[_Item], results: list[Any]) -> None:
        for item, res in zip(live, results, strict=True):
            if item.future.done():  # its handler was cancelled (the client went away)
                continue
            if isinstance(res, Exception):
                item.future.set_exception(res)
            else:
                item.future.set_result(res)

    def _report(self, batch: list[_Item], live: list[_Item], shed: int, now: float) -> None:
        seconds = self.clock() - now
        if live:
            per = seconds / len(live)
            self.per_request_s = per if self.per_request_s <= 0 else 0.8 * self.per_request_s + 0.2 * per
        if self.on_batch is not None:
            self.on_batch(BatchStats(len(live), seconds, shed, [now - item.queued for item in batch]))
