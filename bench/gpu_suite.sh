#!/usr/bin/env bash
# Every GPU test and benchmark in one go, in at most 8 minutes on one GPU, writing results as it goes.
#
# On the lent GPU machine (its image has torch, lightning, torchmetrics, pandas, hypothesis,
# matplotlib and torch-geometric; nothing can be downloaded there), from the repository root:
#   bash bench/gpu_suite.sh
# ../shared does not travel to that machine: copy the data sets into an ignored folder first
# (echo /.data/ >> .git/info/exclude; cp -r ../shared/datasets .data), carry `.data`, and the
# script finds them there (or set MSPIPE_DATASETS). Results go to $OUT (the device tool's
# return folder) or bench/results/, named after the card; commit them.
#
# Parts and their time limits (seconds): GPU tests 100, pipeline speed (part 3) 130, accuracy
# under the published protocol (reduced: 2 seeds, ≤ 10 epochs, 16 runs at a time) 200; a part cut by its
# limit keeps the rows it finished (the accuracy workers end with it).
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
  timeout 100 python3 -m pytest -q -p no:cacheprovider tests/gpu
  echo "## pipeline benchmark, part 3 (GPU, memory and features in pinned host memory)"
  timeout 130 python3 bench/pipeline.py --device cuda --datasets "$MSPIPE_DATASETS" --out "$out" --tag "gpu_${card}" \
    --quiet-threshold 0 --plan tgn=seq,0,2,auto jodie=seq,0,auto apan=seq,auto
  echo "## accuracy, published protocol (reduced)"
  timeout 200 python3 bench/accuracy.py --device cuda --jobs 16 --seeds 0 1 --max-epochs 10 --patience 3 \
    --mrr-negatives 20 --out "$out"
} 2>&1 | tee "$log"
