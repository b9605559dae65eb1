#!/usr/bin/env bash
# Builds, on the CPU-only build machine, everything tools/gpu_check.sh and tools/gpu_issue7.sh
# run on the GPU machine (which has no Rust toolchain), into .device/ (ignored through
# .git/info/exclude).
#
#   tools/gpu_build.sh            then, with the device tool:
#   run(command="bash tools/gpu_check.sh", carry=[".device"])
#
# CUDARC_CUDA_VERSION pins the CUDA API bindings to the driver there (CUDA 13.0, see
# ../shared/docs/GPU.md). Everything is a release build, as GPU.md's workflow says: the numbers
# taken there are benchmarks, so archlab's own host code runs optimised and without debug
# assertions (the dev profile keeps both in archlab and the assertions in every dependency).
# The first release build takes about as long as a fresh `cargo test` build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CUDARC_CUDA_VERSION=13000
cargo build --release --features cuda
# The test binaries the GPU machine runs: `cuda` (tools/gpu_check.sh) and `kernels`
# (tools/gpu_issue7.sh kernels), release builds too.
test_bins=$(cargo test --release --features cuda --test cuda --test kernels --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] in ("cuda", "kernels") and m.get("executable"):
        print(m["target"]["name"], m["executable"])')
rm -rf .device
mkdir -p .device
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
cp target/release/archlab .device/archlab
while read -r name exe; do
  cp "$exe" ".device/$name-tests"
done <<< "$test_bins"
strip .device/archlab .device/*-tests
# Packed: the device tool carries at most 64 MiB (tools/gpu_unpack.sh unpacks them there).
xz -T2 -6 -f .device/archlab .device/*-tests
ls -la .device
