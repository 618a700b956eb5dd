#!/usr/bin/env bash
# Issue 20, round 4 of the default search on one GPU (device tool): benchmarks/grids/sasrec_round4
# on Beauty and LastFM at once (s3rec files, s3rec protocol), validation only
# (--no-test); every grid point in its own process, all sharing the GPU. Logs under $OUT; then the
# choice per model (benchmarks/select_across.py).
#   usage: bash benchmarks/run_issue20_round4.sh DATA_DIR   (holding amazon-beauty/, lastfm-s3rec/)
set -u
D=${1:-../shared/data}; OUT=${OUT:-/tmp/issue20}; mkdir -p "$OUT"; LIMIT=${LIMIT:-540}
declare -A GRID=([sasrec]=sasrec_round4)
MODELS=${MODELS:-sasrec}; JOBS=${JOBS:-6}
echo "=== $(date -u +%FT%TZ) start"
for ds in "beauty:s3rec:$D/amazon-beauty/Beauty.txt" "lastfm:s3rec:$D/lastfm-s3rec/LastFM.txt"; do
  name=${ds%%:*}; spec=${ds#*:}
  for m in $MODELS; do
    timeout "$LIMIT" python3 -m recstack.cli tune --model $m --data "$spec" --grid-file benchmarks/grids/${GRID[$m]}.yaml \
      --device cuda --no-test --jobs "$JOBS" --log "$OUT/${m}_$name.jsonl" > "$OUT/${m}_$name.out" 2>&1 &
  done
done
wait
echo "=== $(date -u +%FT%TZ) searches ended"
for m in $MODELS; do
  echo "--- $m"; python3 benchmarks/select_across.py --metric ndcg@20 "$OUT/${m}_beauty.jsonl" "$OUT/${m}_lastfm.jsonl" | tail -1
done
