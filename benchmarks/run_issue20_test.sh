#!/usr/bin/env bash
# Issue 20: the chosen defaults (benchmarks/results/issue20/*_selection.jsonl) scored on the
# test sets once: sasrec and bsarec with defaults, seeds 0-2, Beauty and LastFM (s3rec protocol),
# all 12 runs at once on one GPU. Results under $OUT.   usage: bash ... DATA_DIR
set -u
D=${1:-../shared/data}; OUT=${OUT:-/tmp/issue20}; mkdir -p "$OUT"
for m in sasrec bsarec; do
  for ds in "beauty:s3rec:$D/amazon-beauty/Beauty.txt" "lastfm:s3rec:$D/lastfm-s3rec/LastFM.txt"; do
    for s in ${SEEDS:-0 1 2}; do
      python3 -m recstack.cli train --model $m --data "${ds#*:}" --device cuda --seed $s --set progress=false \
        > "$OUT/test_${m}_${ds%%:*}_s$s.out" 2>&1 &
    done
  done
done
wait
for f in "$OUT"/test_*.out; do tail -1 "$f" | grep '^{' >> "$OUT/test_results.jsonl" || echo "FAILED $f: $(tail -2 "$f")"; done
python3 - "$OUT/test_results.jsonl" <<'PY'
import json, sys, statistics as st
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault((r["model"], r["data"].split("/")[-1]), []).append(r["metrics"])
for k, ms in sorted(by.items()):
    print(k, len(ms), {m: round(st.mean(x[m] for x in ms), 4) for m in ("ndcg@10", "hr@10", "ndcg@20", "hr@20")})
PY
