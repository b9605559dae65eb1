#!/usr/bin/env python3
"""CubeCL's matmuls against cuBLAS (through PyTorch), on the same GPU, in one call.

1. runs `archlab gemm --device DEVICE --dtype DTYPE --shapes SHAPES --out OUT/archlab`: burn's
   fused and autotuned matmul and every CubeCL strategy, each checked against a reference,
2. times `torch.matmul` on the same problems in the same layouts (transposed operands are
   strided views, as in archlab), bf16 in and out (cuBLAS picks its own kernel; TF32 off for
   f32),
3. prints one line per problem and writes `gemm-vs-torch.json` (everything) and
   `gemm-vs-torch.md` into --out.

Columns: cuBLAS TFLOP/s; burn's fused matmul (what an archlab model gets) and the autotuner's
pick, each as TFLOP/s and as a fraction of cuBLAS; the fastest CubeCL strategy whose result is
correct. If the fastest strategy is far ahead of the autotuner, the gap is the autotuner's
choice; if it is not, the gap is in the kernels (docs/gemm-gap.md).

    python tools/gemm_vs_torch.py --archlab .device/archlab --out $OUT/gemm
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def parse_shape(text: str) -> tuple[int, int, int, str]:
    dims, _, layout = text.partition(":")
    layout = layout or "nn"
    parts = dims.split("x")
    if layout not in ("nn", "nt", "tn") or len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SystemExit(f"bad shape {text!r}: want MxNxK[:nn|nt|tn], e.g. 16384x768x2048:nt")
    m, n, k = (int(p) for p in parts)
    return m, n, k, layout


def shape_key(m: int, n: int, k: int, layout: str) -> str:
    return f"{m}x{n}x{k}:{layout}"


def torch_gemm(shape: tuple[int, int, int, str], dtype_name: str, device: str, min_time: float) -> dict[str, Any]:
    """Steady-state seconds per `torch.matmul` of one problem, timed with CUDA events."""
    import torch

    m, n, k, layout = shape
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[dtype_name]
    gen = torch.Generator(device=device).manual_seed(0)

    def operand(rows: int, cols: int) -> torch.Tensor:
        return (torch.rand(rows, cols, generator=gen, device=device) * 2 - 1).to(dtype)

    a = operand(k, m).t() if layout == "tn" else operand(m, k)
    b = operand(n, k).t() if layout == "nt" else operand(k, n)
    started = time.perf_counter()
    out = torch.matmul(a, b)
    torch.cuda.synchronize()
    first = time.perf_counter() - started
    del out
    # One call to calibrate, then enough to fill min_time.
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.matmul(a, b)
    end.record()
    torch.cuda.synchronize()
    once = start.elapsed_time(end) / 1e3
    calls = max(3, min(200, int(min_time / max(once, 1e-6)) + 1))
    start.record()
    for _ in range(calls):
        out = torch.matmul(a, b)
    end.record()
    torch.cuda.synchronize()
    per_call = start.elapsed_time(end) / 1e3 / calls
    return {"first_call_s": first, "seconds_per_call": per_call, "tflops": 2 * m * n * k / per_call / 1e12,
            "calls": calls}


def fmt(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def frac(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.0%}"


def summarise(archlab: dict[str, Any], torch_rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    by_shape: dict[str, list[dict[str, Any]]] = {}
    for r in archlab["rows"]:
        s = r["shape"]
        by_shape.setdefault(shape_key(s["m"], s["n"], s["k"], s["layout"]), []).append(r)
    table = []
    for key, rows in by_shape.items():
        named = {r["strategy"]: r for r in rows}
        ok = [r for r in rows if r["status"] == "ok" and not r["strategy"].startswith("burn ")]
        best = max(ok, key=lambda r: r["tflops"], default=None)
        wrong = [r["strategy"] for r in rows if r["status"] == "wrong"]
        t = torch_rows.get(key, {})
        table.append({
            "shape": key,
            "cublas_tflops": t.get("tflops"),
            "fused_tflops": named.get("burn fused", {}).get("tflops"),
            "autotune_tflops": named.get("burn autotune", {}).get("tflops"),
            "autotune_first_call_s": named.get("burn autotune", {}).get("first_call_s"),
            "best_strategy": best["strategy"] if best else None,
            "best_tflops": best["tflops"] if best else None,
            "wrong": wrong,
        })
    return table


def markdown(table: list[dict[str, Any]], device: str, dtype: str) -> str:
    lines = [f"# CubeCL matmul against cuBLAS on {device}, {dtype}", "",
             "| problem | cuBLAS TF/s | burn fused TF/s | of cuBLAS | autotune TF/s | of cuBLAS | autotune first call s "
             "| best strategy | TF/s | of cuBLAS |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['shape']} | {fmt(r['cublas_tflops'])} | {fmt(r['fused_tflops'])} | "
            f"{frac(r['fused_tflops'], r['cublas_tflops'])} | {fmt(r['autotune_tflops'])} | "
            f"{frac(r['autotune_tflops'], r['cublas_tflops'])} | {fmt(r['autotune_first_call_s'], 2)} | "
            f"{r['best_strategy'] or '—'} | {fmt(r['best_tflops'])} | {frac(r['best_tflops'], r['cublas_tflops'])} |")
    wrong = [(r["shape"], w) for r in table for w in r["wrong"]]
    if wrong:
        lines += ["", "Strategies that ran but gave a wrong product: "
                  + "; ".join(f"{s}: {w}" for s, w in wrong)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--archlab", default=str(REPO / "target" / "release" / "archlab"))
    ap.add_argument("--device", default="cuda", choices=["cuda"])
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--shapes", help="MxNxK[:nn|nt|tn],... (default: archlab gemm's own list)")
    ap.add_argument("--min-time-s", type=float, default=0.2, help="steady-state time per measurement")
    ap.add_argument("--autotuned-only", action="store_true", help="archlab: burn's own matmuls only")
    ap.add_argument("--archlab-timeout-s", type=float, default=None,
                    help="stop archlab after this long and compare the problems it finished (it writes "
                         "gemm.json after every row)")
    ap.add_argument("--out", type=Path, default=Path("runs/gemm-vs-torch"))
    args = ap.parse_args(argv)
    if args.shapes:
        for s in args.shapes.split(","):
            parse_shape(s.strip())  # fail on a bad shape before anything runs
    args.out.mkdir(parents=True, exist_ok=True)

    cmd = [args.archlab, "gemm", "--device", args.device, "--dtype", args.dtype,
           "--min-time-s", str(args.min_time_s), "--out", str(args.out / "archlab")]
    if args.shapes:
        cmd += ["--shapes", args.shapes]
    if args.autotuned_only:
        cmd.append("--autotuned-only")
    print("$", " ".join(cmd), flush=True)
    with open(args.out / "archlab.log", "w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=args.archlab_timeout_s).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    results = args.out / "archlab" / "gemm.json"
    if rc != 0:
        print((args.out / "archlab.log").read_text()[-4000:], file=sys.stderr)
        print(f"archlab gemm did not finish ({rc}); its log is {args.out / 'archlab.log'}", file=sys.stderr)
        if not results.exists():
            return 1
        print("comparing the problems it finished", file=sys.stderr)
    archlab = json.loads(results.read_text())
    # The problems archlab measured, in its order (all of them, or those it finished in time).
    shapes = []
    for r in archlab["rows"]:
        s = (r["shape"]["m"], r["shape"]["n"], r["shape"]["k"], r["shape"]["layout"])
        if s not in shapes:
            shapes.append(s)

    import torch

    if args.dtype == "f32":
        torch.backends.cuda.matmul.allow_tf32 = False
    torch_rows = {}
    for s in shapes:
        torch_rows[shape_key(*s)] = torch_gemm(s, args.dtype, args.device, args.min_time_s)
        print(f"  torch {shape_key(*s):<22} {torch_rows[shape_key(*s)]['tflops']:8.1f} TFLOP/s", flush=True)

    table = summarise(archlab, torch_rows)
    device = torch.cuda.get_device_name()
    md = markdown(table, device, args.dtype)
    result = {"device": device, "torch": torch.__version__, "command": " ".join(sys.argv), "archlab_exit": rc,
              "archlab_command": cmd, "table": table, "torch_rows": torch_rows, "archlab": archlab}
    (args.out / "gemm-vs-torch.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "gemm-vs-torch.md").write_text(md)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
