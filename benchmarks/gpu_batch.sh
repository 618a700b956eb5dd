#!/usr/bin/env bash
# Runs on the device tool's GPU machine: installs carried wheels, unpacks carried data, then
# runs the commands given as arguments (each a quoted shell line). Results: $OUT/results.jsonl,
# logs: $OUT/log.txt. Usage (device tool): bash benchmarks/gpu_batch.sh 'CMD1' 'CMD2' ...
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
find .benchdata -name '*.gz' -exec gunzip -kf {} \;
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$OUT/log.txt"
python3 -c "import torch, scipy, numpy, polars; print('torch', torch.__version__, 'scipy', scipy.__version__, 'numpy', numpy.__version__, 'polars', polars.__version__)" 2>&1 | tee -a "$OUT/log.txt"
for cmd in "$@"; do
  echo "=== $(date -u +%FT%TZ) $cmd" | tee -a "$OUT/log.txt"
  start=$(date +%s)
  bash -c "$cmd" 2>>"$OUT/log.txt" | tee -a "$OUT/log.txt" | grep '^{' >> "$OUT/results.jsonl"
  echo "=== took $(( $(date +%s) - start ))s" | tee -a "$OUT/log.txt"
done
