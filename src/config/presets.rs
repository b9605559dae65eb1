//! Named starting points. `tiny` trains on a 2-core CPU in a few minutes; `27m` is the seed
//! studies' Transformer shape (d_model=384, 8 layers, 6 heads, d_ff=1536, T=512).

use anyhow::{Result, bail};

use super::*;

pub const NAMES: &[&str] = &[
    "tiny",
    "27m",
    "27m-256",
    "mamba-tiny",
    "mamba2-tiny",
    "mamba-27m",
    "mamba2-27m",
    "mamba-130m",
    "moe-tiny",
    "moe-27m",
    "gdn-tiny",
    "gdn-27m",
];

pub fn preset(name: &str) -> Result<RunConfig> {
    Ok(match name {
        "tiny" => tiny(),
        "27m" => seeds_27m(512),
        "27m-256" => seeds_27m(256),
        "mamba-tiny" => mamba_tiny(MixerKind::Mamba),
        "mamba2-tiny" => mamba_tiny(MixerKind::Mamba2),
        "mamba-27m" => mamba_27m(MixerKind::Mamba),
        "mamba2-27m" => mamba_27m(MixerKind::Mamba2),
        "mamba-130m" => mamba_130m(),
        "moe-tiny" => moe(tiny()),
        "moe-27m" => moe(seeds_27m(512)),
        "gdn-tiny" => gated_deltanet(tiny(), 32),
        "gdn-27m" => gated_deltanet(seeds_27m(512), 48),
        other => bail!("unknown preset `{other}`; available presets: {}", NAMES.join(", ")),
    })
}

/// Shared defaults: Llama-style blocks (RoPE, RMSNorm, SwiGLU, no biases, tied embeddings),
/// AdamW(0.9, 0.95), warmup then cosine to 10%, clip 1.0 — the settings of nanoGPT/Llama
/// recipes that small-model studies usually inherit.
fn base() -> RunConfig {
    RunConfig {
        data: DataConfig {
            source: "builtin:stories".into(),
            tokenizer: "byte".into(),
            text_field: "text".into(),
            builtin_bytes: 4_000_000,
            corpus_seed: 0,
            val_fraction: 0.05,
            cache_dir: "runs/data".into(),
            task: crate::data::tasks::TaskConfig::default(),
        },
        model: ModelConfig::default(),
        train: TrainConfig {
            seed: 0,
            batch_size: 32,
            seq_len: 512,
            grad_accum: 1,
            max_steps: 5000,
            lr: 6e-4,
            min_lr_ratio: 0.1,
            warmup_steps: 200,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            adam_eps: 1e-8,
            grad_clip: 1.0,
            precision: Precision::Auto,
            checkpoint_every: 500,
            log_every: 10,
            init_from: String::new(),
            activation_checkpointing: false,
        },
        eval: EvalConfig { every: 250, batches: 20 },
    }
}

/// ~0.8M parameters on byte tokens: a few minutes on a 2-core CPU.
fn tiny() -> RunConfig {
    let mut c = base();
    c.data.builtin_bytes = 2_000_000;
    c.model.d_model = 128;
    c.model.n_layers = 4;
    c.model.n_heads = 4;
    c.model.d_ff = 384;
    c.model.max_seq_len = 256;
    c.train.batch_size = 16;
    c.train.seq_len = 128;
    c.train.max_steps = 300;
    c.train.lr = 3e-3;
    c.train.warmup_steps = 30;
    c.train.checkpoint_every = 100;
    c.eval.every = 50;
    c.eval.batches = 8;
    c
}

/// The seeds' Transformer: d_model=384, 8 layers, 6 heads, d_ff=1536, with a BPE vocabulary
/// of 8192 trained on the training split.
fn seeds_27m(seq_len: usize) -> RunConfig {
    let mut c = base();
    c.data.tokenizer = "bpe:8192".into();
    c.data.builtin_bytes = 40_000_000;
    c.train.seq_len = seq_len;
    c
}

/// A pure-Mamba stack in the Mamba paper's layout: blocks `x + mixer(norm(x))` with no MLP.
fn pure_ssm(c: &mut RunConfig, mixer: MixerKind) {
    c.model.mixer = mixer;
    c.model.ffn = FfnKind::None;
}

/// `tiny`'s width and data with Mamba blocks. A Mamba block has about half the parameters of a
/// Transformer block (no MLP), so the paper's size-matched models have twice the layers: 8.
/// Mamba-2 uses 32-channel heads and a 64-entry state per head (the paper's N = 64..128).
fn mamba_tiny(mixer: MixerKind) -> RunConfig {
    let mut c = tiny();
    pure_ssm(&mut c, mixer);
    c.model.n_layers = 8;
    c.model.mamba2.head_dim = 32;
    c
}

/// The seeds' Mamba: d_model=384, 8 layers, d_state=16, d_conv=4, expand=2, no MLP (their
/// "27M" counted a 50257-entry GPT-2 embedding; with this preset's 8192-entry BPE it is ~11M).
/// Mamba-2 at the same width: 12 heads of 64 channels, d_state 64.
fn mamba_27m(mixer: MixerKind) -> RunConfig {
    let mut c = seeds_27m(512);
    pure_ssm(&mut c, mixer);
    c
}

/// The shape of `state-spaces/mamba-130m`: d_model=768, 24 layers, vocab 50280 (the GPT-NeoX
/// tokenizer's 50277 entries padded to a multiple of 8), d_state=16, expand=2. Point
/// `data.tokenizer` at that tokenizer's `tokenizer.json` to train it on the same vocabulary.
fn mamba_130m() -> RunConfig {
    let mut c = seeds_27m(1024);
    pure_ssm(&mut c, MixerKind::Mamba);
    c.model.vocab_size = 50280;
    c.model.d_model = 768;
    c.model.n_layers = 24;
    c.model.max_seq_len = 2048;
    c.train.batch_size = 16;
    c.train.lr = 3e-4;
    c
}

/// Gated DeltaNet in every layer, each followed by the preset's MLP (the block of fla's
/// GatedDeltaNet models and of Qwen3-Next): key heads of `head_dim` spanning 0.75 · d_model and
/// value heads twice as wide, fla's proportions (3 heads of 32 at `tiny`, 6 of 48 at `27m`).
fn gated_deltanet(mut c: RunConfig, head_dim: usize) -> RunConfig {
    c.model.mixer = MixerKind::GatedDeltaNet;
    c.model.gdn.head_dim = head_dim;
    c
}

/// The seeds' MoE ("--num-experts 8 --expert-capacity 2", i.e. top-2 of 8) on a dense preset:
/// every MLP becomes 8 SwiGLU experts of half the width, so the two a token uses hold as many
/// parameters as the dense MLP: *active* parameters match the dense preset (plus the router),
/// total parameters are about 4× its MLPs. Dropless, Switch's balancing weight 0.01.
fn moe(mut c: RunConfig) -> RunConfig {
    c.model.ffn = FfnKind::Moe;
    c.model.moe = MoeConfig { n_experts: 8, top_k: 2, expert_d_ff: c.model.d_ff / 2, ..MoeConfig::default() };
    c
}
