#!/usr/bin/env bash
# One device call (H200), issue 21 then issue 20 (2026-12-03, fourth session):
#  A. alone on the GPU: BPR-MF / LightGCN seconds per epoch, graphed and plain steps, against
#     RecBole 1.2.1's BPR in the same run (benchmarks/bench_mf_speed.py);
#  B. at once: LightGCN and MF with defaults on Gowalla (train_seconds, test), the MF-CCL option's
#     search on a holdout of train (benchmarks/grids/mf_ccl.yaml, validation only), and issue 20's
#     test runs of the round-3 defaults (SASRec seeds 0-2 on Beauty and LastFM, GRU4Rec seeds 0-2
#     on Beauty).
#   usage: bash benchmarks/run_issue21_20_gpu.sh DATA_DIR PEERS_DIR   (results under $OUT)
set -u
D=${1:-../shared/data}; P=${2:-../shared/peers}; OUT=${OUT:-/tmp/i21}; mkdir -p "$OUT"
G="$D/gowalla"; B="s3rec:$D/amazon-beauty/Beauty.txt"; L="s3rec:$D/lastfm-s3rec/LastFM.txt"
echo "=== $(date -u +%FT%TZ) A: speed"
timeout "${SPEED_LIMIT:-200}" python3 benchmarks/bench_mf_speed.py --data "$G" --device cuda --models mf,lightgcn \
  --variants "${VARIANTS:-graph,plain}" --epochs "${EPOCHS:-5}" --recbole-epochs "${RB_EPOCHS:-3}" --peers "$P" --out "$OUT/mf_speed.jsonl" 2>&1 \
  | grep -v '^{"date' | tail -8
echo "=== $(date -u +%FT%TZ) B: quality runs at once"
LIM=${LIMIT:-330}
timeout "$LIM" python3 -m recstack.cli train --model lightgcn --data "lightgcn:$G" --device cuda --set progress=false \
  --set log_path="$OUT/lightgcn_curve.jsonl" > "$OUT/lightgcn_defaults.out" 2>&1 &
timeout "$LIM" python3 -m recstack.cli train --model mf --data "lightgcn:$G" --device cuda --set progress=false \
  --set log_path="$OUT/mf_curve.jsonl" > "$OUT/mf_defaults.out" 2>&1 &
timeout "$LIM" python3 -m recstack.cli tune --model mf --data "lightgcn:$G" --grid-file benchmarks/grids/mf_ccl.yaml \
  --device cuda --no-test --jobs 4 --log "$OUT/mf_ccl_gowalla.jsonl" > "$OUT/mf_ccl_tune.out" 2>&1 &
for job in "sasrec $B 0" "sasrec $B 1" "sasrec $B 2" "sasrec $L 0" "sasrec $L 1" "sasrec $L 2" \
           "gru4rec $B 0" "gru4rec $B 1" "gru4rec $B 2"; do
  set -- $job; name=$(basename "${2#*:}" .txt)
  timeout "$LIM" python3 -m recstack.cli train --model $1 --data "$2" --device cuda --seed $3 --set progress=false \
    > "$OUT/test_${1}_${name}_s$3.out" 2>&1 &
done
wait
echo "=== $(date -u +%FT%TZ) B ended"
for f in "$OUT"/*.out; do tail -1 "$f" | grep -q '^{' || echo "NO RESULT $f: $(tail -c 300 "$f")"; done
