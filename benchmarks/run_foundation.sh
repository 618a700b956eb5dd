#!/usr/bin/env bash
# Issue 2 acceptance runs: baselines on the shared data sets with their standard protocols.
# Usage: bash benchmarks/run_foundation.sh [DATA_DIR] [OUT_DIR]; prints one JSON line per run.
set -euo pipefail
data=${1:-../shared/data}
out=${2:-benchmarks/results/foundation}
mkdir -p "$out"
run() {  # name, then recstack train arguments
  local name=$1; shift
  recstack train "$@" 2>"$out/$name.log" | tail -n 1 | tee "$out/$name.json"
}
for m in pop itemknn ease; do
  run "beauty_$m" --model $m --data "s3rec:$data/amazon-beauty/Beauty.txt"
done
run gowalla_itemknn --model itemknn --data "lightgcn:$data/gowalla"
for m in pop itemknn ease; do
  run "ml100k_$m" --model $m --data "atomic:$data/movielens-100k"
done
