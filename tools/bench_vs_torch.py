#!/usr/bin/env python3
"""archlab against PyTorch + transformers, side by side, in one call.

1. writes a token file (seeded numpy; raw little-endian u32, enough tokens that no step repeats
   a batch),
2. runs `archlab bench ARCHS --seq-lens T --tokens FILE ...` (each point in its own process),
3. runs `tools/torch_baseline.py` for every architecture archlab measured, on the resolved config
   archlab ran (bench.json's `config_path`), the same token file, the same device, in eager and
   compile modes (each mode in its own process),
4. prints the ratio table and writes `results.json` (everything, raw) and `results.md` into --out.

Ratios are archlab / HF: above 1 archlab is faster (tokens/s) or leaner (memory is HF / archlab).
Throughput on both sides is batch·T / median step time; warm-up (first step: compilation,
autotuning, allocator growth) is reported apart, as is torch.compile's compile time.

The defaults are the GPU measurement shape: d=384, 8 layers, T=512, batch 32, vocab 8192
(archlab's `27m` size), architectures dense, mamba, mamba2, moe, sandwich (AMMMMMMA) and jamba.
A quick CPU run:

    python tools/bench_vs_torch.py --size tiny --vocab 512 --seq-len 64 --batch 4 --steps 8 \\
        --device cpu --out bench/vs-torch-cpu

On a GPU machine without a Rust toolchain, copy the archlab binary over and pass --archlab.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

# The table's number formats are the baseline's own (it prints the same quantities).
from torch_baseline import human, human_bytes

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ARCHS = ["dense", "mamba", "mamba2", "moe", "sandwich", "jamba"]


class BenchError(Exception):
    """Bad input or a step that cannot go on (archlab failed as a whole, no bench.json)."""


def default_archlab() -> str:
    """The newest-built archlab binary of this checkout, else `archlab` on the PATH."""
    for profile in ("release", "debug"):
        exe = REPO / "target" / profile / "archlab"
        if exe.exists():
            return str(exe)
    return "archlab"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("archs", nargs="*", default=DEFAULT_ARCHS,
                    help=f"archlab architectures or layer patterns (default: {' '.join(DEFAULT_ARCHS)})")
    ap.add_argument("--archlab", default=default_archlab(), help="the archlab binary (default: %(default)s)")
    ap.add_argument("--python", default=sys.executable,
                    help="the Python with torch + transformers for tools/torch_baseline.py (default: this one)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "f32"],
                    help="auto: bf16 on CUDA (archlab's bf16, torch autocast), f32 on the CPU")
    ap.add_argument("--size", default="27m", choices=["tiny", "27m"],
                    help="archlab's starting size: 27m is d=384, 8 layers, 6 heads, d_ff 1536; tiny is d=128, "
                         "4 layers, 4 heads, d_ff 384 (every architecture is then sized to the dense model's "
                         "active parameters, as `archlab bench` does)")
    ap.add_argument("--d-model", type=int, help="override the size's width (--set model.d_model)")
    ap.add_argument("--layers", type=int,
                    help="override the size's depth (--set model.n_layers); patterns keep their own length, so "
                         "this only works with architectures of that depth")
    ap.add_argument("--heads", type=int, help="override the size's attention heads")
    ap.add_argument("--d-ff", type=int, help="override the size's MLP width")
    ap.add_argument("--vocab", type=int, default=8192, help="vocabulary size (default: %(default)s)")
    ap.add_argument("--seq-len", type=int, default=512, help="T (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=32, help="sequences per step (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps after one warm-up (default: %(default)s)")
    ap.add_argument("--modes", default="eager,compile", help="PyTorch modes (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the token file")
    ap.add_argument("--cold-compile", action="store_true",
                    help="torch.compile with empty caches (its persistent cache otherwise makes a rerun's "
                         "compile time a cache load)")
    ap.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: table of known GPUs)")
    ap.add_argument("--timeout-s", type=int, default=900,
                    help="per archlab point and per PyTorch mode, compilation included (default: %(default)s)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="more archlab config overrides, passed to `archlab bench --set`")
    ap.add_argument("--out", type=Path, default=Path("runs/vs-torch"), help="output directory (default: %(default)s)")
    args = ap.parse_args(argv)
    for name in ("vocab", "seq_len", "batch", "steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        ap.error("--peak-tflops must be positive")
    return args


def write_tokens(path: Path, vocab: int, count: int, seed: int) -> None:
    """`count` uniform ids below `vocab` as little-endian u32 (the format `--tokens` reads)."""
    import numpy as np

    ids = np.random.default_rng(seed).integers(0, vocab, size=count, dtype=np.uint32)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids.astype("<u4").tofile(path)


def archlab_command(args: argparse.Namespace, tokens: Path, out: Path) -> list[str]:
    cmd = [args.archlab, "bench", *args.archs, "--size", args.size, "--seq-lens", str(args.seq_len),
           "--tokens-per-step", str(args.batch * args.seq_len), "--steps", str(args.steps),
           "--tokens", str(tokens), "--device", args.device, "--timeout-s", str(args.timeout_s),
           "--out", str(out), "--set", f"model.vocab_size={args.vocab}"]
    overrides = {"model.d_model": args.d_model, "model.n_layers": args.layers, "model.n_heads": args.heads,
                 "model.d_ff": args.d_ff}
    cmd += [a for key, value in overrides.items() if value is not None for a in ("--set", f"{key}={value}")]
    for s in args.sets:
        cmd += ["--set", s]
    if args.precision != "auto":
        cmd += ["--precision", args.precision]
    if args.peak_tflops is not None:
        cmd += ["--peak-tflops", str(args.peak_tflops)]
    return cmd


def run_logged(cmd: list[str], log: Path) -> int:
    """Runs `cmd` with its output shown and kept in `log`."""
    print("$ " + shlex.join(cmd), flush=True)
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            f.write(line)
        return proc.wait()


def run_archlab(args: argparse.Namespace, tokens: Path) -> dict[str, Any]:
    out = args.out / "archlab"
    code = run_logged(archlab_command(args, tokens, out), args.out / "archlab.log")
    bench_json = out / "bench.json"
    if code != 0 or not bench_json.exists():
        raise BenchError(f"archlab bench failed (exit {code}); see {args.out / 'archlab.log'}")
    return json.loads(bench_json.read_text())


def run_torch(args: argparse.Namespace, point: dict[str, Any], tokens: Path, device: str,
              precision: str) -> dict[str, Any]:
    """tools/torch_baseline.py on the config archlab ran for `point`."""
    arch = point["arch"]
    safe = "".join(c if c.isalnum() else "_" for c in arch)
    out = args.out / "torch" / f"{safe}.json"
    cmd = [args.python, str(REPO / "tools" / "torch_baseline.py"), "--archlab-config", point["config_path"],
           "--arch", arch, "--tokens", str(tokens), "--batch", str(point["batch"]), "--seq-len",
           str(point["seq_len"]), "--steps", str(args.steps), "--device", device, "--precision", precision,
           "--modes", args.modes, "--timeout-s", str(args.timeout_s), "--out", str(out)]
    for flag, key in (("--flops-per-token", "train_flops_per_token"), ("--archlab-params-total", "params_total"),
                      ("--archlab-params-active", "params_active")):
        if point.get(key) is not None:
            cmd += [flag, str(point[key])]
    if args.peak_tflops is not None:
        cmd += ["--peak-tflops", str(args.peak_tflops)]
    if args.cold_compile:
        cmd.append("--cold-compile")
    code = run_logged(cmd, args.out / "torch" / f"{safe}.log")
    if code != 0 or not out.exists():
        return {"arch": arch, "error": f"torch_baseline.py failed (exit {code}); see {args.out / 'torch' / safe}.log"}
    return json.loads(out.read_text())


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.1f}%"


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "–"


def archlab_rate(p: dict[str, Any]) -> float | None:
    """archlab's tokens/s from its median step, as the PyTorch side reports it."""
    if p["status"]["kind"] != "ok" or not p.get("median_step_s"):
        return None
    return p["batch"] * p["seq_len"] / p["median_step_s"]


def median_tflops(p: dict[str, Any]) -> float | None:
    rate, flops = archlab_rate(p), p.get("train_flops_per_token")
    return rate * flops / 1e12 if rate is not None and flops is not None else None


def mode_cell(torch_rec: dict[str, Any], mode: str) -> dict[str, Any]:
    return (torch_rec.get("modes") or {}).get(mode) or {"status": "not run"}


def status_note(r: dict[str, Any]) -> str:
    return r["status"] if r.get("status") != "ok" else ""


def rows(bench: dict[str, Any], torch_recs: dict[str, dict[str, Any]], modes: list[str]) -> list[dict[str, Any]]:
    """One row per architecture: archlab's numbers beside each PyTorch mode's."""
    out = []
    for p in bench["points"]:
        t = torch_recs.get(p["arch"], {})
        row: dict[str, Any] = {
            "arch": p["arch"],
            "hf_model": t.get("hf_model", "–"),
            "archlab_status": p["status"]["kind"] if p["status"]["kind"] != "failed" else
            f"failed: {p['status'].get('detail', '')}",
            "archlab_tok_s": archlab_rate(p),
            "archlab_mean_tok_s": p.get("train_tokens_per_s"),
            "archlab_warmup_s": p.get("warmup_s"),
            "archlab_peak_bytes": p.get("peak_memory_bytes"),
            # From the median-step rate, as the PyTorch side computes it (bench.json's `mfu` uses
            # archlab's mean rate).
            "archlab_tflops": median_tflops(p),
            "archlab_mfu": median_tflops(p) / bench["peak_tflops"]
            if median_tflops(p) is not None and bench.get("peak_tflops") else None,
            "params_archlab": p.get("params_total"),
            "params_hf": (t.get("params") or {}).get("hf_total"),
            "params_mismatch": (t.get("params") or {}).get("mismatch", False),
            "params_rel": (t.get("params") or {}).get("relative_difference"),
            "torch_error": t.get("error"),
        }
        for mode in modes:
            r = mode_cell(t, mode)
            row[f"{mode}_status"] = r.get("status")
            row[f"{mode}_error"] = r.get("error")
            row[f"{mode}_tok_s"] = r.get("tokens_per_s")
            row[f"{mode}_warmup_s"] = r.get("warmup_s")
            row[f"{mode}_compile_s"] = r.get("compile_s")
            row[f"{mode}_peak_bytes"] = r.get("peak_memory_bytes")
            row[f"{mode}_baseline_bytes"] = r.get("rss_baseline_bytes")
            row[f"{mode}_mfu"] = r.get("mfu")
        out.append(row)
    return out


def torch_memory(r: dict[str, Any], mode: str) -> str:
    """PyTorch's peak; on the CPU also what the model and training added to the RSS torch had
    before the model existed (torch's own libraries are ~0.5 GiB of it)."""
    peak, base = r[f"{mode}_peak_bytes"], r[f"{mode}_baseline_bytes"]
    if peak and base:
        return f"{human_bytes(peak)} (+{human_bytes(peak - base)} over torch's {human_bytes(base)})"
    return human_bytes(peak)


def markdown_table(table: list[dict[str, Any]], modes: list[str], mfu_known: bool) -> str:
    head = ["architecture", "HF model", "archlab tok/s"] + [f"HF {m} tok/s" for m in modes]
    head += [f"archlab / {m}" for m in modes]
    head += ["archlab peak mem"] + [f"HF {m} peak mem" for m in modes]
    head += ["archlab warm-up"] + [f"HF {m} warm-up" for m in modes]
    if mfu_known:
        head += ["archlab MFU"] + [f"HF {m} MFU" for m in modes]
    head += ["params archlab / HF"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    for r in table:
        def rate(prefix: str) -> str:
            v = r[f"{prefix}_tok_s"]
            if v is None:
                return r.get(f"{prefix}_status") or r.get("archlab_status") or "–"
            return human(v)

        cells = [r["arch"], r["hf_model"], rate("archlab") if r["archlab_tok_s"] else r["archlab_status"]]
        cells += [rate(m) for m in modes]
        cells += [ratio(r["archlab_tok_s"], r[f"{m}_tok_s"]) for m in modes]
        cells += [human_bytes(r["archlab_peak_bytes"])] + [torch_memory(r, m) for m in modes]
        warm = [f"{r['archlab_warmup_s']:.2f} s" if r["archlab_warmup_s"] is not None else "–"]
        for m in modes:
            w, c = r[f"{m}_warmup_s"], r[f"{m}_compile_s"]
            warm.append("–" if w is None else f"{w:.2f} s" + (f" (compile {c:.1f} s)" if c is not None else ""))
        cells += warm
        if mfu_known:
            cells += [pct(r["archlab_mfu"])] + [pct(r[f"{m}_mfu"]) for m in modes]
        params = f"{human(r['params_archlab'])} / {human(r['params_hf'])}"
        if r["params_mismatch"]:
            params += f" **MISMATCH {r['params_rel'] * 100:+.1f}%**"
        cells.append(params)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def port_warnings(torch_recs: dict[str, dict[str, Any]]) -> list[str]:
    """torch_baseline.py's Python port of archlab's FLOP count should give archlab's number;
    a difference means the port (or the config it read) is out of date."""
    out = []
    for arch, r in torch_recs.items():
        a, b = r.get("flops_per_token"), r.get("flops_per_token_python_port")
        if a and b and abs(a - b) > 1e-9 * a:
            out.append(f"{arch}: FLOPs/token archlab {a:.6g} vs torch_baseline.py's port {b:.6g}; the port is stale")
    return out


def failures(table: list[dict[str, Any]], modes: list[str]) -> list[str]:
    out = []
    for r in table:
        if r["torch_error"]:
            out.append(f"{r['arch']}: {r['torch_error']}")
        for m in modes:
            if r[f"{m}_status"] not in ("ok", None) and r[f"{m}_error"]:
                out.append(f"{r['arch']} HF {m}: {r[f'{m}_status']}: {r[f'{m}_error'][:300]}")
    return out


def mfu_basis(bench: dict[str, Any]) -> str:
    peak = bench.get("peak_tflops")
    if peak:
        return f"achieved / peak, peak {peak} TFLOP/s ({bench.get('peak_source', '')})"
    return f"not computed: {bench.get('peak_source', '')}"


def write_markdown(path: Path, meta: dict[str, Any], table_md: str, bench: dict[str, Any],
                   torch_recs: dict[str, dict[str, Any]], fails: list[str]) -> None:
    lines = [
        "# archlab vs PyTorch (transformers): training throughput",
        "",
        f"- command: `{meta['command']}`",
        f"- date: {meta['date']}",
        f"- machine: {meta['machine']}",
        f"- device: {bench['device']} ({bench['precision']}); versions: {meta['versions']}",
        f"- shape: T = {meta['seq_len']}, batch {meta['batch']}, vocabulary {meta['vocab']}, size `{meta['size']}` "
        f"(every architecture sized to the dense model's active parameters), {meta['steps']} timed steps after one "
        f"warm-up step, the same token batches on both sides (`{meta['tokens']}`)",
        f"- MFU: {mfu_basis(bench)}",
        "",
        "tok/s = batch·T / median step time (archlab's mean tok/s is in results.json). archlab / HF > 1 means "
        "archlab is faster; MFU uses the same median-step rate on both sides. Warm-up is the first training step alone (kernel compilation, autotuning, allocator "
        "growth, optimizer state); for torch.compile the compile time is that step minus a median step. Peak "
        "memory: device memory on a GPU (archlab: bytes reserved by its allocator; PyTorch: "
        "`max_memory_allocated`), the process's peak RSS on the CPU (PyTorch's includes ~0.5 GiB of torch and "
        "transformers themselves, shown apart).",
        "",
        table_md,
        "",
        f"FLOPs per token (both sides, the same number): {bench.get('flops_formula', '')}.",
        "",
    ]
    diffs = [(a, r.get("differences", [])) for a, r in torch_recs.items() if r.get("differences")]
    if diffs:
        lines += ["## Where the HF model differs from archlab's", ""]
        lines += [f"- {a} ({torch_recs[a].get('hf_model')}): " + "; ".join(d) for a, d in diffs]
        lines.append("")
    if fails:
        lines += ["## What did not run", ""] + [f"- {f}" for f in fails] + [""]
    path.write_text("\n".join(lines))


def machine() -> str:
    """CPU model and core count, and the GPU if nvidia-smi sees one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.strip() or "no GPU"
    except (OSError, subprocess.TimeoutExpired):
        gpu = "no GPU (no nvidia-smi)"
    return f"{cpu}, {os.cpu_count()} logical cores, {gpu}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "torch").mkdir(exist_ok=True)
    tokens = args.out / "tokens.u32"
    # Enough for the warm-up and every timed step without repeating a batch.
    write_tokens(tokens, args.vocab, args.batch * (args.seq_len + 1) * (args.steps + 1), args.seed)

    bench = run_archlab(args, tokens)
    device = bench["device"]  # what archlab resolved `auto` to; PyTorch runs on the same
    if device not in ("cpu", "cuda"):
        raise BenchError(f"archlab ran on {device}; the PyTorch baseline supports cpu and cuda")
    precision = bench["precision"]
    torch_recs: dict[str, dict[str, Any]] = {}
    for p in bench["points"]:
        if not p.get("config_path"):
            print(f"skipping PyTorch for {p['arch']}: archlab did not run it ({p['status']})")
            continue
        torch_recs[p["arch"]] = run_torch(args, p, tokens, device, precision)

    table = rows(bench, torch_recs, modes)
    mfu_known = bench.get("peak_tflops") is not None
    table_md = markdown_table(table, modes, mfu_known)
    fails = failures(table, modes) + port_warnings(torch_recs)
    versions = next((r.get("versions") for r in torch_recs.values() if r.get("versions")), {})
    meta = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]) if argv is None else shlex.join(argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()) or "unknown",
        "size": args.size, "seq_len": args.seq_len, "batch": args.batch, "vocab": args.vocab,
        "steps": args.steps, "modes": modes, "cold_compile": args.cold_compile, "tokens": str(tokens), "archlab": args.archlab,
    }
    (args.out / "results.json").write_text(
        json.dumps({"meta": meta, "rows": table, "archlab": bench, "torch": torch_recs}, indent=1))
    write_markdown(args.out / "results.md", meta, table_md, bench, torch_recs, fails)
    print()
    print(table_md)
    for f in fails:
        print(f"did not run: {f}")
    print(f"\nwrote {args.out / 'results.json'}\nwrote {args.out / 'results.md'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench_vs_torch: error: {e}", file=sys.stderr)
        sys.exit(1)
