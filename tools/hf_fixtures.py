#!/usr/bin/env python3
"""Generate Hugging Face reference fixtures for archlab's checkpoint-import tests.

Purpose
-------
Builds tiny, *randomly initialised* Hugging Face causal LMs (Mamba, Mamba2,
Llama, Mixtral, Jamba, Qwen3-Next with MoE and with dense MLPs) in float32, saves them exactly as `save_pretrained` would (config.json
+ model.safetensors), and records reference outputs computed by the
transformers PyTorch implementation:

    <out>/<kind>/config.json
    <out>/<kind>/model.safetensors
    <out>/<kind>/tokenizer.json         WordLevel tokenizer, 67 ids (see below)
    <out>/<kind>/expected.safetensors
        input_ids  int64   [2, 13]      fixed batch (13 is not a multiple of
                                        the Mamba2 chunk size 8 on purpose)
        logits     float32 [2, 13, 67]  full forward, no cache
        greedy     int64   [1, 6]       the 6 tokens greedily generated
                                        (use_cache=True) after input_ids[:1]
        balance_loss float32 [L]        (mixtral, jamba, qwen3_next) each MoE layer's
                                        load-balancing loss on input_ids, by HF's function
        input_ids_long int64 [2, 100]   (qwen3_next*) a batch longer than one chunk of
        logits_long  float32 [2,100,V]  transformers' chunked delta rule (64): 64 + 36

Qwen3-Next generates 20 greedy tokens (the other kinds 6). `qwen3_next` has grouped
linear-attention heads (2 key, 4 value), MoE in layers 0, 2, 3 (`mlp_only_layers=[1]`)
with a gated shared expert, and is stored the way real checkpoints are: bfloat16 weights
(the references are computed from the same bf16-rounded values in f32) plus `mtp.*`
tensors that a loader must skip. `qwen3_next_dense` has ungrouped heads, dense SwiGLU
MLPs and f32 weights.

The Rust side loads model.safetensors + config.json, runs its own forward on
`input_ids` and must reproduce `logits` (and `greedy` through its decode path).

Parameters that HF initialises to constants (norm gains, D, conv biases) are
perturbed with small noise, and A_log / dt biases get +-0.1 of noise, so that a
loader that drops or mis-maps one of them is caught by the logits comparison.
Llama uses initializer_range=0.3 and Mamba's mixer out_proj is scaled x8 so the
greedy continuation is not one repeated token; the script asserts every greedy
step's top1-top2 logit gap is > 1e-3 (far above f32 noise).
Generation stops only on max_new_tokens (eos_token_id is cleared), so `greedy`
always has 6 tokens. save_pretrained's generation_config.json is deleted (not
needed by the Rust side).

tokenizer.json is the same in every folder: a WordLevel model over exactly
VOCAB=67 tokens, "<unk>" at id 0 then the 66 lowercase words of WORDS at ids
1..66, a Whitespace pre-tokenizer and a WordPiece decoder (no "##" pieces, so
it just rejoins words with single spaces; cleanup is off so "do not" stays
"do not"). Loadable with the Rust `tokenizers` crate (0.22). The model ids are
random, so decoded text is gibberish; it only gives the fixtures a real vocab.

How to run
----------
    python tools/hf_fixtures.py --out tests/fixtures/hf

Requirements: `pip install torch transformers safetensors tokenizers` (CPU-only torch is
fine: everything is float32 and tiny; it runs in a few seconds).
Generated with transformers 5.x; the kinds can be restricted with --kinds.
"""

import argparse
import os
import sys

import torch
from safetensors.torch import save_file

VOCAB = 67
BATCH = 2
SEQ = 13
NEW_TOKENS = 6


def eager(model_cls, cfg):
    """The model with the plain (eager) attention implementation, whatever the version."""
    cfg._attn_implementation = "eager"
    try:
        return model_cls(cfg, attn_implementation="eager")
    except TypeError:
        return model_cls(cfg)


def build_mamba():
    from transformers import MambaConfig, MambaForCausalLM

    cfg = MambaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        state_size=8,
        num_hidden_layers=2,
        expand=2,
        conv_kernel=4,
        time_step_rank=6,  # deliberately not the "auto" value ceil(32/16)=2
        use_bias=False,
        use_conv_bias=True,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
    )
    return MambaForCausalLM(cfg)


def build_mamba2():
    from transformers import Mamba2Config, Mamba2ForCausalLM

    hidden, expand, head_dim = 32, 2, 16
    num_heads = (expand * hidden) // head_dim
    assert num_heads * head_dim == expand * hidden
    cfg = Mamba2Config(
        vocab_size=VOCAB,
        hidden_size=hidden,
        state_size=16,
        num_hidden_layers=2,
        expand=expand,
        head_dim=head_dim,
        num_heads=num_heads,
        n_groups=2,
        conv_kernel=4,
        chunk_size=8,
        use_bias=False,
        use_conv_bias=True,
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
    )
    return Mamba2ForCausalLM(cfg)


def build_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        # HF's default 0.02 makes every block a near no-op next to the tied
        # embedding residual, so greedy decoding repeats one token; 0.3 gives
        # sharper attention and a non-degenerate greedy continuation.
        initializer_range=0.3,
    )
    return eager(LlamaForCausalLM, cfg)


def build_mixtral():
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = MixtralConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=24,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
        router_jitter_noise=0.0,
        sliding_window=None,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        # As for Llama: sharp enough that greedy decoding does not repeat one token, and
        # router logits far enough apart that f32 noise cannot flip a top-2 choice.
        initializer_range=0.3,
    )
    return eager(MixtralForCausalLM, cfg)


def qwen3_next_config(dense):
    from transformers import Qwen3NextConfig

    # The tiny config of shared/reference (layer_types L, L, L, A), with partial RoPE of 25%.
    return Qwen3NextConfig(
        vocab_size=VOCAB,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        partial_rotary_factor=0.25,
        rope_theta=10000.0,
        linear_num_key_heads=2,
        linear_num_value_heads=2 if dense else 4,
        linear_key_head_dim=16,
        linear_value_head_dim=16,
        linear_conv_kernel_dim=4,
        num_experts=0 if dense else 4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=32,
        intermediate_size=128,
        decoder_sparse_step=1,
        mlp_only_layers=[] if dense else [1],
        norm_topk_prob=True,
        max_position_embeddings=512,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        # As for Llama: sharp enough that greedy decoding does not repeat one token.
        initializer_range=0.2,
    )


def build_qwen3_next():
    from transformers import Qwen3NextForCausalLM

    return eager(Qwen3NextForCausalLM, qwen3_next_config(dense=False))


def build_qwen3_next_dense():
    from transformers import Qwen3NextForCausalLM

    return eager(Qwen3NextForCausalLM, qwen3_next_config(dense=True))


def build_jamba():
    from transformers import JambaConfig, JambaForCausalLM

    # 4 layers: Mamba+MLP, Mamba+MoE, attention+MLP, Mamba+MoE (archlab pattern MfMeAfMe).
    cfg = JambaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=40,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        attn_layer_period=4,
        attn_layer_offset=2,
        expert_layer_period=2,
        expert_layer_offset=1,
        num_experts=4,
        num_experts_per_tok=2,
        mamba_d_state=8,
        mamba_d_conv=4,
        mamba_expand=2,
        mamba_dt_rank=4,
        mamba_conv_bias=True,
        mamba_proj_bias=False,
        use_mamba_kernels=False,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        initializer_range=0.3,
    )
    return eager(JambaForCausalLM, cfg)


# Tokenizer vocabulary: "<unk>" at id 0, then these words at ids 1..66 (order
# fixed; changing it changes every fixture's tokenizer.json).
UNK = "<unk>"
WORDS = (
    "the a and was she he it to of in "
    "little girl boy dog cat day went saw big happy "
    "they her his with on said mom dad play ball "
    "tree park sun red one time there upon friend liked "
    "wanted had so very not is you i we ran "
    "jump look home good fun toy bird fish sad smiled "
    "found help that but at all"
).split()
assert len(WORDS) == VOCAB - 1 and len(set(WORDS)) == len(WORDS) and UNK not in WORDS


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {UNK: 0, **{w: i + 1 for i, w in enumerate(WORDS)}}
    assert sorted(vocab.values()) == list(range(VOCAB))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    assert tok.get_vocab_size(with_added_tokens=True) == VOCAB
    text = "the girl saw a dog"
    ids = tok.encode(text).ids
    assert ids == [vocab[w] for w in text.split()], ids
    assert tok.decode(ids) == text, tok.decode(ids)
    assert tok.encode("the zebra").ids == [vocab["the"], 0]
    assert tok.decode(list(range(VOCAB))) == " ".join([UNK] + WORDS)
    return tok


BUILDERS = {
    "mamba": build_mamba,
    "mamba2": build_mamba2,
    "llama": build_llama,
    "mixtral": build_mixtral,
    "jamba": build_jamba,
    "qwen3_next": build_qwen3_next,
    "qwen3_next_dense": build_qwen3_next_dense,
}
NEW_TOKENS_OF = {"qwen3_next": 20, "qwen3_next_dense": 20}
LONG_SEQ = 100
# Saved as bfloat16, as real checkpoints are, with extra multi-token-prediction tensors.
BF16 = {"qwen3_next"}

# Extra gain on the mixer output projection (residual branch). With HF's init
# the tiny Mamba's residual stream is dominated by the tied embedding and the
# greedy continuation is a single repeated token; x8 makes the SSM decide.
OUT_PROJ_GAIN = {"mamba": 8.0}


@torch.no_grad()
def perturb(model, gen, out_proj_gain=1.0):
    """Add noise to parameters that HF initialises to constants."""
    touched = []
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if name.endswith("mixer.out_proj.weight") and out_proj_gain != 1.0:
            p.mul_(out_proj_gain)
        elif p.ndim == 1 and "norm" in name and leaf == "weight":
            # RMSNorm gains (block norms, norm_f, Mamba2 gated norm, Llama norms; Qwen3-Next's
            # zero-centred gains and q/k norms)
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        elif leaf == "D":
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        elif leaf == "A_log" or leaf == "dt_bias" or name.endswith("dt_proj.bias"):
            p.add_(torch.empty(p.shape).uniform_(-0.1, 0.1, generator=gen))
        elif name.endswith("conv1d.bias"):
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
        else:
            continue
        touched.append(name)
    return touched


@torch.no_grad()
def router_checks(model, input_ids):
    """Per-layer load-balancing loss by HF's own `load_balancing_loss_func` (one layer at a
    time: HF pools the layers, archlab reports each), float32 [layers]. Also asserts that
    every token's k-th and (k+1)-th router logits differ by > 1e-3, so f32 noise cannot make
    a correct reimplementation route a token differently."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    cfg = model.config
    n_experts = getattr(cfg, "num_local_experts", None) or cfg.num_experts
    # The balance loss is a function of the router's raw logits.
    out = model(input_ids=input_ids, use_cache=False, output_router_logits=True)
    losses = []
    for layer_logits in out.router_logits:
        top = layer_logits.float().topk(cfg.num_experts_per_tok + 1, dim=-1).values
        gap = (top[:, -2] - top[:, -1]).min().item()
        assert gap > 1e-3, f"router top-k gap {gap} too small"
        losses.append(load_balancing_loss_func((layer_logits,), n_experts, cfg.num_experts_per_tok))
    return torch.stack([torch.as_tensor(l, dtype=torch.float32) for l in losses]).contiguous()


def add_mtp_tensors(path, hidden):
    """Adds two `mtp.*` tensors (bf16), as real Qwen3-Next checkpoints carry a
    multi-token-prediction module that transformers does not load."""
    from safetensors.torch import load_file

    tensors = load_file(path)
    gen = torch.Generator().manual_seed(7)
    tensors["mtp.fc.weight"] = torch.randn(hidden, 2 * hidden, generator=gen).to(torch.bfloat16)
    tensors["mtp.norm.weight"] = torch.zeros(hidden, dtype=torch.bfloat16)
    save_file(tensors, path, metadata={"format": "pt"})


def file_kb(path):
    return os.path.getsize(path) / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory, e.g. tests/fixtures/hf")
    ap.add_argument("--kinds", default=",".join(BUILDERS), help="comma separated subset")
    args = ap.parse_args()

    import transformers

    torch.set_default_dtype(torch.float32)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")

    for kind in (k.strip() for k in args.kinds.split(",") if k.strip()):
        if kind not in BUILDERS:
            sys.exit(f"unknown kind {kind!r}; expected one of {sorted(BUILDERS)}")
        # The kind's place in BUILDERS, not in --kinds: a subset regenerates the same files.
        idx = list(BUILDERS).index(kind)
        torch.manual_seed(0)
        model = BUILDERS[kind]().to(torch.float32).eval()
        # Never stop early on an eos token: `greedy` must have NEW_TOKENS ids.
        model.config.eos_token_id = None
        model.generation_config.eos_token_id = None
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = 0

        gen = torch.Generator().manual_seed(1234 + idx)
        perturb(model, gen, OUT_PROJ_GAIN.get(kind, 1.0))
        if kind in BF16:
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(p.to(torch.bfloat16).to(torch.float32))
        new_tokens = NEW_TOKENS_OF.get(kind, NEW_TOKENS)

        out_dir = os.path.join(args.out, kind)
        os.makedirs(out_dir, exist_ok=True)
        if kind in BF16:
            model.to(torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)
            model.to(torch.float32)
            add_mtp_tensors(os.path.join(out_dir, "model.safetensors"), model.config.hidden_size)
        else:
            model.save_pretrained(out_dir, safe_serialization=True)
        gen_cfg = os.path.join(out_dir, "generation_config.json")
        if os.path.exists(gen_cfg):
            os.remove(gen_cfg)
        tok_path = os.path.join(out_dir, "tokenizer.json")
        build_tokenizer().save(tok_path)

        ids_gen = torch.Generator().manual_seed(42)
        input_ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=ids_gen, dtype=torch.int64)

        with torch.no_grad():
            logits = model(input_ids=input_ids, use_cache=False).logits.float().contiguous()
            assert logits.shape == (BATCH, SEQ, VOCAB), logits.shape
            out = model.generate(
                input_ids[:1],
                attention_mask=torch.ones_like(input_ids[:1]),
                max_new_tokens=new_tokens,
                do_sample=False,
                use_cache=True,
            )
            greedy = out[:, SEQ:].to(torch.int64).contiguous()
            assert greedy.shape == (1, new_tokens), greedy.shape

            # Self-check: the cached decode must agree with argmax over full
            # no-cache recomputation.
            # Also record the smallest top1-top2 gap: it must dwarf f32 noise,
            # or a correct reimplementation could legitimately pick another id.
            seq = input_ids[:1]
            margin = float("inf")
            for _ in range(new_tokens):
                last = model(input_ids=seq, use_cache=False).logits[:, -1]
                top2 = last.topk(2, dim=-1).values[0]
                margin = min(margin, (top2[0] - top2[1]).item())
                seq = torch.cat([seq, last.argmax(-1, keepdim=True)], dim=1)
            assert margin > 1e-3, f"[{kind}] greedy argmax margin {margin} too small"
            if not torch.equal(seq[:, SEQ:], greedy):
                print(f"WARNING [{kind}]: cached greedy {greedy.tolist()} != recomputed {seq[:, SEQ:].tolist()}")

        expected = {"input_ids": input_ids.contiguous(), "logits": logits, "greedy": greedy}
        if kind in ("mixtral", "jamba", "qwen3_next"):
            expected["balance_loss"] = router_checks(model, input_ids)
        if kind.startswith("qwen3_next"):
            long_ids = torch.randint(0, VOCAB, (BATCH, LONG_SEQ), generator=ids_gen, dtype=torch.int64)
            with torch.no_grad():
                long_logits = model(input_ids=long_ids, use_cache=False).logits.float().contiguous()
            expected["input_ids_long"] = long_ids.contiguous()
            expected["logits_long"] = long_logits

        exp_path = os.path.join(out_dir, "expected.safetensors")
        save_file(
            expected,
            exp_path,
            # One key only: safetensors writes metadata from a hash map, so
            # several keys would make the header bytes differ run to run.
            metadata={"generator": f"tools/hf_fixtures.py transformers={transformers.__version__} torch={torch.__version__}"},
        )

        n_params = sum(p.numel() for p in model.parameters())
        w_path = os.path.join(out_dir, "model.safetensors")
        print(
            f"{kind:7s} params={n_params:6d} |logits|max={logits.abs().max().item():.4f} "
            f"greedy={greedy[0].tolist()} margin={margin:.3f} model.safetensors={file_kb(w_path):.1f}KB "
            f"expected.safetensors={file_kb(exp_path):.1f}KB "
            f"config.json={file_kb(os.path.join(out_dir, 'config.json')):.1f}KB "
            f"tokenizer.json={file_kb(tok_path):.1f}KB"
        )


if __name__ == "__main__":
    main()
