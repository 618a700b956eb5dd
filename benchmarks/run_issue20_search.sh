#!/usr/bin/env bash
# Issue 20's default search on one GPU (device tool): bsarec.yaml and sasrec.yaml grids on
# Beauty, then LastFM (s3rec files, s3rec protocol), validation only (--no-test); every grid
# point in its own process (--jobs), all sharing the GPU. Results under $OUT.
#   usage: bash benchmarks/run_issue20_search.sh DATA_DIR   (holding amazon-beauty/, lastfm-s3rec/)
set -u
D=${1:-../shared/data}; OUT=${OUT:-/tmp/issue20}; mkdir -p "$OUT"
CAP="--set epochs=100"   # a cap for the search only; early stopping (patience 10) ends runs before it
for ds in "beauty:s3rec:$D/amazon-beauty/Beauty.txt" "lastfm:s3rec:$D/lastfm-s3rec/LastFM.txt"; do
  name=${ds%%:*}; spec=${ds#*:}
  echo "=== $(date -u +%FT%TZ) $name"
  python3 -m recstack.cli tune --model bsarec --data "$spec" --grid-file benchmarks/grids/bsarec.yaml --device cuda \
    --no-test --jobs 9 $CAP --log "$OUT/bsarec_$name.jsonl" > "$OUT/bsarec_$name.out" 2>&1 &
  python3 -m recstack.cli tune --model sasrec --data "$spec" --grid-file benchmarks/grids/sasrec.yaml --device cuda \
    --no-test --jobs 8 $CAP --log "$OUT/sasrec_$name.jsonl" > "$OUT/sasrec_$name.out" 2>&1 &
  wait
  tail -c 600 "$OUT/bsarec_$name.out"; tail -c 600 "$OUT/sasrec_$name.out"
done
for m in bsarec sasrec; do python3 benchmarks/select_across.py --metric ndcg@20 "$OUT/${m}_beauty.jsonl" "$OUT/${m}_lastfm.jsonl" | tail -1; done
echo "=== $(date -u +%FT%TZ) done"
