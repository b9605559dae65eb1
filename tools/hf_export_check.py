#!/usr/bin/env python3
"""Checks `archlab export` against Hugging Face `transformers` itself.

For each architecture below it trains a short archlab run on the built-in stories (byte
tokenizer), exports it with `archlab export`, loads the export with
`AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained`, and compares:

- the token ids `transformers`' tokenizer gives a text with the ids archlab's tokenizer gives
  (`archlab score --text` reports them): they must be equal;
- every token's log-probability under `transformers` (float32, eager, no cache) with the one
  `archlab score` prints for the same text: max |difference| must be below 1e-4;
- the greedy continuation of a prompt (`generate`, with its cache, against archlab's greedy
  `generate --temperature 0`): the same tokens.

It prints a Markdown table (committed as bench/results/hf-export.md) and exits non-zero when
any check fails.

    pip install torch transformers      # CPU is enough: the models are tiny
    cargo build --release
    python tools/hf_export_check.py --archlab target/release/archlab --work /tmp/hf-export
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

# name → archlab train flags. Each is short: the check is about the mapping, not quality.
ARCHS = {
    "dense (Llama)": ["--preset", "tiny"],
    "moe (Mixtral)": ["--preset", "moe-tiny"],
    "mamba (Mamba)": ["--preset", "mamba-tiny"],
    "mamba2 (Mamba2)": ["--preset", "mamba2-tiny"],
    "jamba layout (Jamba)": [
        "--preset", "tiny",
        "--set", 'model.pattern="MfMeAfMeMfMeAfMe"',
        "--set", 'model.positions="none"',
        "--set", "model.mamba.inner_norms=true",
        "--set", "model.moe.renormalize=false",
        "--set", "model.moe.n_experts=4",
    ],
    "gdn-hybrid, gated attention (Qwen3-Next)": [
        "--preset", "gdn-tiny",
        "--set", 'model.pattern="GfGeGfAe"',
        "--set", "model.attn_output_gate=true",
        "--set", "model.qk_norm=true",
        "--set", "model.partial_rotary_factor=0.25",
        "--set", "model.moe.n_experts=4",
        "--set", "model.moe.shared_expert_d_ff=128",
        "--set", "model.moe.shared_expert_gate=true",
    ],
}

TEXT = "Once upon a time, a little fox found a shiny stone by the river. She said: \"Look!\""
PROMPT = "Once upon a time"
GREEDY = 24
TOLERANCE = 1e-4


def run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def check(name, flags, args):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run_dir = args.work / name.split(" ")[0]
    out = args.work / (name.split(" ")[0] + "-hf")
    if not (run_dir / "best.ckpt").exists():
        run([args.archlab, "train", *flags, "--run-dir", str(run_dir), "--quiet", "--device", "cpu",
             "--set", f"train.max_steps={args.steps}", "--set", "eval.every=1000000",
             "--set", "train.checkpoint_every=0"])
    if not out.exists():
        print(run([args.archlab, "export", "--run", str(run_dir), "--out", str(out)]).strip(), file=sys.stderr)
    family = json.loads((out / "config.json").read_text())["architectures"][0]

    scored = [json.loads(line) for line in run(
        [args.archlab, "score", "--run", str(run_dir), "--text", TEXT, "--device", "cpu"]).splitlines()]
    ids = [s["id"] for s in scored]
    tok = AutoTokenizer.from_pretrained(out)
    hf_ids = tok(TEXT, add_special_tokens=True)["input_ids"]
    same_ids = hf_ids == ids

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids]), use_cache=False).logits[0]
    logprobs = torch.log_softmax(logits.double(), dim=-1)
    worst = 0.0
    for pos, s in enumerate(scored):
        if s["logprob"] is None:  # the first token has no prediction
            continue
        hf = logprobs[pos - 1, s["id"]].item()
        worst = max(worst, abs(hf - s["logprob"]))

    prompt_ids = tok(PROMPT)["input_ids"]
    # Exactly GREEDY tokens: no stop at the end-of-text byte.
    model.generation_config.eos_token_id = None
    with torch.no_grad():
        gen = model.generate(torch.tensor([prompt_ids]), max_new_tokens=GREEDY, do_sample=False,
                             pad_token_id=0)[0, len(prompt_ids):].tolist()
    archlab_text = run([args.archlab, "generate", "--run", str(run_dir), "--prompt", PROMPT,
                        "--max-tokens", str(GREEDY), "--temperature", "0", "--device", "cpu"])
    hf_text = tok.decode(gen)
    same_greedy = hf_text in archlab_text
    ok = same_ids and worst <= TOLERANCE and same_greedy
    return {
        "name": name, "family": family, "ids": same_ids, "tokens": len(ids), "worst": worst,
        "greedy": same_greedy, "hf_text": hf_text, "ok": ok,
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archlab", default="target/release/archlab")
    p.add_argument("--work", type=Path, default=Path("/tmp/archlab-hf-export"))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--only", nargs="*", help="names (their first word) to check")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    import torch
    import transformers

    rows = []
    start = time.time()
    for name, flags in ARCHS.items():
        if args.only and name.split(" ")[0] not in args.only:
            continue
        r = check(name, flags, args)
        rows.append(r)
        print(f"{name}: {r}", file=sys.stderr)
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, Python "
          f"{platform.python_version()}, {platform.machine()}; {args.steps} training steps per run; "
          f"{time.time() - start:.0f} s\n")
    print(f"| archlab run | loaded by transformers as | same token ids | tokens scored "
          f"| max abs log-prob difference (limit {TOLERANCE:g}) | same greedy continuation ({GREEDY} tokens) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['family']} | {'yes' if r['ids'] else 'NO'} | {r['tokens']} "
              f"| {r['worst']:.2e} | {'yes' if r['greedy'] else 'NO'} |")
    failed = [r["name"] for r in rows if not r["ok"]]
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
