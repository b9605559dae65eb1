#!/usr/bin/env python3
"""Train the Hugging Face `transformers` model of an archlab architecture, for speed.

The PyTorch side of `tools/bench_vs_torch.py`: given the resolved config that `archlab bench`
ran (the point's TOML, `config_path` in bench.json), this builds the `transformers` model of the
same architecture and size, trains it on the same token batches (`--tokens`, raw little-endian
u32, read as archlab reads it) on the same device, and reports what `archlab bench` reports:
steady-state tokens/s (median step, and the mean), the warm-up step apart, peak memory,
parameters (total and active) and MFU with archlab's FLOP formula.

    archlab config           HF model
    attention + MLP          LlamaForCausalLM
    Mamba-1, no MLP          MambaForCausalLM
    Mamba-2, no MLP          Mamba2ForCausalLM
    attention + MoE          MixtralForCausalLM
    attention/Mamba-1 mixes  JambaForCausalLM (attention and expert layers by period/offset:
                             `AMMMMMMA` is attn_layer_period 7, offset 0)
    Gated DeltaNet (+ gated  Qwen3NextForCausalLM (`layer_types` from the pattern, MoE layers
    attention), MLP or MoE   from `mlp_only_layers`); without fla installed its recurrence is
                             `torch_chunk_gated_delta_rule`, chunk 64

Whatever the HF model cannot express is listed under "differences" in the output (e.g. Jamba's
attention has no RoPE and its Mamba layers have RMSNorms on Δ/B/C); a parameter count more than
2% away from archlab's is reported loudly.

One training step, as `archlab bench-point` takes it: forward, cross-entropy on the shifted
targets (+ the MoE load-balancing loss weighted as archlab's `model.moe.balance_coef`), backward,
global-norm clipping at `train.grad_clip`, AdamW (archlab's lr, betas, eps, weight decay on
matrices only; fused on CUDA), then a device sync. bf16 autocast on CUDA (fp32 master weights,
as archlab's bf16), fp32 on the CPU. Modes: `eager`, and `compile` (`torch.compile` of the
model; its compilation happens in the first step, reported as `compile_s`). Each mode runs in
its own child process, so its peak memory is its own (CUDA: `max_memory_allocated`; CPU: the
process's peak RSS, VmHWM, which includes the ~0.5 GiB of torch and transformers themselves:
`rss_baseline_bytes` says how much was there before the model existed), and a crash, an
out-of-memory or a compilation that exceeds `--timeout-s` is recorded instead of ending the run.

Usage:
    python tools/torch_baseline.py --archlab-config runs/bench/points/00-dense-T512.toml \\
        --arch dense --tokens tokens.u32 --batch 32 --seq-len 512 --steps 20 --out dense.json

Needs torch and transformers (tools/requirements-bench.txt); the parent process imports
neither, only the measuring children do.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:
    import tomllib  # Python >= 3.11
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# Same table as archlab's `bench::mfu`: dense peaks in TFLOP/s (bf16 tensor cores, fp32 CUDA
# cores). Only GPUs whose datasheet numbers we trust; anything else gets MFU = null.
GPU_PEAKS = {"H100 SXM": {"bf16": 989.0, "f32": 67.0}, "H200": {"bf16": 989.0, "f32": 67.0}}

MIXER_SYMBOLS = {"attention": "A", "local": "L", "mamba": "M", "mamba2": "S", "hymba": "H", "gdn": "G",
                 "deltanet": "D"}
FFN_SYMBOLS = {"mlp": "f", "moe": "e", "none": "n"}

# A parameter-count difference above this is reported as a mismatch (the models differ).
PARAM_TOLERANCE = 0.02


class BaselineError(Exception):
    """Bad input: an unreadable config or token file, an architecture with no HF equivalent."""


# ---------------------------------------------------------------------------------------------
# archlab's config: layers, parameter and FLOP counts (a port of src/model/count.rs)
# ---------------------------------------------------------------------------------------------


def load_archlab_config(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise BaselineError(f"cannot read archlab config {path}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise BaselineError(f"malformed archlab config {path}: {e}") from e


def expand_pattern(text: str) -> list[tuple[str, str | None]]:
    """archlab's layer pattern (`AMMA`, `(MfMe)2`, ...) as (mixer symbol, ffn symbol or None)."""
    chars = [c for c in text if not c.isspace()]
    pos = 0

    def items(depth: int) -> list[tuple[str, str | None]]:
        nonlocal pos
        out: list[tuple[str, str | None]] = []
        while pos < len(chars):
            c = chars[pos]
            if c in "ALMSHGD":
                pos += 1
                ffn = None
                if pos < len(chars) and chars[pos] in "fen":
                    ffn = chars[pos]
                    pos += 1
                out.append((c, ffn))
            elif c == "(":
                pos += 1
                inner = items(depth + 1)
                digits = ""
                while pos < len(chars) and chars[pos].isdigit():
                    digits += chars[pos]
                    pos += 1
                if not digits:
                    raise BaselineError(f"pattern {text!r}: a group needs a repeat count after ')'")
                out.extend(inner * int(digits))
            elif c == ")" and depth > 0:
                pos += 1
                return out
            else:
                raise BaselineError(f"pattern {text!r}: unexpected {c!r} at position {pos}")
        if depth > 0:
            raise BaselineError(f"pattern {text!r}: unclosed '('")
        return out

    return items(0)


def archlab_layers(m: dict[str, Any]) -> list[tuple[str, str]]:
    """Every layer as (mixer, ffn) symbols, e.g. ('A', 'f'), as `ModelConfig::layers` does."""
    default_ffn = FFN_SYMBOLS[m["ffn"]]
    if m.get("pattern", "").strip():
        return [(mix, ffn or default_ffn) for mix, ffn in expand_pattern(m["pattern"])]
    return [(MIXER_SYMBOLS[m["mixer"]], default_ffn)] * m["n_layers"]


def mamba_inner(m: dict[str, Any]) -> int:
    return m["mamba"]["expand"] * m["d_model"]


def mamba_rank(m: dict[str, Any]) -> int:
    """Δ's rank; 0 in archlab means ceil(d_model / 16), the paper's (and HF's "auto")."""
    r = m["mamba"]["dt_rank"]
    return r if r > 0 else math.ceil(m["d_model"] / 16)


def mamba2_shape(m: dict[str, Any]) -> tuple[int, int, int]:
    """(inner width, heads, conv channels) of a Mamba-2 layer."""
    c = m["mamba2"]
    di = c["expand"] * m["d_model"]
    return di, di // c["head_dim"], di + 2 * c["n_groups"] * c["d_state"]


def kv_heads(m: dict[str, Any]) -> int:
    return m["n_kv_heads"] or m["n_heads"]


def head_dim(m: dict[str, Any]) -> int:
    """Attention's head width: `model.head_dim`, or d_model / n_heads when unset (0)."""
    return m.get("head_dim", 0) or m["d_model"] // m["n_heads"]


def gdn_shape(m: dict[str, Any]) -> tuple[int, int, int, int]:
    """(key heads, value heads, dk, dv) of a Gated DeltaNet layer, as `GatedDeltaNetConfig`
    derives them: key heads round(0.75 · d / dk) when 0, value heads = key heads when 0,
    dv = 2 · dk when 0."""
    c = m["gdn"]
    hk = c["n_heads"] or max(1, round(0.75 * m["d_model"] / c["head_dim"]))
    return hk, c["n_v_heads"] or hk, c["head_dim"], c["v_head_dim"] or 2 * c["head_dim"]


def expert_width(m: dict[str, Any]) -> int:
    return m["moe"]["expert_d_ff"] or m["d_ff"]


def layer_params(m: dict[str, Any], mixer: str, ffn: str) -> tuple[int, int, int]:
    """(all parameters, matmul weights a token uses, parameters a token does not use) of one
    layer, as count.rs `layer_params` counts them."""
    d, bias = m["d_model"], int(m["bias"])
    norms = d * (1 + int(ffn != "n"))
    if mixer == "A":
        hd = head_dim(m)
        q, kv = m["n_heads"] * hd, kv_heads(m) * hd
        q_out = q * (1 + int(m.get("attn_output_gate", False)))
        mm = d * q_out + 2 * d * kv + q * d
        other = bias * (q_out + 2 * kv + d) + int(m.get("qk_norm", False)) * 2 * hd
    elif mixer in "GD":
        c = m["gdn"]
        hk, hv, dk, dv = gdn_shape(m)
        conv = 2 * hk * dk + hv * dv
        gated = int(mixer == "G")
        mm = d * (conv + hv * dv + hv * (1 + gated)) + hv * dv * d
        other = conv * c["d_conv"] + int(c["conv_bias"]) * conv + gated * 2 * hv + dv
    elif mixer == "M":
        c = m["mamba"]
        di, n, r, b = mamba_inner(m), c["d_state"], mamba_rank(m), int(c["bias"])
        mm = d * 2 * di + di * (r + 2 * n) + r * di + di * d  # in_proj, x_proj, dt_proj, out_proj
        other = (b * (2 * di + d) + di + di * c["d_conv"] + int(c["conv_bias"]) * di + di * n + di
                 + int(c["inner_norms"]) * (r + 2 * n))
    elif mixer == "S":
        c = m["mamba2"]
        di, heads, conv = mamba2_shape(m)
        proj = di + conv + heads
        mm = d * proj + di * d
        other = int(c["bias"]) * (proj + d) + conv * c["d_conv"] + int(c["conv_bias"]) * conv + 3 * heads + di
    else:
        raise BaselineError(f"mixer {mixer!r} has no HF equivalent here (supported: A, M, S, G)")

    def mlp(f: int) -> tuple[int, int]:
        """(matmul, other) parameters of one MLP of hidden width f."""
        if m["mlp"] == "swiglu":
            return 3 * d * f, bias * (2 * f + d)
        return 2 * d * f, bias * (f + d)

    idle_mm = idle_other = 0
    if ffn == "f":
        f_mm, f_other = mlp(m["d_ff"])
    elif ffn == "e":
        moe = m["moe"]
        e, k = moe["n_experts"], moe["top_k"]
        e_mm, e_other = mlp(expert_width(m))
        s_mm, s_other = mlp(moe["shared_expert_d_ff"]) if moe["shared_expert_d_ff"] else (0, 0)
        gates = d * e + int(moe["shared_expert_gate"]) * d
        f_mm, f_other = e * e_mm + s_mm + gates, e * e_other + s_other
        idle_mm, idle_other = (e - k) * e_mm, (e - k) * e_other
    else:
        f_mm = f_other = 0
    total = norms + mm + other + f_mm + f_other
    return total, mm + f_mm - idle_mm, idle_mm + idle_other


def gdn_inverse_flops(c: float) -> float:
    """FLOPs of the triangular inverse on one C × C chunk by forward substitution
    (gated_deltanet.rs `inverse_flops`): C(C-1)(C-2)/6 multiply-adds."""
    return 0.0 if c < 3.0 else c * (c - 1.0) * (c - 2.0) / 3.0


def mixer_fwd_flops(m: dict[str, Any], mixer: str, seq_len: int) -> float:
    """The non-matmul forward FLOPs per token of a sequence mixer (count.rs `mixer_flops`)."""
    if mixer == "A":
        d_attn = m["n_heads"] * head_dim(m)
        return 2.0 * d_attn * seq_len
    if mixer in "GD":
        # gated_deltanet.rs `Spec::flops`: the chunked WY form per value head and token.
        c = m["gdn"]
        hk, hv, dk, dv = gdn_shape(m)
        q = min(c["chunk_size"], max(seq_len, 1))
        return (hv * (4.0 * q * dk + gdn_inverse_flops(q) / q + 2.0 * q * (dv + dk) + 2.0 * q * dv + 6.0 * dk * dv)
                + 2.0 * (2 * hk * dk + hv * dv) * c["d_conv"])
    if mixer == "M":
        c = m["mamba"]
        di = mamba_inner(m)
        return 2.0 * di * c["d_conv"] + 9.0 * di * c["d_state"]
    if mixer == "S":
        c = m["mamba2"]
        di, _, conv = mamba2_shape(m)
        q = min(c["chunk_size"], seq_len)
        return q * (2.0 * c["n_groups"] * c["d_state"] + 2.0 * di) + 4.0 * di * c["d_state"] + 2.0 * conv * c["d_conv"]
    raise BaselineError(f"mixer {mixer!r} has no HF equivalent here (supported: A, M, S, G)")


@dataclass
class ArchlabCounts:
    params_total: int
    params_active: int
    flops_per_token: float


def archlab_counts(m: dict[str, Any], seq_len: int) -> ArchlabCounts:
    """archlab's own counts of this config: `ModelConfig::param_counts` and
    `train_flops_per_token` (6·N_matmul + 3·Σ mixer forward FLOPs, LM head once)."""
    d, v = m["d_model"], m["vocab_size"]
    if m["positions"] == "learned" or m["hymba"]["meta_tokens"]:
        raise BaselineError("learned positions and Hymba meta tokens have no HF equivalent here")
    total, idle, flops = v * d + d + (0 if m["tie_embeddings"] else d * v), 0, 6.0 * d * v
    for mixer, ffn in archlab_layers(m):
        p, mm, i = layer_params(m, mixer, ffn)
        total, idle = total + p, idle + i
        flops += 6.0 * mm + 3.0 * mixer_fwd_flops(m, mixer, seq_len)
    return ArchlabCounts(total, total - idle, flops)


# ---------------------------------------------------------------------------------------------
# The HF model of an archlab config
# ---------------------------------------------------------------------------------------------


@dataclass
class HfSpec:
    """Which `transformers` class, its config, and what it cannot match."""

    model_class: str
    config_class: str
    kwargs: dict[str, Any]
    differences: list[str] = field(default_factory=list)
    # Jamba has one `intermediate_size` for MLPs and experts: the expert modules are rebuilt
    # at this width after construction (None: no rebuild).
    expert_width: int | None = None


def periodic(indices: set[int], n_layers: int) -> tuple[int, int] | None:
    """The smallest (period, offset), offset < period, with {i < n : i % period == offset} ==
    indices; period n + 1 and offset n give the empty set."""
    for period in range(1, n_layers + 2):
        for offset in range(period):
            if {i for i in range(n_layers) if i % period == offset} == indices:
                return period, offset
    return None


def common_kwargs(m: dict[str, Any]) -> dict[str, Any]:
    return {"vocab_size": m["vocab_size"], "hidden_size": m["d_model"], "tie_word_embeddings": m["tie_embeddings"],
            "use_cache": False}


def attention_kwargs(m: dict[str, Any], seq_len: int) -> dict[str, Any]:
    return {
        "num_attention_heads": m["n_heads"],
        "num_key_value_heads": kv_heads(m),
        "max_position_embeddings": max(m["max_seq_len"], seq_len),
        "rms_norm_eps": m["norm_eps"],
        "hidden_act": "silu",
        "attention_dropout": 0.0,
    }


def block_differences(m: dict[str, Any], layers: list[tuple[str, str]]) -> list[str]:
    """Settings every HF model here fixes that archlab lets vary."""
    diffs = []
    if m["norm"] != "rms":
        diffs.append(f"archlab uses {m['norm']} norm; the HF models use RMSNorm")
    if any(f in "fe" for _, f in layers) and m["mlp"] != "swiglu":
        diffs.append(f"archlab's MLP is {m['mlp']}; the HF models use SwiGLU")
    if m["bias"]:
        diffs.append("archlab has biases (model.bias); the HF attention/MLP have none")
    if m.get("dropout", 0.0):
        diffs.append(f"archlab's dropout {m['dropout']} is not applied on the HF side")
    return diffs


def moe_differences(m: dict[str, Any], hf_name: str, renormalizes: bool) -> list[str]:
    moe = m["moe"]
    diffs = []
    if moe["z_loss_coef"] > 0:
        diffs.append(f"archlab adds the router z-loss (coef {moe['z_loss_coef']}); {hf_name} has none")
    if moe["capacity_factor"] > 0:
        diffs.append(f"archlab drops tokens at capacity factor {moe['capacity_factor']}; {hf_name} is dropless")
    if moe["renormalize"] != renormalizes and moe["top_k"] > 1:
        what = "renormalises" if renormalizes else "does not renormalise"
        diffs.append(f"{hf_name} {what} the top-k router weights; archlab's renormalize = {moe['renormalize']}")
    if moe["jitter"] > 0 and hf_name != "Mixtral":
        diffs.append(f"archlab's router jitter {moe['jitter']} is not applied by {hf_name}")
    if moe["shared_expert_d_ff"]:
        diffs.append(f"archlab's shared expert (width {moe['shared_expert_d_ff']}) has no {hf_name} equivalent")
    return diffs


def hf_spec(m: dict[str, Any], seq_len: int) -> HfSpec:
    """The HF model for archlab model config `m` (the `[model]` table of its TOML)."""
    layers = archlab_layers(m)
    mixers = {mix for mix, _ in layers}
    ffns = {ffn for _, ffn in layers}
    diffs = block_differences(m, layers)
    base = common_kwargs(m)
    if mixers == {"A"} and ffns == {"f"}:
        kw = base | attention_kwargs(m, seq_len) | {"num_hidden_layers": len(layers), "intermediate_size": m["d_ff"],
                                                    "rope_theta": m["rope_theta"], "attention_bias": False,
                                                    "mlp_bias": False}
        if m["positions"] != "rope":
            diffs.append(f"archlab's positions are {m['positions']}; Llama uses RoPE")
        return HfSpec("LlamaForCausalLM", "LlamaConfig", kw, diffs)
    if mixers == {"A"} and ffns == {"e"}:
        moe = m["moe"]
        kw = base | attention_kwargs(m, seq_len) | {
            "num_hidden_layers": len(layers), "intermediate_size": expert_width(m), "rope_theta": m["rope_theta"],
            "num_local_experts": moe["n_experts"], "num_experts_per_tok": moe["top_k"],
            "router_aux_loss_coef": moe["balance_coef"], "router_jitter_noise": moe["jitter"],
            "output_router_logits": True, "sliding_window": None}
        if m["positions"] != "rope":
            diffs.append(f"archlab's positions are {m['positions']}; Mixtral uses RoPE")
        return HfSpec("MixtralForCausalLM", "MixtralConfig", kw, diffs + moe_differences(m, "Mixtral", True))
    if mixers == {"M"} and ffns == {"n"}:
        c = m["mamba"]
        kw = base | {"num_hidden_layers": len(layers), "state_size": c["d_state"], "expand": c["expand"],
                     "conv_kernel": c["d_conv"], "time_step_rank": mamba_rank(m), "use_bias": c["bias"],
                     "use_conv_bias": c["conv_bias"], "layer_norm_epsilon": m["norm_eps"], "hidden_act": "silu",
                     "time_step_min": c["dt_min"], "time_step_max": c["dt_max"], "time_step_floor": c["dt_init_floor"]}
        if c["inner_norms"]:
            diffs.append("archlab's Mamba has Δ/B/C RMSNorms (mamba.inner_norms); HF Mamba has none")
        diffs.append("HF Mamba-1 without the mamba_ssm CUDA kernels runs its slow sequential scan in eager mode "
                     "(torch.compile may use an associative scan)")
        return HfSpec("MambaForCausalLM", "MambaConfig", kw, diffs)
    if mixers == {"S"} and ffns == {"n"}:
        c = m["mamba2"]
        di, heads, _ = mamba2_shape(m)
        kw = base | {"num_hidden_layers": len(layers), "num_heads": heads, "head_dim": c["head_dim"],
                     "state_size": c["d_state"], "expand": c["expand"], "n_groups": c["n_groups"],
                     "conv_kernel": c["d_conv"], "chunk_size": c["chunk_size"], "use_bias": c["bias"],
                     "use_conv_bias": c["conv_bias"], "layer_norm_epsilon": m["norm_eps"], "hidden_act": "silu",
                     "time_step_min": c["dt_min"], "time_step_max": c["dt_max"], "time_step_floor": c["dt_init_floor"],
                     "time_step_limit": (0.0, float("inf"))}
        diffs.append("HF Mamba-2 without the mamba_ssm kernels runs its chunked PyTorch SSD path (torch_forward)")
        return HfSpec("Mamba2ForCausalLM", "Mamba2Config", kw, diffs)
    if "G" in mixers and mixers <= {"A", "G"} and ffns <= {"f", "e"}:
        return qwen3_next_spec(m, layers, seq_len, base, diffs)
    if mixers <= {"A", "M"} and ffns <= {"f", "e"}:
        return jamba_spec(m, layers, seq_len, base, diffs)
    pattern = "".join(a + b for a, b in layers)
    raise BaselineError(
        f"no HF model for layers {pattern}: supported are all A+f (Llama), all A+e (Mixtral), all M+n (Mamba), "
        "all S+n (Mamba2), A/M with f/e at periodic positions (Jamba), and G/A with f/e (Qwen3-Next)")


def qwen3_next_spec(m: dict[str, Any], layers: list[tuple[str, str]], seq_len: int, base: dict[str, Any],
                    diffs: list[str]) -> HfSpec:
    """Gated DeltaNet / attention stacks with MLP or MoE as Qwen3-Next: any layer order
    (`layer_types`), MoE where the pattern says `e` (`mlp_only_layers` names the others). Its
    recurrence without fla's kernels is `torch_chunk_gated_delta_rule`, the reference this
    comparison is about."""
    c, moe = m["gdn"], m["moe"]
    hk, hv, dk, dv = gdn_shape(m)
    experts = [i for i, (_, ffn) in enumerate(layers) if ffn == "e"]
    has_attention = any(mix == "A" for mix, _ in layers)
    kw = base | attention_kwargs(m, seq_len) | {
        "num_hidden_layers": len(layers), "intermediate_size": m["d_ff"], "head_dim": head_dim(m),
        "layer_types": ["full_attention" if mix == "A" else "linear_attention" for mix, _ in layers],
        "rope_parameters": {"rope_type": "default", "rope_theta": m["rope_theta"],
                            "partial_rotary_factor": m.get("partial_rotary_factor", 1.0)},
        "linear_num_key_heads": hk, "linear_num_value_heads": hv, "linear_key_head_dim": dk,
        "linear_value_head_dim": dv, "linear_conv_kernel_dim": c["d_conv"], "attention_bias": False,
        "num_experts": moe["n_experts"] if experts else 0, "num_experts_per_tok": moe["top_k"],
        "moe_intermediate_size": expert_width(m), "decoder_sparse_step": 1,
        "mlp_only_layers": [i for i in range(len(layers)) if i not in experts],
        "shared_expert_intermediate_size": moe["shared_expert_d_ff"], "norm_topk_prob": moe["renormalize"],
        "router_aux_loss_coef": moe["balance_coef"], "output_router_logits": bool(experts)}
    if not has_attention:
        # No attention layer reads these, but Qwen3NextConfig validates RoPE's width anyway
        # (budget sizing can leave d_model / n_heads odd).
        kw["head_dim"] = 2
        kw["rope_parameters"]["partial_rotary_factor"] = 1.0
    if c["conv_bias"]:
        diffs.append("archlab's Gated DeltaNet conv has a bias (model.gdn.conv_bias); Qwen3-Next's has none")
    if c["allow_neg_eigval"]:
        diffs.append("archlab's β is 2σ(·) (model.gdn.allow_neg_eigval); Qwen3-Next's is σ(·)")
    if has_attention and not (m.get("attn_output_gate") and m.get("qk_norm")):
        diffs.append("Qwen3-Next's attention always has the output gate and q/k norms; archlab's here lacks "
                     "model.attn_output_gate or model.qk_norm")
    if has_attention and m["positions"] != "rope":
        diffs.append(f"archlab's positions are {m['positions']}; Qwen3-Next uses (partial) RoPE")
    if experts and not moe["shared_expert_gate"] and moe["shared_expert_d_ff"]:
        diffs.append("Qwen3-Next gates its shared expert (σ); archlab's moe.shared_expert_gate is off")
    if experts:
        diffs += [d for d in moe_differences(m, "Qwen3-Next", moe["renormalize"]) if "shared expert" not in d]
    diffs.append("HF Qwen3-Next without fla's kernels runs torch_chunk_gated_delta_rule (chunk 64) and "
                 "its PyTorch causal conv")
    return HfSpec("Qwen3NextForCausalLM", "Qwen3NextConfig", kw, diffs)


def jamba_spec(m: dict[str, Any], layers: list[tuple[str, str]], seq_len: int, base: dict[str, Any],
               diffs: list[str]) -> HfSpec:
    """Attention/Mamba-1 hybrids with MLP/MoE as Jamba: attention and expert layers must each
    sit at `i % period == offset`, which is how JambaConfig places them."""
    n = len(layers)
    pattern = "".join(a + b for a, b in layers)
    attn = periodic({i for i, (mix, _) in enumerate(layers) if mix == "A"}, n)
    experts = {i for i, (_, ffn) in enumerate(layers) if ffn == "e"}
    expert_place = periodic(experts, n)
    if attn is None or expert_place is None:
        raise BaselineError(f"{pattern}: Jamba places attention and MoE layers periodically; this pattern is not "
                            "periodic, so no JambaConfig reproduces it")
    c, moe = m["mamba"], m["moe"]
    kw = base | attention_kwargs(m, seq_len) | {
        "num_hidden_layers": n, "intermediate_size": m["d_ff"],
        "attn_layer_period": attn[0], "attn_layer_offset": attn[1],
        "expert_layer_period": expert_place[0], "expert_layer_offset": expert_place[1],
        "num_experts": moe["n_experts"] if experts else 1,
        "num_experts_per_tok": moe["top_k"] if experts else 1,
        "router_aux_loss_coef": moe["balance_coef"], "output_router_logits": bool(experts),
        "mamba_d_state": c["d_state"], "mamba_d_conv": c["d_conv"], "mamba_expand": c["expand"],
        "mamba_dt_rank": mamba_rank(m), "mamba_conv_bias": c["conv_bias"], "mamba_proj_bias": c["bias"],
        "use_mamba_kernels": False}
    if m["positions"] != "none":
        diffs.append(f"archlab's attention uses positions = {m['positions']}; Jamba's attention has no positional "
                     "encoding (no extra parameters, a little less work)")
    if not c["inner_norms"]:
        r, n_state = mamba_rank(m), c["d_state"]
        diffs.append(f"Jamba's Mamba layers have RMSNorms on Δ/B/C ({r + 2 * n_state} parameters per layer and a "
                     "little work); archlab's model.mamba.inner_norms is off")
    diffs.append("HF Jamba without the mamba_ssm CUDA kernels runs its slow sequential Mamba scan in eager mode")
    width = None
    if experts:
        diffs += moe_differences(m, "Jamba", False)
        if expert_width(m) != m["d_ff"]:
            width = expert_width(m)
            diffs.append(f"JambaConfig has one intermediate_size for MLPs and experts; the expert modules are "
                         f"rebuilt at archlab's expert width {width} (MLP width {m['d_ff']})")
    return HfSpec("JambaForCausalLM", "JambaConfig", kw, diffs, width)


# ---------------------------------------------------------------------------------------------
# Token batches: the same file, the same rule as archlab's `bench::tokens`
# ---------------------------------------------------------------------------------------------


def load_batches(path: Path, batch: int, seq_len: int, vocab: int, steps: int) -> list[tuple[Any, Any]]:
    """`steps` (inputs, targets) pairs of shape [batch, seq_len]: step s takes the s-th run of
    batch·(T+1) little-endian u32 tokens, cycling over the whole runs of the file."""
    import numpy as np

    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BaselineError(f"cannot read token file {path}: {e}") from e
    if not raw or len(raw) % 4:
        raise BaselineError(f"token file {path} has {len(raw)} bytes, not a whole number (≥ 1) of u32 token ids")
    ids = np.frombuffer(raw, dtype="<u4")
    per_step = batch * (seq_len + 1)
    if len(ids) < per_step:
        raise BaselineError(f"token file {path} holds {len(ids)} tokens, fewer than one training step needs: "
                            f"batch {batch} × (T {seq_len} + 1) = {per_step}")
    bad = np.nonzero(ids >= vocab)[0]
    if len(bad):
        raise BaselineError(f"token file {path}: token {bad[0]} is id {ids[bad[0]]}, not below the vocabulary "
                            f"size {vocab}")
    runs = len(ids) // per_step
    out = []
    for step in range(steps):
        rows = ids[(step % runs) * per_step:(step % runs + 1) * per_step].astype(np.int64).reshape(batch, seq_len + 1)
        out.append((rows[:, :-1].copy(), rows[:, 1:].copy()))
    return out


# ---------------------------------------------------------------------------------------------
# One measurement (runs in a child process)
# ---------------------------------------------------------------------------------------------


def table_peak(gpu_name: str, precision: str) -> float | None:
    """The same lookup as archlab's `bench::mfu::table_peak`."""
    n = gpu_name.upper()
    if "H100" in n and ("HBM3" in n or "SXM" in n):
        key = "H100 SXM"
    elif "H200" in n and "NVL" not in n:
        key = "H200"
    else:
        return None
    return GPU_PEAKS[key].get(precision)


def proc_status_bytes(key: str) -> int | None:
    """A `kB` field of /proc/self/status (VmHWM, VmRSS) in bytes; None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def build_model(spec: HfSpec, device: Any) -> Any:
    import torch
    import transformers

    config_cls = getattr(transformers, spec.config_class)
    model_cls = getattr(transformers, spec.model_class)
    kwargs = dict(spec.kwargs)
    config = config_cls(**kwargs)
    theta = kwargs.get("rope_theta")
    if theta is not None:
        # transformers 5 keeps RoPE's theta in `rope_parameters`; make sure it took.
        got = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", getattr(config, "rope_theta", None))
        if got != theta:
            raise BaselineError(f"{spec.config_class} did not take rope_theta {theta} (has {got})")
    model = model_cls(config)
    if spec.expert_width is not None:
        rebuild_experts(model, config, spec.expert_width)
    choose_experts_implementation(model, config, spec)
    return model.to(device)


def choose_experts_implementation(model: Any, config: Any, spec: HfSpec) -> None:
    """transformers' default for MoE experts is `grouped_mm`, whose CPU kernel (torch 2.15) stops
    with "strides should be multiple of 16 bytes" on a weight whose rows are not (an expert width
    sized to match archlab's parameters, 938 say, at 4 bytes). There, the per-expert loop
    (`eager`): the other, `batched_mm`, gathers a weight matrix per token (68 tokens/s and 15 GiB
    where the loop gives 3.6k and 1.4 GiB, MoE at the larger CPU shape). The one used is recorded."""
    if getattr(config, "_experts_implementation", None) != "grouped_mm":
        return
    width = (spec.expert_width or getattr(config, "moe_intermediate_size", 0)
             or getattr(config, "intermediate_size", 0) or 0)
    row_bytes = [4 * n for n in (config.hidden_size, width) if n]
    if any(b % 16 for b in row_bytes):
        model.set_experts_implementation("eager")


def rebuild_experts(model: Any, config: Any, width: int) -> None:
    """Jamba's experts at `width`: a copy of each `*.experts` module built from a config whose
    intermediate_size is the expert width (the router and the MLP layers are untouched)."""
    import torch

    expert_config = copy.deepcopy(config)
    expert_config.intermediate_size = width
    for name, module in list(model.named_modules()):
        if name.endswith(".experts"):
            parent = model.get_submodule(name.rsplit(".", 1)[0])
            fresh = type(module)(expert_config)
            for p in fresh.parameters():
                torch.nn.init.normal_(p, std=config.initializer_range)
            parent.experts = fresh


def hf_param_counts(model: Any, spec: HfSpec) -> tuple[int, int]:
    """(total, active): every parameter once (tied weights once), minus the (E − k)/E share of
    each experts module a token does not use."""
    total = sum(p.numel() for p in model.parameters())
    kw = spec.kwargs
    experts = kw.get("num_local_experts", kw.get("num_experts", 1))
    k = kw.get("num_experts_per_tok", experts)
    idle = 0
    if experts > 1:
        for name, module in model.named_modules():
            if name.endswith(".experts"):
                idle += sum(p.numel() for p in module.parameters()) * (experts - k) // experts
    return total, total - idle


def adamw(model: Any, train: dict[str, Any], on_cuda: bool) -> Any:
    """AdamW as archlab's: decay on matrices only (not embeddings, norms, biases, A_log, D)."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        skip = p.ndim < 2 or "embed" in name or "A_log" in name or "norm" in name
        (no_decay if skip else decay).append(p)
    groups = [{"params": decay, "weight_decay": train["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train["lr"], betas=(train["beta1"], train["beta2"]), eps=train["adam_eps"],
                             fused=True if on_cuda else None)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Builds, warms up and times one mode; returns its result record."""
    import torch
    import torch.nn.functional as F
    import transformers  # noqa: F401 - imported before the baseline is read: its footprint is not the model's

    rss_baseline = proc_status_bytes("VmRSS")  # torch's and transformers' own footprint
    cfg = load_archlab_config(args.archlab_config)
    m, train = cfg["model"], cfg["train"]
    spec = hf_spec(m, args.seq_len)
    on_cuda = args.device == "cuda"
    device = torch.device(args.device)
    bf16 = args.precision == "bf16"
    torch.manual_seed(train["seed"])
    batches = load_batches(args.tokens, args.batch, args.seq_len, m["vocab_size"], args.steps + 1)
    model = build_model(spec, device)
    model.train()
    total, active = hf_param_counts(model, spec)
    optimizer = adamw(model, train, on_cuda)
    params = [p for p in model.parameters() if p.requires_grad]
    aux_coef = m["moe"]["balance_coef"] if spec.kwargs.get("output_router_logits") else 0.0
    runner = model
    if args.mode == "compile":
        runner = torch.compile(model)
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()

    def step(x: Any, y: Any) -> float:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
            out = runner(input_ids=x)
            logits = out.logits
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
            if aux_coef and getattr(out, "aux_loss", None) is not None:
                loss = loss + aux_coef * out.aux_loss
        loss.backward()
        if train["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(params, train["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    times, losses = [], []
    for x_np, y_np in batches:
        x = torch.from_numpy(x_np).to(device)
        y = torch.from_numpy(y_np).to(device)
        started = time.perf_counter()
        loss = step(x, y)
        if on_cuda:
            torch.cuda.synchronize()
        losses.append(float(loss))  # a host read each step, as archlab's bench does
        times.append(time.perf_counter() - started)
    warmup, timed = times[0], times[1:]
    median = statistics.median(timed)
    tokens = args.batch * args.seq_len
    result: dict[str, Any] = {
        "status": "ok",
        "tokens_per_s": tokens / median,
        "mean_tokens_per_s": tokens * len(timed) / sum(timed),
        "median_step_s": median,
        "warmup_s": warmup,
        "compile_s": max(warmup - median, 0.0) if args.mode == "compile" else None,
        "step_times_s": times,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "hf_params_total": total,
        "hf_params_active": active,
        "torch_threads": torch.get_num_threads(),
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "experts_implementation": getattr(model.config, "_experts_implementation", None),
    }
    if on_cuda:
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
        result["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        result["gpu_name"] = torch.cuda.get_device_name()
    else:
        result["peak_memory_bytes"] = proc_status_bytes("VmHWM")
        result["rss_baseline_bytes"] = rss_baseline
    return result


def child_main(args: argparse.Namespace) -> int:
    """Measure one mode and write its record to --child-out, whatever happens."""
    try:
        result = measure(args)
    except BaselineError as e:
        result = {"status": "failed", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - every failure is a result, recorded with its trace
        text = f"{type(e).__name__}: {e}"
        oom = "out of memory" in text.lower() or isinstance(e, MemoryError)
        result = {"status": "out_of_memory" if oom else "failed", "error": text[:2000],
                  "traceback": traceback.format_exc()[-4000:]}
    Path(args.child_out).write_text(json.dumps(result, indent=1))
    return 0


# ---------------------------------------------------------------------------------------------
# The parent: one child per mode, then the record
# ---------------------------------------------------------------------------------------------


def run_mode(args: argparse.Namespace, mode: str, workdir: Path) -> dict[str, Any]:
    """Runs `mode` in its own process under the time limit; a timeout or a crash is a result."""
    out = workdir / f"{args.label}-{mode}.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--mode", mode, "--child-out", str(out)]
    cmd += child_args(args)
    started = time.perf_counter()
    env = dict(os.environ)
    fresh = None
    if args.cold_compile:
        # torch.compile caches compiled graphs and kernels across processes (under /tmp by
        # default), so a second run compiles in a fraction of the time; fresh cache folders
        # measure the compilation itself.
        fresh = tempfile.mkdtemp(prefix="torch_baseline-cache-")
        env["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(fresh, "inductor")
        env["TRITON_CACHE_DIR"] = os.path.join(fresh, "triton")
    # Its own session, so that a timeout also ends torch.compile's worker processes.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=args.timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        what = "compilation + steps" if mode == "compile" else "steps"
        return {"status": "timed_out", "error": f"{what} exceeded --timeout-s {args.timeout_s} s"}
    finally:
        if fresh:
            shutil.rmtree(fresh, ignore_errors=True)
    wall = time.perf_counter() - started
    if out.exists():
        result = json.loads(out.read_text())
    elif proc.returncode == -9:
        result = {"status": "out_of_memory", "error": "killed by SIGKILL (the OOM killer?)"}
    else:
        tail = (stderr or "").strip().splitlines()[-5:]
        result = {"status": "failed", "error": f"exit {proc.returncode}: " + " | ".join(tail)}
    result["wall_s"] = wall
    if result["status"] != "ok" and stderr:
        result["stderr_tail"] = stderr[-2000:]
    return result


def child_args(args: argparse.Namespace) -> list[str]:
    return ["--archlab-config", str(args.archlab_config), "--tokens", str(args.tokens), "--batch", str(args.batch),
            "--seq-len", str(args.seq_len), "--steps", str(args.steps), "--device", args.device,
            "--precision", args.precision]


def add_mfu(result: dict[str, Any], flops: float, peak: float | None) -> None:
    if result.get("status") != "ok":
        return
    achieved = flops * result["tokens_per_s"] / 1e12
    result["achieved_tflops"] = achieved
    result["mfu"] = achieved / peak if peak else None


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    code = "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def gpu_name(device: str) -> str | None:
    if device != "cuda":
        return None
    code = "import torch; print(torch.cuda.get_device_name())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return out.stdout.strip() or None


def versions() -> dict[str, str]:
    code = "import torch, transformers, sys; print(torch.__version__, transformers.__version__, sys.version.split()[0])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    parts = out.stdout.split()
    return dict(zip(["torch", "transformers", "python"], parts)) if len(parts) == 3 else {}


def peak_for(device: str, precision: str, user_peak: float | None) -> tuple[float | None, str]:
    if user_peak is not None:
        return user_peak, f"--peak-tflops {user_peak}"
    if device == "cpu":
        return None, "CPU: no peak is known for it (give --peak-tflops to compute MFU)"
    name = gpu_name(device) or "unknown GPU"
    peak = table_peak(name, precision)
    if peak is None:
        return None, f"{name} at {precision} is not in the peak table; give --peak-tflops"
    return peak, f"{name}, {precision} dense (table)"


def human(x: float | None) -> str:
    if x is None:
        return "–"
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.1f}"


def human_bytes(b: int | None) -> str:
    if not b:
        return "–"
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def print_report(record: dict[str, Any]) -> None:
    p = record["params"]
    print(f"{record['arch']}: {record['hf_model']} on {record['device']} ({record['precision']}), "
          f"T={record['seq_len']} batch {record['batch']}, {record['steps']} timed steps")
    print(f"  parameters: archlab {p['archlab_total']:,} total / {p['archlab_active']:,} active; "
          f"HF {p.get('hf_total') or 0:,} / {p.get('hf_active') or 0:,}")
    if p.get("mismatch"):
        print(f"  !!! PARAMETER MISMATCH: HF differs from archlab by {p['relative_difference'] * 100:+.2f}% "
              f"(tolerance {PARAM_TOLERANCE * 100:.0f}%): the models are not the same size !!!")
    for d in record["differences"]:
        print(f"  differs: {d}")
    print("  | mode | status | tok/s (median step) | mean tok/s | median step | warm-up | compile | peak memory "
          "| TFLOP/s | MFU |")
    print("  |---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode, r in record["modes"].items():
        if r["status"] != "ok":
            print(f"  | {mode} | {r['status']}: {r.get('error', '')[:120]} | | | | | | | | |")
            continue
        mfu = f"{r['mfu'] * 100:.1f}%" if r.get("mfu") is not None else "n/a"
        compile_s = f"{r['compile_s']:.1f} s" if r.get("compile_s") is not None else "–"
        print(f"  | {mode} | ok | {human(r['tokens_per_s'])} | {human(r['mean_tokens_per_s'])} | "
              f"{r['median_step_s'] * 1e3:.1f} ms | {r['warmup_s']:.2f} s | {compile_s} | "
              f"{human_bytes(r.get('peak_memory_bytes'))} | {r['achieved_tflops']:.3g} | {mfu} |")


def parent_main(args: argparse.Namespace) -> int:
    cfg = load_archlab_config(args.archlab_config)
    m = cfg["model"]
    spec = hf_spec(m, args.seq_len)  # refuse an unmappable architecture before any child runs
    load_batches(args.tokens, args.batch, args.seq_len, m["vocab_size"], 1)  # and a bad token file
    args.device = resolve_device(args.device)
    if args.precision == "auto":
        args.precision = "bf16" if args.device == "cuda" else "f32"
    counts = archlab_counts(m, args.seq_len)
    flops = args.flops_per_token if args.flops_per_token is not None else counts.flops_per_token
    peak, peak_source = peak_for(args.device, args.precision, args.peak_tflops)
    archlab_total = args.archlab_params_total if args.archlab_params_total is not None else counts.params_total
    archlab_active = args.archlab_params_active if args.archlab_params_active is not None else counts.params_active
    workdir = args.out.parent / (args.out.stem + "-modes")
    workdir.mkdir(parents=True, exist_ok=True)
    modes = {}
    for mode in args.modes:
        print(f"torch_baseline: {args.label} {mode} …", file=sys.stderr, flush=True)
        modes[mode] = run_mode(args, mode, workdir)
        add_mfu(modes[mode], flops, peak)
    ok = [r for r in modes.values() if r["status"] == "ok"]
    hf_total = ok[0]["hf_params_total"] if ok else None
    hf_active = ok[0]["hf_params_active"] if ok else None
    rel = (hf_total - archlab_total) / archlab_total if hf_total else None
    record = {
        "arch": args.arch or args.label,
        "archlab_config": str(args.archlab_config),
        "hf_model": spec.model_class,
        "hf_config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in spec.kwargs.items()},
        "hf_expert_width": spec.expert_width,
        "differences": spec.differences,
        "device": args.device,
        "gpu_name": gpu_name(args.device),
        "precision": args.precision,
        "versions": versions(),
        "seq_len": args.seq_len,
        "batch": args.batch,
        "steps": args.steps,
        "cold_compile": args.cold_compile,
        "tokens": str(args.tokens),
        "flops_per_token": flops,
        "flops_per_token_python_port": counts.flops_per_token,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "params": {
            "archlab_total": archlab_total,
            "archlab_active": archlab_active,
            "hf_total": hf_total,
            "hf_active": hf_active,
            "relative_difference": rel,
            "mismatch": rel is not None and abs(rel) > PARAM_TOLERANCE,
        },
        "modes": modes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    print_report(record)
    print(f"wrote {args.out}")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archlab-config", type=Path, required=True,
                    help="the resolved archlab config (a bench point's TOML, or `archlab config` output)")
    ap.add_argument("--arch", help="label for the output (default: the config file's stem)")
    ap.add_argument("--tokens", type=Path, required=True, help="raw little-endian u32 token file")
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--seq-len", type=int, required=True)
    ap.add_argument("--steps", type=int, default=20, help="timed steps after one warm-up step")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--precision", default="auto", choices=["auto", "bf16", "f32"],
                    help="auto: bf16 autocast on CUDA, f32 on the CPU")
    ap.add_argument("--modes", default="eager,compile", type=lambda s: [x for x in s.split(",") if x],
                    help="comma-separated: eager, compile")
    ap.add_argument("--timeout-s", type=float, default=900, help="per mode (compilation included)")
    ap.add_argument("--cold-compile", action="store_true",
                    help="give torch.compile empty cache folders, so that compile_s is a cold compilation "
                         "(default: the persistent caches a user has, warm for shapes compiled before)")
    ap.add_argument("--flops-per-token", type=float, help="archlab's (bench.json); default: the Python port")
    ap.add_argument("--archlab-params-total", type=int)
    ap.add_argument("--archlab-params-active", type=int)
    ap.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: table of known GPUs)")
    ap.add_argument("--out", type=Path, default=Path("torch_baseline.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name in ("batch", "seq_len", "steps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    bad = [m for m in args.modes if m not in ("eager", "compile")]
    if bad or not args.modes:
        ap.error(f"--modes takes eager and/or compile (got {','.join(args.modes)})")
    if args.peak_tflops is not None and not args.peak_tflops > 0:
        ap.error("--peak-tflops must be positive")
    # Patterns such as `(LLLA)2` are architecture names too: keep file names plain.
    args.label = re.sub(r"[^A-Za-z0-9_.-]", "_", args.arch or args.archlab_config.stem)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    try:
        return parent_main(args)
    except BaselineError as e:
        print(f"torch_baseline: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
