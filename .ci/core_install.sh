#!/usr/bin/env bash
# The lean core: `pip install .` (no extra; `bash .ci/core_install.sh WHEEL` installs that
# wheel instead) into a fresh virtual environment, then
# `recstack train --model ease --data embedded` must succeed, and `recstack serve` must stop with
# the one line naming the extra it needs (exit status 2, no traceback).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
if [ $# -gt 0 ]; then set -- "$(realpath "$1")"; fi
start=$SECONDS
# where this machine keeps its local wheels (the torch CPU build among them)
if [ -d /opt/wheels ] && [ -z "${PIP_FIND_LINKS:-}" ]; then export PIP_FIND_LINKS=/opt/wheels; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q torch==2.13.0
"$py" -m pip install -q "${1:-$repo}"
echo "core install: done in $((SECONDS - start)) s"

# no optional package came with the core
"$py" - <<'PY'
import importlib.util
optional = ["fastapi", "uvicorn", "faiss", "matplotlib", "tensorboard", "onnx", "onnxruntime",
            "orjson", "httpx", "prometheus_client", "sentence_transformers"]
found = [m for m in optional if importlib.util.find_spec(m) is not None]
assert not found, f"the core install brought optional packages: {found}"
PY

cd "$work"  # away from the source tree: the installed package runs
"$work/venv/bin/recstack" --version
"$work/venv/bin/recstack" train --model ease --data embedded --device cpu >"$work/train.out"
tail -n 1 "$work/train.out" | "$py" -c 'import json, sys; r = json.loads(sys.stdin.read()); assert r["model"] == "ease" and r["metrics"], r; print("core install: ease trained,", r["metrics"])'

status=0
msg="$("$work/venv/bin/recstack" serve x 2>&1)" || status=$?
expected='error: recstack serve needs the '"'"'serve'"'"' extra: pip install "recstack[serve]"'
if [ "$status" -ne 2 ] || [ "$msg" != "$expected" ]; then
    echo "core install: recstack serve without the extra: exit $status, output:" >&2
    echo "$msg" >&2
    exit 1
fi
echo "core install: recstack serve says: $msg"
echo "core install: passed in $((SECONDS - start)) s"
