#!/usr/bin/env bash
# One device call (H200), 2026-12-03 fifth session, issues 21 and 20, validation only except (C):
#  A. alone on the GPU: BPR-MF / LightGCN seconds per epoch (the unrolled graphed epoch, 8 steps
#     per replay) against RecBole 1.2.1's BPR in the same run (benchmarks/bench_mf_speed.py);
#  B. at once, validation only (--no-test): SASRec round 4 (benchmarks/grids/sasrec_round4.yaml)
#     and GRU4Rec round 3 (gru4rec_round3.yaml) on Beauty and LastFM; the EASE l2 search
#     (ease.yaml) and MF's contrastive-loss search (mf_ccl.yaml) on a holdout of Gowalla's train;
#  C. with B: `recstack train --model mf` with defaults on Gowalla (train_seconds and test: the
#     acceptance run of the defaults, which no search here touches), and the EASE GPU-solve test.
#   usage: bash benchmarks/run_issue20_21_call1.sh DATA_DIR PEERS_DIR   (results under $OUT)
set -u
D=${1:-../shared/data}; P=${2:-../shared/peers}; OUT=${OUT:-/tmp/c1}; mkdir -p "$OUT"
G="$D/gowalla"; LIM=${LIMIT:-420}
echo "=== $(date -u +%FT%TZ) A: speed"
timeout "${SPEED_LIMIT:-150}" python3 benchmarks/bench_mf_speed.py --data "$G" --device cuda --models mf,lightgcn \
  --variants graph --epochs "${EPOCHS:-5}" --recbole-epochs "${RB_EPOCHS:-3}" --peers "$P" --out "$OUT/mf_speed.jsonl" 2>&1 \
  | grep -v '^{"date' | tail -6
echo "=== $(date -u +%FT%TZ) B+C"
for ds in "beauty:s3rec:$D/amazon-beauty/Beauty.txt" "lastfm:s3rec:$D/lastfm-s3rec/LastFM.txt"; do
  name=${ds%%:*}; spec=${ds#*:}
  timeout "$LIM" python3 -m recstack.cli tune --model sasrec --data "$spec" --grid-file benchmarks/grids/sasrec_round4.yaml \
    --device cuda --no-test --jobs 6 --log "$OUT/sasrec_$name.jsonl" > "$OUT/sasrec_$name.out" 2>&1 &
  timeout "$LIM" python3 -m recstack.cli tune --model gru4rec --data "$spec" --grid-file benchmarks/grids/gru4rec_round3.yaml \
    --device cuda --no-test --jobs 4 --log "$OUT/gru4rec_$name.jsonl" > "$OUT/gru4rec_$name.out" 2>&1 &
done
timeout "$LIM" python3 benchmarks/bench_ease_gowalla.py search --data "lightgcn:$G" --device cuda --log "$OUT/ease_search.jsonl" > "$OUT/ease_search.out" 2>&1 &
timeout "$LIM" python3 -m recstack.cli tune --model mf --data "lightgcn:$G" --grid-file benchmarks/grids/mf_ccl.yaml \
  --device cuda --no-test --jobs 4 --log "$OUT/mf_ccl.jsonl" > "$OUT/mf_ccl.out" 2>&1 &
timeout "$LIM" python3 -m recstack.cli train --model mf --data "lightgcn:$G" --device cuda --set progress=false \
  --set log_path="$OUT/mf_defaults_curve.jsonl" > "$OUT/mf_defaults.out" 2>&1 &
(python3 -m pytest -q -p no:cacheprovider tests/models/test_ease_solve.py -k cuda > "$OUT/ease_solve_test.out" 2>&1) &
wait
echo "=== $(date -u +%FT%TZ) B+C ended"
for m in sasrec gru4rec; do
  echo "--- $m"; python3 benchmarks/select_across.py --metric ndcg@20 "$OUT/${m}_beauty.jsonl" "$OUT/${m}_lastfm.jsonl" | tail -1
done
for f in "$OUT"/*.out; do echo "--- $f: $(tail -c 400 "$f")"; done
