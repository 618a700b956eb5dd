#!/usr/bin/env bash
# The closed-form baselines with their defaults on the shared data sets, each under its data
# set's standard protocol (s3rec for Beauty / LastFM: history excluded; lightgcn for Gowalla;
# loo for MovieLens 100K; ties at random, seed 0). One `recstack train` per run.
# Usage: bash benchmarks/run_baselines.sh DATA_DIR OUT_DIR SETS [DEVICE]   (RECSTACK: the command, default recstack)
#   SETS: comma list of beauty, lastfm, gowalla, ml100k. Prints one JSON line per run.
set -euo pipefail
data=${1:-../shared/data}
out=${2:-benchmarks/results/issue17}
sets=${3:-beauty,lastfm,ml100k}
device=${4:-auto}
mkdir -p "$out"
run() {  # name, then recstack train arguments
  local name=$1; shift
  ${RECSTACK:-recstack} train --device "$device" "$@" 2>"$out/$name.log" | tail -n 1 | tee "$out/$name.json"
}
for set in ${sets//,/ }; do
  case $set in
    beauty) spec="s3rec:$data/amazon-beauty/Beauty.txt"; models="pop itemknn ease gfcf bspm" ;;
    lastfm) spec="s3rec:$data/lastfm-s3rec/LastFM.txt"; models="pop itemknn ease gfcf bspm" ;;
    ml100k) spec="atomic:$data/movielens-100k"; models="pop itemknn ease" ;;
    gowalla) spec="lightgcn:$data/gowalla"; models="pop itemknn gfcf bspm" ;;
    *) echo "unknown set $set" >&2; exit 2 ;;
  esac
  for m in $models; do
    run "${set}_$m" --model "$m" --data "$spec"
  done
  if [ "$set" = gowalla ]; then  # EASE needs a larger item cap for Gowalla's 40,981 items
    run "${set}_ease" --model ease --data "$spec" --set max_items=50000
  fi
done
