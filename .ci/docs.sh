#!/usr/bin/env bash
# CI: build the documentation site (docs/*.md + the API reference from the docstrings) with
# warnings as errors. Needs the `docs` extra in the active environment: pip install -e ".[docs]".
# Exits non-zero on any warning: mkdocs --strict aborts on one, and the log is checked as well
# (a warning logged by a plugin outside mkdocs' own counter fails the step too).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
log="$out/build.log"
trap 'rm -rf "$out"' EXIT
start=$SECONDS
status=0
python -m mkdocs build --strict --clean --site-dir "$out/site" >"$log" 2>&1 || status=$?
cat "$log"
if [ "$status" -ne 0 ]; then
    echo "docs: mkdocs build --strict failed (exit $status)" >&2
    exit "$status"
fi
if grep -Eq '^(WARNING|ERROR)' "$log"; then
    echo "docs: the build logged warnings (see above)" >&2
    exit 1
fi
test -f "$out/site/index.html" && test -f "$out/site/api/index.html"
echo "docs: built with no warning in $((SECONDS - start))s"
