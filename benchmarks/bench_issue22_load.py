"""Issue 22, serving under load: one `recstack loadtest` run against a fresh `recstack serve`, as
docs/benchmarks.md runs it, with the machine's load average and the server's own counts.

    python benchmarks/bench_issue22_load.py BUNDLE --rate 300 --out benchmarks/results/issue22/run.json
    python benchmarks/bench_issue22_load.py BUNDLE --rate 100 --busy 2 --out ...   # two spinning processes

Starts `recstack serve BUNDLE --port P --admin-token t` (its defaults: 200 ms deadline, micro-
batching; `--settings '{"batch_thread": true}'` serves through `recstack.serving.server.serve`
with those `ServiceSettings` instead, for comparing settings the CLI does not expose), waits
until /ready, optionally starts `--busy N` processes running
`while True: pass`, then runs `recstack loadtest URL --bundle BUNDLE --rate R --duration 60
--swap-at 30 --admin-token t` and writes its JSON (plus the command, UTC date and load averages)
to --out. The busy processes and the server are stopped by their process ids afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from recstack.serving.loadtest import free_port, wait_ready


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--swap-at", type=float, default=30.0)
    ap.add_argument("--busy", type=int, default=0, help="spinning processes started before the load")
    ap.add_argument("--serve-arg", action="append", default=[], help="extra `recstack serve` argument")
    ap.add_argument("--settings", default=None, help="JSON of ServiceSettings fields (serve() instead of the CLI)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = ["recstack", "serve", args.bundle, "--port", str(port), "--admin-token", "t", *args.serve_arg]
    if args.settings is not None:
        code = ("import json, sys; from recstack.serving.app import ServiceSettings; "
                "from recstack.serving.server import serve; "
                "serve(sys.argv[1], port=int(sys.argv[2]), settings=ServiceSettings(admin_token='t', "
                "**json.loads(sys.argv[3])))")
        serve = [sys.executable, "-c", code, args.bundle, str(port), args.settings]
    server = subprocess.Popen(serve)
    busy: list[subprocess.Popen] = []
    try:
        wait_ready(url, server)
        time.sleep(2.0)
        busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
        if busy:
            time.sleep(3.0)  # let the spinners take their share of the cores
        load_before = os.getloadavg()
        started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        cmd = ["recstack", "loadtest", url, "--bundle", args.bundle, "--rate", str(args.rate),
               "--duration", str(args.duration), "--swap-at", str(args.swap_at), "--admin-token", "t"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
        report = json.loads(lines[-1]) if lines else {"error": run.stderr[-2000:]}
    finally:
        for p in busy:
            p.send_signal(signal.SIGTERM)
        for p in busy:
            p.wait()
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    result = {"serve": " ".join(serve), "loadtest": " ".join(cmd), "started": started, "busy_processes": args.busy,
              "loadavg_before_busy_or_run": list(load_before), "exit_code": run.returncode, **report}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    lat = report.get("latency_ms", {})
    print(json.dumps({"out": str(args.out), "started": started, "loadavg_before": report.get("loadavg_before"),
                      "sent": report.get("sent"), "ok": report.get("ok"), "errors": report.get("error_kinds"),
                      "p50": lat.get("p50"), "p95": lat.get("p95"), "p99": lat.get("p99"), "max": lat.get("max"),
                      "late": report.get("late"), "server": report.get("server"),
                      "swap": (report.get("swap") or {}).get("status"), "exit": run.returncode}))


if __name__ == "__main__":
    main()
