"""In-process capacity of /recommend with and without micro-batching (issue 22): the FastAPI
app driven through httpx's ASGI transport (no sockets, no load generator on the cores), C
requests in flight at a time, one compute thread.

    python benchmarks/probe_batched_inprocess.py BUNDLE [--concurrency 1,8,32] [--requests 960]

For each concurrency and each setting (max_batch 1 = no batching, 32 = batching), prints the CPU
milliseconds per request (process CPU time / requests), the throughput one core would give
(1000 / that), and the mean batch size. The request mix is the load test's (`bundle_payloads`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import httpx
import torch

from recstack.serving.app import ServiceSettings, create_app
from recstack.serving.loadtest import bundle_payloads


async def drive(app, bodies, concurrency: int) -> float:
    """Send every body with at most `concurrency` in flight -> process CPU seconds used."""
    sem = asyncio.Semaphore(concurrency)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://probe") as c:
        async def one(body):
            async with sem:
                r = await c.post("/recommend", json=body)
                if r.status_code != 200:
                    raise SystemExit(f"HTTP {r.status_code}: {r.text[:200]}")

        for body in bodies[:50]:  # warm-up
            await one(body)
        t0 = time.process_time()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.process_time() - t0


async def main_async(args) -> None:
    bodies = bundle_payloads(args.bundle, n=args.requests)
    for max_batch in (1, 32):
        # no deadline: this measures cost, not the degradation under a deadline
        app = create_app(args.bundle, ServiceSettings(max_batch=max_batch, deadline_ms=None))
        async with app.router.lifespan_context(app):
            for conc in [int(c) for c in args.concurrency.split(",")]:
                m = app.state.metrics
                before = (m.batch_size._sum.get(), sum(b.get() for b in m.batch_size._buckets))
                cpu = await drive(app, bodies, conc)
                after = (m.batch_size._sum.get(), sum(b.get() for b in m.batch_size._buckets))
                batches = after[1] - before[1]
                ms = cpu * 1e3 / len(bodies)
                print(json.dumps({"max_batch": max_batch, "concurrency": conc, "cpu_ms_per_request": round(ms, 3),
                                  "requests_per_cpu_second": round(1e3 / ms, 1),
                                  "mean_batch": round((after[0] - before[0]) / batches, 2) if batches else None}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=960)
    torch.set_num_threads(1)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
