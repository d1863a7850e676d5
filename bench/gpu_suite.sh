#!/usr/bin/env bash
# Every GPU test and benchmark in one go, within the device's 10-minute command limit.
#
# On the lent GPU machine (its image has torch, lightning, torchmetrics, pandas, hypothesis and
# torch-geometric; nothing can be downloaded there), from the repository root:
#   bash bench/gpu_suite.sh
# ../shared does not travel to that machine: copy the data sets into an ignored folder first
# (echo /.data/ >> .git/info/exclude; cp -r ../shared/datasets .data), carry `.data`, and the
# script finds them there (or set MSPIPE_DATASETS). Results go to $OUT (the device tool's
# return folder) or bench/results/, named after the card; commit them.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MSPIPE_DATASETS="${MSPIPE_DATASETS:-$( [ -d .data ] && echo "$PWD/.data" || echo "$PWD/../shared/datasets")}"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '_')
card="${card:-unknown_gpu}"
log="$out/gpu_suite_${card}.log"
{
  echo "# gpu_suite on ${card} at $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', lightning.__version__)"
  echo "## GPU tests (tests/gpu)"
  timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu
  echo "## pipeline benchmark, part 3 (GPU, memory and features in pinned host memory)"
  timeout 330 python3 bench/pipeline.py --device cuda --datasets "$MSPIPE_DATASETS" --out "$out" --tag "gpu_${card}"
} 2>&1 | tee "$log"
