#!/usr/bin/env bash
# Issue 20, after round 2 of the default search: (1) `recstack train --model sasrec` with defaults
# on Beauty, alone on the GPU: time from the command's start to the best epoch (and seed 0's test);
# (2) the speed comparison with RecBole 1.2.1 in the same run (bench_seq_speed.py, matched
# settings, nothing else on the GPU); (3) the other test runs with defaults at once: sasrec seeds
# 1-2 on Beauty and 0-2 on LastFM, bert4rec and gru4rec seeds 0-2 on Beauty. Results under $OUT.
#   usage: bash benchmarks/run_issue20_round2_test.sh DATA_DIR PEERS_DIR
set -u
D=${1:-../shared/data}; P=${2:-../shared/peers}; OUT=${OUT:-/tmp/issue20}; mkdir -p "$OUT"
B="s3rec:$D/amazon-beauty/Beauty.txt"; L="s3rec:$D/lastfm-s3rec/LastFM.txt"
t0=$(date +%s.%N)
python3 -m recstack.cli train --model sasrec --data "$B" --device cuda --seed 0 --set progress=false \
  --out "$OUT/run_sasrec_beauty_s0" > "$OUT/test_sasrec_beauty_s0.out" 2>&1
t1=$(date +%s.%N)
python3 - "$OUT/run_sasrec_beauty_s0" "$t0" "$t1" <<'PY'
import json, sys
d, t0, t1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
res, hist = json.load(open(f"{d}/result.json")), json.load(open(f"{d}/history.json"))
best = hist[res["best_epoch"] - 1]
print(json.dumps({"time_to_best_epoch_s": round(best["finished_at"] - t0, 2), "command_wall_s": round(t1 - t0, 2),
                  "best_epoch": res["best_epoch"], "epochs_run": len(hist), "train_seconds": res["train_seconds"],
                  "median_epoch_s": sorted(h["seconds"] + h.get("validation_seconds", 0) for h in hist)[len(hist) // 2]}))
PY
python3 benchmarks/bench_seq_speed.py --data "$B" --device cuda --variants "${VARIANTS:-graph,plain}" --epochs 6 \
  --recbole-epochs "${RB_EPOCHS:-3}" \
  --peers "$P" --out "$OUT/speed_vs_recbole.jsonl" 2>&1 | grep -v '^{"date' | tail -5
for job in "sasrec $B 1" "sasrec $B 2" "sasrec $L 0" "sasrec $L 1" "sasrec $L 2" \
           "bert4rec $B 0" "bert4rec $B 1" "bert4rec $B 2" "gru4rec $B 0" "gru4rec $B 1" "gru4rec $B 2"; do
  set -- $job; name=$(basename "${2#*:}" .txt)
  timeout "${LIMIT:-280}" python3 -m recstack.cli train --model $1 --data "$2" --device cuda --seed $3 --set progress=false \
    > "$OUT/test_${1}_${name}_s$3.out" 2>&1 &
done
wait
for f in "$OUT"/test_*.out; do tail -1 "$f" | grep '^{' >> "$OUT/test_results.jsonl" || echo "FAILED $f: $(tail -c 300 "$f")"; done
python3 - "$OUT/test_results.jsonl" <<'PY'
import json, sys, statistics as st
by = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    by.setdefault((r["model"], r["data"].split("/")[-1]), []).append(r)
for k, rs in sorted(by.items()):
    print(k, len(rs), {m: round(st.mean(r["metrics"][m] for r in rs), 4) for m in ("ndcg@10", "hr@10", "ndcg@20", "hr@20")},
          "best_epochs", [r.get("best_epoch") for r in rs], "train_s", [r["train_seconds"] for r in rs])
PY
