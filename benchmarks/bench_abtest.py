"""Issue 9: an A/B experiment on loopback, end to end.

Builds a small bundle (synthetic log, `recstack export` with a light recipe) and a relabelled copy
of it, then runs two experiments, each against `recstack serve --abtest CFG --event-log LOG`
in its own process on 127.0.0.1:

  A/B  variants A (bundle v-a) and B (bundle v-b) at weights 0.7 / 0.3; simulated users click
       with probability 0.10 on an answer of A and 0.12 on an answer of B. The difference is
       planted in the click simulator by the variant name in the response (the two bundles
       rank identically), so the true lift is known exactly: +0.02 absolute, +20%.
  A/A  the same bundle in both arms, same weights, click probability 0.10 in both.

Traffic: `--requests` POST /recommend from a simulated population: 80% by user id (the bundle's
2,000 users, drawn uniformly), 20% anonymous with a session id (1,500 sessions) and a short
recent-item history; every clicked answer is followed by POST /feedback (request id, variant,
item, position; positions drawn with a 1/(1+pos) position bias). Request ids are sent by the
client (X-Request-ID), so the whole run is fixed by `--seed`.

Then `recstack abtest analyze LOG` (by assignment unit, the default) on each log, and the
checks: sample-ratio p > 0.01 in both runs, the planted difference significant (p < 0.05) in
A/B, no significant difference in A/A.

    python benchmarks/bench_abtest.py --out benchmarks/results/issue9/abtest.json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl

from recstack.serving.loadtest import free_port, wait_ready

RECIPE = ["--set", "two_tower.epochs=2", "--set", "two_tower.dim=16", "--set", "two_tower.id_dim=16",
          "--set", "two_tower.history_dim=16", "--set", "two_tower.tower=[32]", "--set", "itemknn.k=20",
          "--set", "index.hnsw_m=8", "--set", "index.ef_construction=32",
          "--set", "rankers=blend"]  # blend rankers only: no CTR-ranker training (not what is measured)


def write_log(path: Path, n_users: int = 2000, n_items: int = 300, per_user: int = 15, seed: int = 0) -> None:
    """Users walking through one of 10 item groups in time order (a learnable structure)."""
    rng = np.random.default_rng(seed)
    group = n_items // 10
    rows = []
    for u in range(n_users):
        g, start = u % 10, int(rng.integers(group))
        for t in range(per_user):
            rows.append((f"u{u}", 1000 + g * group + (start + t) % group, 4.0, 1000 * u + t))
    pl.DataFrame(rows, schema=["user", "item", "rating", "timestamp"], orient="row").write_csv(path)


def build_bundles(root: Path) -> tuple[Path, Path, float]:
    t0 = time.perf_counter()
    write_log(root / "log.csv")
    a, b = root / "v-a", root / "v-b"
    subprocess.run([sys.executable, "-m", "recstack.cli", "export", str(a), "--data", f"csv:{root / 'log.csv'}",
                    "--version", "v-a", *RECIPE], check=True, stdout=subprocess.DEVNULL)
    shutil.copytree(a, b)  # the same assets under another version label (manifest not hashed)
    m = json.loads((b / "manifest.json").read_text())
    m["version"] = "v-b"
    (b / "manifest.json").write_text(json.dumps(m))
    return a, b, time.perf_counter() - t0




def plan_requests(n: int, seed: int, n_users: int = 2000, n_sessions: int = 1500, n_items: int = 300) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.8:
            body = {"user_id": f"u{int(rng.integers(n_users))}", "k": 10}
        else:
            s = int(rng.integers(n_sessions))
            body = {"session_id": f"s{s}", "history": [1000 + (s * 7 + t) % n_items for t in range(3)], "k": 10}
        out.append(body)
    return out


async def drive(url: str, bodies: list[dict], click_p: dict[str, float], seed: int, concurrency: int) -> dict:
    rng = np.random.default_rng(seed + 1)
    u_click = rng.random(len(bodies))  # one uniform per request: fixed before the variant is known
    u_pos = rng.random(len(bodies))
    sem = asyncio.Semaphore(concurrency)
    stats = {"ok": 0, "errors": 0, "clicks": 0, "feedback_errors": 0, "by_variant": {}, "error_samples": []}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:

        async def one(j: int) -> None:
            rid = f"r{seed}-{j}"
            async with sem:
                try:
                    r = await client.post("/recommend", json=bodies[j], headers={"X-Request-ID": rid})
                except httpx.HTTPError as e:
                    stats["errors"] += 1
                    stats["error_samples"].append({"request": j, "error": repr(e)})
                    return
                if r.status_code != 200:
                    stats["errors"] += 1
                    stats["error_samples"].append({"request": j, "status": r.status_code, "body": r.text[:300]})
                    return
                stats["ok"] += 1
                body = r.json()
                v = body["variant"]
                stats["by_variant"][v] = stats["by_variant"].get(v, 0) + 1
                if u_click[j] >= click_p[v] or not body["items"]:
                    return
                # position bias: slot i with probability proportional to 1 / (1 + i)
                w = 1.0 / (1.0 + np.arange(len(body["items"])))
                pos = int(np.searchsorted(np.cumsum(w / w.sum()), u_pos[j]))
                fb = {"request_id": rid, "variant": v, "item_id": body["items"][pos]["item_id"],
                      "position": pos, "click": True, **({"user_id": bodies[j]["user_id"]} if "user_id" in bodies[j] else
                                                         {"session_id": bodies[j]["session_id"]})}
                stats["clicks"] += 1
                try:
                    f = await client.post("/feedback", json=fb)
                    if f.status_code != 200:
                        stats["feedback_errors"] += 1
                        stats["error_samples"].append({"feedback": j, "status": f.status_code, "body": f.text[:300]})
                except httpx.HTTPError as e:
                    stats["feedback_errors"] += 1
                    stats["error_samples"].append({"feedback": j, "error": repr(e)})

        await asyncio.gather(*(one(j) for j in range(len(bodies))))
    return stats


def metric_values(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(name):]] = float(value)
    return out


def run_experiment(label: str, cfg: dict, click_p: dict[str, float], bodies: list[dict], work: Path,
                   seed: int, concurrency: int) -> dict:
    cfg_path, log = work / f"{label}.yaml", work / f"{label}.events.jsonl"
    cfg_path.write_text(json.dumps(cfg))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "recstack.cli", "serve", "--abtest", str(cfg_path),
                             "--event-log", str(log), "--port", str(port), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        startup = wait_ready(url, proc)
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        stats = asyncio.run(drive(url, bodies, click_p, seed, concurrency))
        wall = time.perf_counter() - t0
        load_after = os.getloadavg()
        metrics = httpx.get(f"{url}/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)  # graceful: the event log is flushed and closed
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    counts = metric_values(metrics, "recstack_variant_requests_total")
    lat_sum = metric_values(metrics, "recstack_variant_request_seconds_sum")
    lat_n = metric_values(metrics, "recstack_variant_request_seconds_count")
    server_ms = {k: round(1e3 * lat_sum[k] / lat_n[k], 3) for k in lat_sum if lat_n.get(k)}
    env = {**os.environ, "COLUMNS": "160"}  # the analysis table is printed on stderr
    res = subprocess.run([sys.executable, "-m", "recstack.cli", "abtest", "analyze", str(log)],
                         check=True, capture_output=True, text=True, env=env)
    analysis = json.loads(res.stdout.strip().splitlines()[-1])
    by_req = subprocess.run([sys.executable, "-m", "recstack.cli", "abtest", "analyze", str(log),
                             "--by", "request", "--ips-policy", cfg["variants"][-1]["name"]],
                            check=True, capture_output=True, text=True)
    analysis_req = json.loads(by_req.stdout.strip().splitlines()[-1])
    n_log = sum(analysis["impressions"].values())
    return {"label": label, "config": cfg, "planted_click_p": click_p, "requests": len(bodies),
            "startup_s": round(startup, 2), "wall_s": round(wall, 2), "qps": round(len(bodies) / wall, 1),
            "loadavg_before": list(load_before), "loadavg_after": list(load_after), "client": stats,
            "prometheus_requests_by_variant": counts, "server_handler_ms_mean_by_variant": server_ms,
            "log_impressions": n_log, "log_lines": sum(1 for _ in log.open()),
            "analysis_by_unit": analysis, "analysis_by_request": analysis_req,
            "analyze_table_by_unit": res.stderr}


def summarise(run: dict, treatment: str) -> dict:
    a = run["analysis_by_unit"]
    r = run["analysis_by_request"]
    share = {v["variant"]: v["n"] for v in a["variants"]}
    total_units = sum(share.values())
    c = a["comparisons"][treatment]
    cr = r["comparisons"][treatment]
    return {"units": total_units, "unit_share": {k: round(v / total_units, 4) for k, v in share.items()},
            "request_share": {k: round(v / run["log_impressions"], 4) for k, v in a["impressions"].items()},
            "srm_p_units": a["srm_p_value"], "srm_p_requests": r["srm_p_value"],
            "ctr_by_unit": {v["variant"]: [round(v["mean"], 5), round(v["ci_low"], 5), round(v["ci_high"], 5)]
                            for v in a["variants"]},
            "ctr_by_request": {v["variant"]: [round(v["mean"], 5), round(v["ci_low"], 5), round(v["ci_high"], 5)]
                               for v in r["variants"]},
            "diff_by_unit": [round(c["diff"], 5), round(c["ci_low"], 5), round(c["ci_high"], 5)],
            "p_by_unit": c["p_value"], "diff_by_request": [round(cr["diff"], 5), round(cr["ci_low"], 5),
                                                            round(cr["ci_high"], 5)],
            "p_by_request": cr["p_value"], "ips": r.get("ips")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--weights", default="0.7,0.3")
    ap.add_argument("--p-a", type=float, default=0.10)
    ap.add_argument("--p-b", type=float, default=0.12)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--out", default="benchmarks/results/issue9/abtest.json")
    args = ap.parse_args()
    wa, wb = (float(x) for x in args.weights.split(","))
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_abtest_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        a, b, build_s = build_bundles(work)
        print(f"bundles built in {build_s:.1f} s", file=sys.stderr)
        bodies = plan_requests(args.requests, args.seed)
        ab_cfg = {"name": "ab-bench", "salt": "ab-bench", "variants": [
            {"name": "A", "bundle": str(a), "weight": wa}, {"name": "B", "bundle": str(b), "weight": wb}]}
        ab = run_experiment("ab", ab_cfg, {"A": args.p_a, "B": args.p_b}, bodies, work, args.seed, args.concurrency)
        print(f"A/B: {ab['requests']} requests in {ab['wall_s']} s", file=sys.stderr)
        print(ab["analyze_table_by_unit"], file=sys.stderr)
        aa_cfg = {"name": "aa-bench", "salt": "aa-bench", "variants": [
            {"name": "A", "bundle": str(a), "weight": wa}, {"name": "A2", "bundle": str(a), "weight": wb}]}
        aa = run_experiment("aa", aa_cfg, {"A": args.p_a, "A2": args.p_a}, bodies, work, args.seed, args.concurrency)
        print(f"A/A: {aa['requests']} requests in {aa['wall_s']} s", file=sys.stderr)
        print(aa["analyze_table_by_unit"], file=sys.stderr)
    s_ab, s_aa = summarise(ab, "B"), summarise(aa, "A2")
    checks = {
        "ab_split_srm_p_gt_0.01": s_ab["srm_p_units"] > 0.01,
        "aa_split_srm_p_gt_0.01": s_aa["srm_p_units"] > 0.01,
        "ab_planted_difference_significant_p_lt_0.05": s_ab["p_by_unit"] < 0.05 and s_ab["diff_by_unit"][0] > 0,
        "aa_not_significant_p_ge_0.05": s_aa["p_by_unit"] >= 0.05,
        "no_request_errors": ab["client"]["errors"] + aa["client"]["errors"] + ab["client"]["feedback_errors"]
        + aa["client"]["feedback_errors"] == 0,
        "log_matches_prometheus": all(r["log_impressions"] == sum(r["prometheus_requests_by_variant"].get(
            f'{{variant="{v}"}}', 0) for v in r["analysis_by_unit"]["impressions"]) for r in (ab, aa)),
    }
    result = {"benchmark": "issue9 A/B on loopback", "date": dt.date.today().isoformat(),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "args": vars(args), "bundle_build_s": round(build_s, 1),
              "planted": {"A": args.p_a, "B": args.p_b, "where": "click simulator, by the variant in the response"},
              "summary": {"ab": s_ab, "aa": s_aa}, "checks": checks, "all_checks_pass": all(checks.values()),
              "total_s": round(time.perf_counter() - t_start, 1),
              "runs": {"ab": {k: v for k, v in ab.items() if k != "analyze_table_by_unit"},
                       "aa": {k: v for k, v in aa.items() if k != "analyze_table_by_unit"}}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({"summary": result["summary"], "checks": checks, "total_s": result["total_s"]}))
    if not result["all_checks_pass"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
