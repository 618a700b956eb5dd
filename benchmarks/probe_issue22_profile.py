"""Where one /recommend goes (issue 22): per-component milliseconds of `Pipeline.run` (its own
stage timings, averaged over the load test's request mix), the cost of the whole request
in-process (ASGI app, no sockets) at concurrency 1, and optionally a cProfile of either.

    python benchmarks/probe_issue22_profile.py BUNDLE [--requests 640] [--profile run|app]
        [--top 40] [--answers FILE]

`--answers FILE` writes every request's answer (items and final scores of `Pipeline.run`) as
JSON lines, to compare two codes on the same bundle (`--compare OLD NEW`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pstats
import time
from collections import defaultdict

import numpy as np
import torch


def pipeline_requests(bundle, bodies):
    p = bundle.pipeline
    reqs = []
    for b in bodies:
        r, _ = p.request(user_id=b.get("user_id"), history=b.get("history", ()), k=b.get("k"))
        reqs.append(r)
    return reqs


def run_probe(args) -> None:
    from recstack.serving.bundle import load_bundle
    from recstack.serving.loadtest import bundle_payloads

    bodies = bundle_payloads(args.bundle, n=args.requests)
    kinds = ["known" if "user_id" in b else "anon" if "history" in b else "cold" for b in bodies]
    b = load_bundle(args.bundle, verify=False)
    p = b.pipeline
    if args.model_path:  # the sequence models' own path (before FastSASRec), for comparison
        for src in p.sources:
            if hasattr(src, "fast"):
                src.fast = None
    for r in pipeline_requests(b, bodies[:50]):
        p.run(r)
    # answers (run on fresh requests: the Request objects carry per-run state)
    if args.answers:
        with open(args.answers, "w") as f:
            for r in pipeline_requests(b, bodies):
                res = p.run(r)
                f.write(json.dumps({"items": res.items.tolist(), "scores": [float(x) for x in res.scores]}) + "\n")
    reqs = pipeline_requests(b, bodies)
    prof = cProfile.Profile() if args.profile == "run" else None
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    wall = []
    if prof:
        prof.enable()
    for kind, r in zip(kinds, reqs, strict=True):
        t0 = time.perf_counter()
        res = p.run(r)
        wall.append((time.perf_counter() - t0) * 1e3)
        for k, v in res.timings_ms.items():
            sums[kind][k].append(v)
            sums["all"][k].append(v)
    if prof:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)
    w = np.array(wall)
    print(f"Pipeline.run: mean {w.mean():.3f} p50 {np.median(w):.3f} p99 {np.percentile(w, 99):.3f} ms")
    keys = list(sums["all"])
    print("component ms (mean over requests of that kind): " + ", ".join(f"{k}: n={len(sums[k]['total'])}" for k in ("known", "anon", "cold")))
    print(f"{'component':24s} {'all':>8s} {'known':>8s} {'anon':>8s} {'cold':>8s}")
    for key in keys:
        row = [np.mean(sums[k][key]) if sums[k][key] else float("nan") for k in ("all", "known", "anon", "cold")]
        print(f"{key:24s} " + " ".join(f"{x:8.3f}" for x in row))
    # the app in-process, concurrency 1
    if not args.model_path:
        asyncio.run(app_probe(args, bodies))


async def app_probe(args, bodies) -> None:
    import httpx

    from recstack.serving.app import ServiceSettings, create_app

    app = create_app(args.bundle, ServiceSettings(deadline_ms=None, verify_bundle=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://probe") as c:
            for body in bodies[:50]:
                await c.post("/recommend", json=body)
            prof = cProfile.Profile() if args.profile == "app" else None
            ms = []
            cpu0 = time.process_time()
            if prof:
                prof.enable()
            for body in bodies:
                t0 = time.perf_counter()
                r = await c.post("/recommend", json=body)
                ms.append((time.perf_counter() - t0) * 1e3)
                if r.status_code != 200:
                    raise SystemExit(f"HTTP {r.status_code}: {r.text[:200]}")
            if prof:
                prof.disable()
            cpu = (time.process_time() - cpu0) * 1e3 / len(bodies)
            if prof:
                pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)
                pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)
    a = np.array(ms)
    print(f"app (ASGI, concurrency 1): mean {a.mean():.3f} p50 {np.median(a):.3f} p99 {np.percentile(a, 99):.3f} ms, "
          f"CPU {cpu:.3f} ms per request")


def compare(old: str, new: str) -> None:
    n = same = 0
    worst = 0.0
    with open(old) as fa, open(new) as fb:
        for la, lb in zip(fa, fb, strict=True):
            a, b = json.loads(la), json.loads(lb)
            n += 1
            if a["items"] == b["items"]:
                same += 1
                if a["scores"]:
                    worst = max(worst, float(np.max(np.abs(np.array(a["scores"]) - np.array(b["scores"])))))
    print(f"{same} / {n} answers with the same items in the same order; max |score diff| {worst:.3g}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?")
    ap.add_argument("--requests", type=int, default=640)
    ap.add_argument("--profile", choices=("run", "app"), default=None)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--answers", default=None)
    ap.add_argument("--compare", nargs=2, default=None)
    ap.add_argument("--model-path", action="store_true", help="Pipeline.run with SASRec's own path")
    args = ap.parse_args()
    if args.compare:
        compare(*args.compare)
        return
    torch.set_num_threads(1)
    run_probe(args)


if __name__ == "__main__":
    main()
