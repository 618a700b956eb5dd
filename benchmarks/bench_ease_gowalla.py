"""EASE on Gowalla: the l2 search on validation, then the final run with its time and memory
(issue 21, "EASE that fits").

Three steps, each one command:

(a) search: every l2 of ``benchmarks/grids/ease.yaml`` fitted on 80% of each user's training
    interactions and scored on the other 20% (seed 0; `recstack tune`'s holdout for a given
    split), NDCG@20 selects, the test set is never read (``--no-test``). Each 41k x 41k solve
    takes seconds on a GPU and most of an hour on a 2-core CPU: run it on a GPU.

        python benchmarks/bench_ease_gowalla.py search --device cuda \\
            --log benchmarks/results/issue21/ease_gowalla_search_cuda.jsonl

    which runs

        recstack tune --model ease --data lightgcn:../shared/data/gowalla \\
            --grid-file benchmarks/grids/ease.yaml --no-test --device cuda --log ...

(b) final: ``recstack train --model ease`` (no ``--set``: the default l2, which the search
    should confirm; ``--l2 X`` adds ``--set l2=X`` if it picks another) under
    ``/usr/bin/time -v``, on the CPU by default; its JSON line (metrics, the model's memory
    estimate and peak RSS) and time's figures (wall time, maximum resident set size) are saved:

        python benchmarks/bench_ease_gowalla.py final --device cpu \\
            --out benchmarks/results/issue21/ease_gowalla_cpu.json

(c) collect: (b)'s saving step alone, for a run made by hand (``/usr/bin/time -v recstack
    train ... > stdout 2> stderr``):

        python benchmarks/bench_ease_gowalla.py collect --stdout stdout --stderr stderr --out ...
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

DATA = "lightgcn:../shared/data/gowalla"
GRID = "benchmarks/grids/ease.yaml"
#: /usr/bin/time -v lines kept, by their label
TIME_FIELDS = {
    "Elapsed (wall clock) time (h:mm:ss or m:ss)": "wall",
    "Maximum resident set size (kbytes)": "max_rss_kbytes",
    "User time (seconds)": "user_seconds",
    "System time (seconds)": "system_seconds",
    "Percent of CPU this job got": "cpu_percent",
    "Exit status": "exit_status",
}


def _recstack() -> list[str]:
    exe = shutil.which("recstack")
    return [exe] if exe else [sys.executable, "-m", "recstack"]


def _seconds(wall: str) -> float:
    """'1:02:03.4' / '2:03.4' -> seconds."""
    s = 0.0
    for part in wall.split(":"):
        s = 60 * s + float(part)
    return s


def parse_time_v(text: str) -> dict[str, Any]:
    """The figures of /usr/bin/time -v's report in `text` (stderr of the run)."""
    out: dict[str, Any] = {}
    for line in text.splitlines():
        label, _, value = line.strip().rpartition(": ")
        if label in TIME_FIELDS:
            out[TIME_FIELDS[label]] = value.strip()
        elif line.strip().startswith("Command terminated by signal"):
            out["terminated_by"] = line.strip()
    if "wall" in out:
        out["wall_seconds"] = round(_seconds(out.pop("wall")), 2)
    if "max_rss_kbytes" in out:
        kb = int(out["max_rss_kbytes"])
        out["max_rss_kbytes"] = kb
        out["max_rss_gib"] = round(kb * 1024 / 2**30, 3)
        out["max_rss_gb"] = round(kb * 1024 / 1e9, 3)
    return out


def collect(stdout: str, stderr: str, out: str | None, start: str | None = None,
            end: str | None = None, command: list[str] | None = None) -> dict[str, Any]:
    """The run's last JSON line + time's figures + the machine -> one JSON object (to `out`)."""
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    row: dict[str, Any] = json.loads(lines[-1]) if lines else {"error": "no JSON line on stdout",
                                                               "stderr_tail": stderr[-2000:]}
    row["time_v"] = parse_time_v(stderr)
    row["run"] = {
        "command": " ".join(command) if command else
        f"/usr/bin/time -v recstack train --model ease --data {DATA} --device cpu",
        "start_utc": start, "end_utc": end, "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "load_avg_at_collect": [round(x, 2) for x in os.getloadavg()],
    }
    text = json.dumps(row, indent=2)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
    print(text)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    s = sub.add_parser("search", help="(a) the l2 search on a validation holdout of train")
    s.add_argument("--data", default=DATA)
    s.add_argument("--grid-file", default=GRID)
    s.add_argument("--device", default="cuda")
    s.add_argument("--log", default=None, help="one JSON line per candidate and the choice")
    f = sub.add_parser("final", help="(b) recstack train under /usr/bin/time -v, saved as JSON")
    f.add_argument("--data", default=DATA)
    f.add_argument("--device", default="cpu")
    f.add_argument("--l2", type=float, default=None, help="only if the search chose another l2")
    f.add_argument("--out", default="benchmarks/results/issue21/ease_gowalla_cpu.json")
    c = sub.add_parser("collect", help="(c) save a run made by hand")
    c.add_argument("--stdout", required=True)
    c.add_argument("--stderr", required=True)
    c.add_argument("--out", default=None)
    c.add_argument("--start", default=None)
    c.add_argument("--end", default=None)
    args = ap.parse_args()

    if args.step == "search":
        cmd = [*_recstack(), "tune", "--model", "ease", "--data", args.data, "--grid-file",
               args.grid_file, "--no-test", "--device", args.device]
        if args.log:
            cmd += ["--log", args.log]
        print("+", " ".join(cmd), flush=True)
        sys.exit(subprocess.run(cmd).returncode)
    if args.step == "collect":
        collect(Path(args.stdout).read_text(), Path(args.stderr).read_text(), args.out, args.start, args.end)
        return
    cmd = [*_recstack(), "train", "--model", "ease", "--data", args.data, "--device", args.device]
    if args.l2 is not None:
        cmd += ["--set", f"l2={args.l2:g}"]
    if Path("/usr/bin/time").exists():
        cmd = ["/usr/bin/time", "-v", *cmd]
    print("+", " ".join(cmd), flush=True)
    start = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    res = subprocess.run(cmd, capture_output=True, text=True)
    end = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    sys.stderr.write(res.stderr[-4000:])
    collect(res.stdout, res.stderr, args.out, start, end, cmd)
    sys.exit(res.returncode)


if __name__ == "__main__":
    main()
