#!/usr/bin/env bash
# Builds, on the CPU-only build machine, everything tools/gpu_check.sh runs on the GPU machine
# (which has no Rust toolchain), into .device/ (ignored through .git/info/exclude).
#
#   tools/gpu_build.sh            then, with the device tool:
#   run(command="bash tools/gpu_check.sh", carry=[".device"])
#
# CUDARC_CUDA_VERSION pins the CUDA API bindings to the driver there (CUDA 13.0, see
# ../shared/docs/GPU.md). The dev profile builds dependencies at opt-level 3 (Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDARC_CUDA_VERSION=13000
cargo build --features cuda
test_bin=$(cargo test --features cuda --test cuda --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cuda" and m.get("executable"):
        print(m["executable"])')
mkdir -p .device
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
cp target/debug/archlab .device/archlab
cp "$test_bin" .device/cuda-tests
strip .device/archlab .device/cuda-tests
ls -la .device
