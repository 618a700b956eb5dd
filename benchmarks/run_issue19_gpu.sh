#!/usr/bin/env bash
# Issue 19's GPU figures, in one run on one GPU (device tool; needs polars etc. on PYTHONPATH):
#   part A: the CUDA tests of the fast path, bench_dlrm.py (the library's fused step on
#           pre-made batches) and `recstack train --model dlrm --device cuda` (the product's
#           trainer), bench again after it; part B: fast vs plain path (valid AUC, 2 seeds) and
#           `recstack quickstart --device cuda`.
#   usage: bash benchmarks/run_issue19_gpu.sh A|B   (results under $OUT)
set -u
OUT=${OUT:-/tmp/issue19}; mkdir -p "$OUT"
log() { echo "=== $(date -u +%FT%TZ) $*"; }
DLRM_SET="--set sparse=true --set batch_size=65536 --set dim=128 --set bottom=[512,256] --set top=[512,256] --set dropout=0.0 --set init_std=0.01 --set lr=0.001 --set embedding_lr=0.05 --set patience=0"
if [ "${1:-A}" = A ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  log tests; timeout 200 python3 -m pytest -q -p no:cacheprovider -W ignore tests/models/ctr/test_dlrm_kernels.py tests/models/ctr/test_fast_path.py 2>&1 | tail -15
  for i in 1 2; do
    log "bench $i"; timeout 120 python3 benchmarks/bench_dlrm.py --device cuda --table-mode kernels --cuda-graph --mlp kaggle --out "$OUT/bench_dlrm.jsonl" | cut -c1-1200
    if [ $i = 1 ]; then
      log "recstack train"; timeout 300 python3 -m recstack.cli train --model dlrm --data synthetic-criteo:8000000 --device cuda $DLRM_SET --set epochs=3 --out "$OUT/train_dlrm" > "$OUT/train_dlrm.txt" 2>&1
      echo "rc=$?"; tail -c 2500 "$OUT/train_dlrm.txt"
    fi
  done
  log "bench bf16 + prefetch"; timeout 120 python3 benchmarks/bench_dlrm.py --device cuda --table-mode kernels --cuda-graph --mlp kaggle --table-dtype bfloat16 --prefetch-dedup --out "$OUT/bench_dlrm.jsonl" | cut -c1-600
elif [ "${1}" = NEW ]; then
  log "bench"; timeout 120 python3 benchmarks/bench_dlrm.py --device cuda --table-mode kernels --cuda-graph --mlp kaggle --out "$OUT/bench_dlrm.jsonl" | cut -c1-700
elif [ "${1}" = OLD ]; then
  # the bench as it was before it called the library (its own loop + GraphedDLRMStep), from a
  # `git archive` of the parent of the fast-path commit unpacked in old19/: same flags, same run
  log "old bench"; (cd old19 && PYTHONPATH=/tmp/site:$PWD/src timeout 120 python3 benchmarks/bench_dlrm.py --device cuda --table-mode kernels --cuda-graph --mlp kaggle --out "$OUT/bench_dlrm_old.jsonl" | cut -c1-700)
else
  log paths; timeout 330 python3 benchmarks/bench_dlrm_paths.py --device cuda --rows 4000000 --seeds 0,1 --epochs 2 --out "$OUT/dlrm_paths.jsonl" 2>&1 | cut -c1-900
  F=""; python3 -c "import faiss" 2>/dev/null || F="$F --index exact"; python3 -c "import matplotlib" 2>/dev/null || F="$F --no-report"
  log "quickstart flags:$F"; S=$SECONDS; timeout 250 python3 -m recstack.cli quickstart --device cuda --out /tmp/qs $F > "$OUT/qs_stdout.txt" 2> "$OUT/qs_stderr.txt"
  echo "rc=$? wall_s=$((SECONDS-S))"; cp /tmp/qs/results.json "$OUT/qs_results.json" 2>/dev/null; tail -c 1500 "$OUT/qs_stdout.txt"; tail -5 "$OUT/qs_stderr.txt"
fi
log done
