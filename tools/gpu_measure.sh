#!/usr/bin/env bash
# archlab's GPU speed measurements, one stage per call (each stage is sized to finish within
# 10 minutes), on the GPU machine from the repository root, with .device/ built by
# tools/gpu_build.sh on a build machine and copied over. Every stage writes its logs and JSON
# under $OUT and prints a short table last; commit them under bench/results/ with the stage's
# command and the device.
#
#   bash tools/gpu_measure.sh kernels
#   bash tools/gpu_measure.sh vs-torch dense moe
#   bash tools/gpu_measure.sh vs-torch mamba mamba2
#   bash tools/gpu_measure.sh vs-torch sandwich jamba
#   bash tools/gpu_measure.sh vs-torch gdn gdn-hybrid
#   bash tools/gpu_measure.sh gdn
#   bash tools/gpu_measure.sh memory
#   bash tools/gpu_measure.sh mfu
#   bash tools/gpu_measure.sh gemm
#   bash tools/gpu_measure.sh warmup
#   bash tools/gpu_measure.sh matmul STRATEGY...
#
# Stages:
#   kernels      the CUDA kernel tests (tests/all/kernels.rs), every kernel against its twin
#   vs-torch A…  archlab against transformers (eager and torch.compile) at the seeds' size:
#                d=384, 8 layers, T=512, batch 32, vocab 8192 (tools/bench_vs_torch.py)
#   memory       Mamba, Mamba-2, AMMMMMMA and dense at batch 1 from T=512 to 16384: peak
#                memory against T (linear for the SSMs) and tokens/s (SSMs against dense)
#   gdn          Gated DeltaNet (fused UT transform and convolution), its 3:1 hybrid with
#                gated attention, Mamba-2 and dense at batch 1 from T=512 to 8192: training
#                tokens/s and peak memory, and decoding tokens/s flat in T (--inference)
#   mfu          a GPT-2-small-shaped dense model (d=768, 12 layers, 12 heads, SwiGLU 2048:
#                124M parameters with its tied 50 257 vocabulary) at T=1024: MFU
#   gemm [SHAPES] bf16 matmul: every CubeCL strategy and burn's own (fused, autotuned)
#                against cuBLAS through PyTorch (tools/gemm_vs_torch.py; docs/gemm-gap.md);
#                SHAPES as `archlab gemm --shapes`, default archlab's own list
#   warmup       the first training step (compilation + autotuning) of dense, mamba2 and moe
#                at T=512, cold (empty caches) and then warm (the same binary again, with the
#                kernel and autotune caches the first run left)
#   matmul S…    dense and moe at the seeds' size (T=512, batch 32) with burn's autotuned
#                matmuls and then with each CubeCL strategy S forced (`--matmul S`, e.g. the
#                gemm stage's fastest): training tokens/s and MFU side by side
#
# DEVICE=cpu SIZE=tiny (and PYTHON=a python with torch) run the same commands on a CPU, small,
# to check the script.
set -uo pipefail
stage=${1:?"usage: tools/gpu_measure.sh kernels | vs-torch ARCH... | memory | gdn | mfu | gemm [SHAPES] | warmup | matmul STRATEGY..."}
shift
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:${LD_LIBRARY_PATH:-}
OUT=${OUT:-/tmp/archlab-gpu}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-27m}
ARCHLAB=${ARCHLAB:-.device/archlab}
mkdir -p "$OUT"
bash tools/gpu_unpack.sh
if [ "$DEVICE" = cuda ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/device.txt"
fi

case "$stage" in
  kernels)
    # Only the CUDA tests: the wgpu ones would also run on the GPU's Vulkan driver, which CI
    # covers on lavapipe already.
    .device/all-tests _on_cuda --test-threads 1 2>&1 | tee "$OUT/kernel-tests.log"
    echo
    grep -E "^test |^test result" "$OUT/kernel-tests.log"
    ;;
  vs-torch)
    [ $# -gt 0 ] || { echo "vs-torch needs architectures, e.g. dense moe" >&2; exit 2; }
    name=$(IFS=-; echo "$*")
    "${PYTHON:-python3}" tools/bench_vs_torch.py "$@" --archlab "$ARCHLAB" --device "$DEVICE" --size "$SIZE" \
      --timeout-s 240 --out "$OUT/vs-torch-$name" 2>&1 | tee "$OUT/vs-torch-$name.log"
    ;;
  memory)
    lens=${SEQ_LENS:-512,1024,2048,4096,8192,16384}
    "$ARCHLAB" bench mamba mamba2 sandwich dense --size "$SIZE" --device "$DEVICE" \
      --seq-lens "$lens" --tokens-per-step 1 --steps 3 --timeout-s 120 \
      --out "$OUT/memory" 2>&1 | tee "$OUT/memory.log"
    echo
    cat "$OUT/memory/bench.md" 2>/dev/null
    ;;
  gdn)
    lens=${SEQ_LENS:-512,2048,8192}
    "$ARCHLAB" bench gdn gdn-hybrid mamba2 dense --size "$SIZE" --device "$DEVICE" \
      --seq-lens "$lens" --tokens-per-step 1 --steps 3 --inference --timeout-s 120 \
      --out "$OUT/gdn" 2>&1 | tee "$OUT/gdn.log"
    cat "$OUT/gdn/bench.md" 2>/dev/null
    ;;
  mfu)
    t=${SEQ_LEN:-1024}
    "$ARCHLAB" bench dense --size "$SIZE" --device "$DEVICE" --seq-lens "$t" \
      --tokens-per-step $((16 * t)) --steps 10 --timeout-s 400 \
      --set model.d_model=768 --set model.n_layers=12 --set model.n_heads=12 \
      --set model.d_ff=2048 --set model.vocab_size=50257 \
      --out "$OUT/mfu" 2>&1 | tee "$OUT/mfu.log"
    echo
    cat "$OUT/mfu/bench.md" 2>/dev/null
    ;;
  gemm)
    [ "$DEVICE" = cuda ] || { echo "the gemm stage needs CUDA (cuBLAS is the peer)" >&2; exit 2; }
    "${PYTHON:-python3}" tools/gemm_vs_torch.py --archlab "$ARCHLAB" ${1:+--shapes "$1"} \
      --archlab-timeout-s "${GEMM_TIMEOUT_S:-420}" --out "$OUT/gemm" 2>&1 | tee "$OUT/gemm.log"
    ;;
  warmup)
    # A fresh folder as working directory and cache home: CubeCL's autotune cache and
    # archlab's kernel cache both start empty (device.rs, enable_kernel_cache).
    scratch=$(mktemp -d)
    exe=$(realpath "$ARCHLAB")
    for run in cold warm; do
      (cd "$scratch" && XDG_CACHE_HOME="$scratch/cache" "$exe" bench dense mamba2 moe --size "$SIZE" \
        --device "$DEVICE" --seq-lens "${SEQ_LEN:-512}" --tokens-per-step $((32 * ${SEQ_LEN:-512})) \
        --steps 3 --timeout-s 250 --out "$OUT/warmup-$run") 2>&1 | tee "$OUT/warmup-$run.log"
    done
    du -sh "$scratch/cache"/* 2>/dev/null | tee "$OUT/warmup-cache-size.txt"
    echo
    "${PYTHON:-python3}" - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
runs = {r: json.load(open(f"{out}/warmup-{r}/bench.json")) for r in ("cold", "warm")}
print("| arch | T | first step cold s | first step warm s | steady step s |")
print("|---|---|---|---|---|")
for cold, warm in zip(runs["cold"]["points"], runs["warm"]["points"]):
    fmt = lambda v: "—" if v is None else f"{v:.2f}"
    print(f"| {cold['arch']} | {cold['seq_len']} | {fmt(cold.get('warmup_s'))} | {fmt(warm.get('warmup_s'))} "
          f"| {fmt(warm.get('median_step_s'))} |")
PY
    ;;
  matmul)
    [ $# -gt 0 ] || { echo "matmul needs CubeCL strategy names (archlab gemm prints them)" >&2; exit 2; }
    t=${SEQ_LEN:-512}
    for s in autotune "$@"; do
      "$ARCHLAB" --matmul "$s" bench dense moe --size "$SIZE" --device "$DEVICE" --seq-lens "$t" \
        --tokens-per-step $((32 * t)) --steps 10 --timeout-s 200 --out "$OUT/matmul-$s" 2>&1 | tee "$OUT/matmul-$s.log"
    done
    echo
    "${PYTHON:-python3}" - "$OUT" autotune "$@" <<'PY'
import glob, json, sys
out, names = sys.argv[1], sys.argv[2:]
print("| matmul | arch | train tok/s | MFU | peak memory GB | refused problems |")
print("|---|---|---|---|---|---|")
for name in names:
    try:
        bench = json.load(open(f"{out}/matmul-{name}/bench.json"))
    except OSError:
        print(f"| {name} | (no bench.json: see matmul-{name}.log) | | | | |")
        continue
    # Each point's process says on its stderr log which problems the strategy refused.
    logs = glob.glob(f"{out}/matmul-{name}/points/**/*.log", recursive=True)
    refused = sum(open(f, errors="replace").read().count("cannot run") for f in logs)
    for p in bench["points"]:
        tok = p.get("train_tokens_per_s")
        mfu = p.get("mfu")
        mem = p.get("peak_memory_bytes")
        print(f"| {name} | {p['arch']} | {'—' if tok is None else f'{tok:,.0f}'} "
              f"| {'—' if mfu is None else f'{100 * mfu:.1f}%'} | {'—' if mem is None else f'{mem / 1e9:.2f}'} | {refused} |")
PY
    ;;
  *)
    echo "unknown stage $stage: kernels | vs-torch ARCH... | memory | gdn | mfu | gemm [SHAPES] | warmup | matmul STRATEGY..." >&2
    exit 2
    ;;
esac
