#!/usr/bin/env bash
# On the GPU machine, from the repository root, with .device/ built by tools/gpu_build.sh:
# the CUDA test subset, then a short training run of the 27m preset at T=512 (bf16), each
# logged under $OUT. Prints a short table last.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/archlab-gpu}
mkdir -p "$OUT"
bash tools/gpu_unpack.sh
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"

# The cuda test binary looks for ../shared/data relative to the source tree; none is needed here.
# ARCHLAB_REQUIRE_CUDA: a missing or broken GPU fails the tests instead of skipping them.
ARCHLAB_REQUIRE_CUDA=1 .device/all-tests cuda:: --nocapture --test-threads 1 2>&1 | tee "$OUT/cuda-tests.log"

steps=${STEPS:-300}
.device/archlab train --preset 27m --device cuda --quiet --run-dir "$OUT/run-27m" \
  --set train.max_steps="$steps" --set train.checkpoint_every=0 --set eval.every="$steps" \
  2>&1 | tee "$OUT/train-27m.log"
cp "$OUT/run-27m/summary.json" "$OUT/summary-27m.json" 2>/dev/null
rm -f "$OUT"/run-27m/*.ckpt

echo
grep -E "^test result" "$OUT/cuda-tests.log"
grep -E "^\|" "$OUT/train-27m.log"
