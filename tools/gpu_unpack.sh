#!/usr/bin/env bash
# On the GPU machine: unpacks the binaries tools/gpu_build.sh packed (.device/NAME.xz →
# .device/NAME). They are packed so that .device/ stays under 64 MiB for the copy to the GPU
# machine: the three stripped binaries weigh ~210 MB (~33 MB packed). Python's lzma unpacks
# them, so the machine needs no xz.
set -euo pipefail
cd "$(dirname "$0")/.."
for packed in .device/*.xz; do
  exe=${packed%.xz}
  [ -x "$exe" ] && continue
  python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$packed" "$exe"
  chmod +x "$exe"
done
