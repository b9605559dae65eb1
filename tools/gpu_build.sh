#!/usr/bin/env bash
# Builds, on a CPU-only build machine, everything tools/gpu_check.sh and tools/gpu_measure.sh
# run on a GPU machine that has no Rust toolchain, into .device/ (ignored through
# .git/info/exclude).
#
#   tools/gpu_build.sh            then copy the repository with .device/ to the GPU machine and,
#   bash tools/gpu_check.sh       there, from the repository root (or tools/gpu_measure.sh STAGE)
#
# CUDARC_CUDA_VERSION pins the CUDA API bindings to the GPU machine's driver (CUDA 13.0 here;
# set it to match yours). Everything is a release build: the numbers taken there are
# benchmarks, so archlab's own host code runs optimised and without debug assertions (the dev
# profile keeps both in archlab and the assertions in every dependency).
# The first release build takes about as long as a fresh `cargo test` build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDARC_CUDA_VERSION=13000
cargo build --release --features cuda
# The test binary the GPU machine runs (`tests/all`: its `cuda::` module for tools/gpu_check.sh,
# its kernel tests for tools/gpu_measure.sh kernels), a release build too.
test_bins=$(cargo test --release --features cuda --test all --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "all" and m.get("executable"):
        print(m["target"]["name"], m["executable"])')
rm -rf .device
mkdir -p .device
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
cp target/release/archlab .device/archlab
while read -r name exe; do
  cp "$exe" ".device/$name-tests"
done <<< "$test_bins"
strip .device/archlab .device/*-tests
# Packed, so that .device/ stays under 64 MiB for the copy to the GPU machine
# (tools/gpu_unpack.sh unpacks them there).
xz -T2 -6 -f .device/archlab .device/*-tests
ls -la .device
