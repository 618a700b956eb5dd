"""Issue 6: the service under load. Starts `recstack serve BUNDLE` on loopback (its own process,
one compute thread), waits for /ready, sends `--rate` requests per second for `--duration` s
through all four stages (`recstack loadtest` machinery: open loop, latency from the scheduled
send time), hot-swaps to `--swap-to` halfway, then stops the server with SIGTERM (graceful).

    python benchmarks/bench_service.py --bundle B1 --swap-to B2 --out benchmarks/results/issue6/service.json

Request mix (from the bundle's ids): 70% known user id, 20% anonymous recent-item list, 10% cold
start; k = 10.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time

import httpx

from recstack.serving.loadtest import bundle_payloads, free_port, run_loadtest, wait_ready

TOKEN = "bench-admin-token"





def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--swap-to", default=None, help="bundle to hot swap to halfway (default: none)")
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--client", default="lean", choices=["lean", "httpx"],
                    help="load generator's HTTP client (httpx: the general-purpose one, for comparison)")
    ap.add_argument("--out", default="benchmarks/results/issue6/service.json")
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "recstack.cli", "serve", args.bundle, "--port", str(port),
           "--admin-token", TOKEN, "--threads", "1"]
    load_before = os.getloadavg()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        startup = wait_ready(url, proc)
        payloads = bundle_payloads(args.bundle, n=5000, k=args.k)
        swap = {"at": args.duration / 2, "path": args.swap_to, "token": TOKEN} if args.swap_to else None
        rep = run_loadtest(url, payloads, rate=args.rate, duration=args.duration, swap=swap,
                           client=args.client)
        load_after = os.getloadavg()
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        stop_s = time.perf_counter() - t0
    stage_lines = [line for line in metrics.splitlines()
                   if line.startswith(("recstack_pipeline_stage_seconds_sum", "recstack_pipeline_stage_seconds_count"))
                   or (line.startswith(("recstack_http_request_seconds_sum", "recstack_http_request_seconds_count"))
                       and "/recommend" in line)]
    result = {
        "command": " ".join(cmd), "bundle": args.bundle, "swap_to": args.swap_to, "client": args.client,
        "request_mix": f"70% user id, 20% anonymous history (1-20 items), 10% cold start; k={args.k}",
        "report": rep.to_dict(), "server_startup_s": round(startup, 2),
        "server_stop": {"signal": "SIGTERM", "exit_code": proc.returncode, "seconds": round(stop_s, 2),
                        "output_tail": out[-2000:]},
        "server_stage_metrics": stage_lines,
        "loadavg_before": list(load_before), "loadavg_after": list(load_after),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    lat = rep.latency_ms
    print(f"{rep.sent} requests, {rep.qps} QPS, p50 {lat.get('p50')} ms, p95 {lat.get('p95')} ms, "
          f"p99 {lat.get('p99')} ms, max {lat.get('max')} ms, errors {rep.errors}; swap {rep.swap and rep.swap.get('status')}; "
          f"load {load_before[0]:.2f} -> {load_after[0]:.2f}; server exit {proc.returncode} in {stop_s:.1f} s")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
