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
# Parts and their time limits (seconds): GPU tests 140 (tests/gpu: s = 0 bit-identity and exact
# mode with the memory on the GPU and in pinned host memory, the bound for TGN, JODIE and APAN,
# every batch's memory against a sequential replay through the real CUDA transfer, a mid-epoch
# resume, a failing stage, a one-GPU run of strategy="mspipe_ddp" on NCCL; about 60 s on an
# H200), pipeline speed (part 3) 130, accuracy under the published protocol (reduced: 2 seeds,
# ≤ 10 epochs, 16 runs at a time) 190; 460 s in all, plus start-up. A part cut by its limit keeps
# the rows it finished (the accuracy workers end with it). The exit status is 1 if any part failed.
#
#   bash bench/gpu_suite.sh --device cpu
# is the dry run on a machine without a GPU: the same GPU tests on the CPU (MSPIPE_TEST_DEVICE=cpu),
# the pipeline benchmark's --quick smoke run and a one-epoch accuracy run on the first 3,000 UCI
# events; it writes only to a temporary folder (about 2 minutes on 2 cores).
set -uo pipefail
cd "$(dirname "$0")/.."
device=cuda
case "${1:-}" in
  "") ;;
  --device) device="${2:-}" ;;
  *) echo "usage: bash bench/gpu_suite.sh [--device cuda|cpu]" >&2; exit 2 ;;
esac
case "$device" in cuda|cpu) ;; *) echo "gpu_suite.sh: --device must be cuda or cpu, got '$device'" >&2; exit 2 ;; esac
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export MSPIPE_DATASETS="${MSPIPE_DATASETS:-$( [ -d .data ] && echo "$PWD/.data" || echo "$PWD/../shared/datasets")}"
python="${PYTHON:-python3}"

failed=0
part() {  # part NAME LIMIT COMMAND...: run COMMAND with a time limit; remember a failure
  local name="$1" limit="$2"
  shift 2
  echo "## $name"
  timeout "$limit" "$@" || { echo "## $name: FAILED (exit $?)"; failed=1; }
}

if [ "$device" = cpu ]; then
  out=$(mktemp -d)
  {
    echo "# gpu_suite dry run on the CPU at $(date -u +%FT%TZ) (results to $out, kept nowhere)"
    part "GPU tests, on the CPU" 300 env MSPIPE_TEST_DEVICE=cpu "$python" -m pytest -q -p no:cacheprovider tests/gpu
    part "pipeline benchmark, --quick smoke run" 300 "$python" bench/pipeline.py --device cpu --quick \
      --datasets "$MSPIPE_DATASETS" --out "$out"
    part "accuracy, one short run" 300 "$python" bench/accuracy.py --device cpu --jobs 1 --seeds 0 --max-epochs 1 \
      --patience 1 --mrr-negatives 5 --max-events 3000 --models tgn --datasets uci --out "$out"
    echo "# dry run: $([ "$failed" = 0 ] && echo passed || echo FAILED)"
    exit "$failed"
  } 2>&1 | tee "$out/gpu_suite_dry_run.log"
  exit "${PIPESTATUS[0]}"
fi

out="${OUT:-bench/results}"
mkdir -p "$out"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '_')
card="${card:-unknown_gpu}"
log="$out/gpu_suite_${card}.log"
{
  echo "# gpu_suite on ${card} at $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  "$python" -c "import torch, lightning; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', lightning.__version__)"
  part "GPU tests (tests/gpu)" 140 "$python" -m pytest -q -p no:cacheprovider tests/gpu
  part "pipeline benchmark, part 3 (GPU, memory and features in pinned host memory)" 130 \
    "$python" bench/pipeline.py --device cuda --datasets "$MSPIPE_DATASETS" --out "$out" --tag "gpu_${card}" \
    --quiet-threshold 0 --plan tgn=seq,0,2,auto jodie=seq,0,auto apan=seq,auto
  part "accuracy, published protocol (reduced)" 190 "$python" bench/accuracy.py --device cuda --jobs 16 \
    --seeds 0 1 --max-epochs 10 --patience 3 --mrr-negatives 20 --out "$out"
  exit "$failed"
} 2>&1 | tee "$log"
exit "${PIPESTATUS[0]}"
