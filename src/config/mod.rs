//! Run configuration: one typed, fully resolved `RunConfig {data, model, train, eval}` per run.
//!
//! Resolution order (later wins): a preset (`--preset tiny`), a TOML file (`--config f.toml`),
//! then `--set section.key=value` overrides. Every layer is checked against the full key tree
//! of the preset, so a misspelt key is an error that lists the valid ones instead of a silent
//! no-op. The resolved config is validated before any data or device work starts and is saved
//! as `config.toml` in every run directory.

mod overrides;
pub mod pattern;
pub mod presets;
pub mod registry;

pub use registry::{FfnKind, MixerKind};

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

pub use overrides::{apply_override, merge_checked};

/// Everything that determines a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
}

/// Where tokens come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `builtin:stories` (generated, no download), a `.txt` / `.jsonl` / `.parquet` file or a
    /// folder of them, a folder written by `archlab data prepare`, or `hf:<dataset>` (feature `hub`).
    pub source: String,
    /// `byte` (256 symbols), a path to a Hugging Face `tokenizer.json`, or `bpe:<vocab>` to
    /// train a byte-level BPE on the training split.
    pub tokenizer: String,
    /// Field holding the text in `.jsonl` / `.parquet` sources.
    pub text_field: String,
    /// Size of the built-in story corpus, in bytes of text.
    pub builtin_bytes: usize,
    /// Seed of the built-in story corpus (independent of the training seed, so that every
    /// training seed sees the same corpus).
    pub corpus_seed: u64,
    /// Fraction of documents held out for validation (by document, deterministically).
    pub val_fraction: f64,
    /// Where prepared token shards are cached.
    pub cache_dir: String,
    /// Settings of a synthetic task (`source = "task:mqar"`, `task:copy`,
    /// `task:selective-copy`, `task:passkey`).
    #[serde(default)]
    pub task: crate::data::tasks::TaskConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// Rotary embeddings on queries and keys (Su et al. 2021), as in Llama.
    Rope,
    /// A learned absolute position table, as in GPT-2.
    Learned,
    /// No position information but causality itself (Jamba's attention; NoPE, Kazemnejad et
    /// al. 2023).
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    Rms,
    Layer,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MlpKind {
    /// `W2 · gelu(W1 x)` (GPT-2).
    Gelu,
    /// `W2 · (silu(W1 x) ⊙ W3 x)` (Shazeer 2020; Llama).
    Swiglu,
}

/// Hymba layers (see `model::hymba`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HymbaConfig {
    /// Window of the attention branch; 0 means global attention.
    pub window: usize,
    /// Learned tokens prepended to every sequence (Hymba's meta tokens); 0 means none.
    pub meta_tokens: usize,
    /// Initial value of the per-channel branch scales β_attn and β_ssm.
    pub scale_init: f64,
}

impl Default for HymbaConfig {
    fn default() -> Self {
        Self { window: 0, meta_tokens: 0, scale_init: 1.0 }
    }
}

/// Gated DeltaNet and DeltaNet layers (see `model::gated_deltanet`). Defaults follow fla's
/// `GatedDeltaNet` layer: key width ≈ 0.75 · d_model, value heads twice as wide as key heads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatedDeltaNetConfig {
    /// dk, the width of each query and key head.
    pub head_dim: usize,
    /// Query/key heads; 0 means `round(0.75 · d_model / head_dim)`, at least 1.
    pub n_heads: usize,
    /// Value heads, a multiple of `n_heads` (Qwen3-Next uses twice as many); 0 means `n_heads`.
    pub n_v_heads: usize,
    /// dv, the width of each value head; 0 means `2 · head_dim` (fla's `expand_v = 2`).
    pub v_head_dim: usize,
    /// Width of the causal depthwise convolution over q, k and v.
    pub d_conv: usize,
    pub conv_bias: bool,
    /// Tokens per chunk of the chunked (WY) form.
    pub chunk_size: usize,
    /// β = 2σ(·) ∈ (0, 2) instead of σ(·), so that the transition `I − β k kᵀ` can have
    /// negative eigenvalues (Grazzi et al. 2024; fla's `allow_neg_eigval`): what parity-like
    /// state tracking needs.
    pub allow_neg_eigval: bool,
    /// The decay's step size softplus(a + dt_bias) starts log-uniform in `[dt_min, dt_max]`.
    pub dt_min: f64,
    pub dt_max: f64,
    pub dt_init_floor: f64,
    /// `exp(A_log)` is drawn uniformly in `[a_init_min, a_init_max]` per value head (fla:
    /// U(0, 16)), floored at 1e-4.
    pub a_init_min: f64,
    pub a_init_max: f64,
}

impl Default for GatedDeltaNetConfig {
    fn default() -> Self {
        Self {
            head_dim: 64,
            n_heads: 0,
            n_v_heads: 0,
            v_head_dim: 0,
            d_conv: 4,
            conv_bias: false,
            chunk_size: 64,
            allow_neg_eigval: false,
            dt_min: 0.001,
            dt_max: 0.1,
            dt_init_floor: 1e-4,
            a_init_min: 0.0,
            a_init_max: 16.0,
        }
    }
}

/// One resolved layer: its sequence mixer and channel mixer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerKind {
    pub mixer: MixerKind,
    pub ffn: FfnKind,
}

/// Mixture-of-Experts channel mixer (see `model::moe`): a router sends each token to `top_k`
/// of `n_experts` expert MLPs (GELU or SwiGLU, as `model.mlp`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MoeConfig {
    /// E, the number of experts per layer.
    pub n_experts: usize,
    /// k, the experts each token is sent to (1: Switch Transformer; 2: Mixtral).
    pub top_k: usize,
    /// Width of each expert MLP; 0 means `model.d_ff`.
    pub expert_d_ff: usize,
    /// Rescale the k chosen router probabilities to sum to 1 (Mixtral). Applies to k ≥ 2 only:
    /// with k = 1 the rescaled weight would always be 1 and the LM loss could not train the
    /// router, so top-1 keeps the raw probability (Switch).
    pub renormalize: bool,
    /// Expert capacity `ceil(capacity_factor · tokens · k / E)` while training; a token sent
    /// to a full expert is dropped there (it passes through on the residual) and counted.
    /// 0 means no capacity limit (dropless, Mixtral). Inference is always dropless.
    pub capacity_factor: f64,
    /// Weight of the load-balancing loss `E · Σ_e f_e · P_e` (Switch eq. 4; Mixtral's form
    /// for k ≥ 2, which equals k when the load is even).
    pub balance_coef: f64,
    /// Weight of the router z-loss `mean(logsumexp(logits)²)` (ST-MoE, Zoph et al. 2022).
    pub z_loss_coef: f64,
    /// While training, multiply the router's input by noise uniform in `[1 − ε, 1 + ε]`
    /// (Switch's jitter); 0 disables it.
    pub jitter: f64,
    /// Width of an always-on shared expert (DeepSeekMoE, Qwen2-MoE); 0 means none.
    pub shared_expert_d_ff: usize,
    /// Scale the shared expert by a learned per-token sigmoid gate (Qwen2-MoE).
    pub shared_expert_gate: bool,
}

impl Default for MoeConfig {
    fn default() -> Self {
        Self {
            n_experts: 8,
            top_k: 2,
            expert_d_ff: 0,
            renormalize: true,
            capacity_factor: 0.0,
            balance_coef: 0.01,
            z_loss_coef: 0.001,
            jitter: 0.0,
            shared_expert_d_ff: 0,
            shared_expert_gate: false,
        }
    }
}

impl MoeConfig {
    /// The width of each expert given the model's `d_ff`.
    pub fn expert_width(&self, d_ff: usize) -> usize {
        if self.expert_d_ff == 0 { d_ff } else { self.expert_d_ff }
    }
}

/// Mamba-1 mixer shape (names as in `mamba_ssm`'s `Mamba` and HF's `MambaConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MambaConfig {
    /// N, the SSM state size per channel.
    pub d_state: usize,
    /// Width of the causal depthwise convolution.
    pub d_conv: usize,
    /// Inner width is `expand · d_model`.
    pub expand: usize,
    /// Rank of the Δ projection; 0 means `ceil(d_model / 16)` (the paper's default).
    pub dt_rank: usize,
    /// Δ is initialised log-uniformly in `[dt_min, dt_max]` through the bias of `dt_proj`.
    pub dt_min: f64,
    pub dt_max: f64,
    pub dt_init_floor: f64,
    /// Bias on the convolution (true in the paper).
    pub conv_bias: bool,
    /// Bias on `in_proj` and `out_proj` (false in the paper).
    pub bias: bool,
    /// Time steps per chunk of the chunked scan; 0 picks about √T.
    pub chunk_size: usize,
    /// RMSNorms on Δ, B and C after `x_proj` (Jamba's Mamba layers).
    pub inner_norms: bool,
}

impl Default for MambaConfig {
    fn default() -> Self {
        Self {
            d_state: 16,
            d_conv: 4,
            expand: 2,
            dt_rank: 0,
            dt_min: 0.001,
            dt_max: 0.1,
            dt_init_floor: 1e-4,
            conv_bias: true,
            bias: false,
            chunk_size: 0,
            inner_norms: false,
        }
    }
}

/// Mamba-2 mixer shape (names as in `mamba_ssm`'s `Mamba2` and HF's `Mamba2Config`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mamba2Config {
    /// N, the SSM state size per head.
    pub d_state: usize,
    pub d_conv: usize,
    /// Inner width is `expand · d_model`, split into heads of `head_dim`.
    pub expand: usize,
    /// P, the channels per head; `expand · d_model / head_dim` heads.
    pub head_dim: usize,
    /// B and C are shared by groups of heads (like GQA); must divide the number of heads.
    pub n_groups: usize,
    /// Chunk length of the SSD algorithm.
    pub chunk_size: usize,
    pub dt_min: f64,
    pub dt_max: f64,
    pub dt_init_floor: f64,
    /// A = -exp(A_log) is initialised uniformly in `[-a_init_max, -a_init_min]` per head.
    pub a_init_min: f64,
    pub a_init_max: f64,
    pub conv_bias: bool,
    pub bias: bool,
    /// The gated RMSNorm normalises each of the `n_groups` groups of channels on its own, as
    /// `mamba_ssm` and current `transformers` do; `false` normalises over the whole inner
    /// width, as `transformers` releases up to 5.17 did (their logits differ when
    /// `n_groups > 1`).
    pub norm_per_group: bool,
}

impl Default for Mamba2Config {
    fn default() -> Self {
        Self {
            d_state: 64,
            d_conv: 4,
            expand: 2,
            head_dim: 64,
            n_groups: 1,
            chunk_size: 64,
            dt_min: 0.001,
            dt_max: 0.1,
            dt_init_floor: 1e-4,
            a_init_min: 1.0,
            a_init_max: 16.0,
            conv_bias: true,
            bias: false,
            norm_per_group: true,
        }
    }
}

/// Model shape. The layer stack is built from pre-norm residual blocks (see `model::block`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Vocabulary size; 0 takes it from the tokenizer.
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Width of each attention head; 0 means `d_model / n_heads`. Qwen3-Next's attention has
    /// `n_heads · head_dim = 2 · d_model`, which only an explicit width can express.
    #[serde(default)]
    pub head_dim: usize,
    /// Key/value heads for grouped-query attention; 0 means `n_heads` (plain multi-head).
    pub n_kv_heads: usize,
    pub d_ff: usize,
    /// Longest context the model accepts (size of the learned position table; RoPE models
    /// can be run longer only if this is raised).
    pub max_seq_len: usize,
    pub positions: Positions,
    pub rope_theta: f64,
    pub norm: NormKind,
    pub norm_eps: f64,
    pub mlp: MlpKind,
    /// Share the token embedding with the output head (Press & Wolf 2017).
    pub tie_embeddings: bool,
    /// Biases in linear layers (GPT-2 has them; Llama does not).
    pub bias: bool,
    pub dropout: f64,
    /// Standard deviation of the GPT-2 initialisation; residual output projections are
    /// scaled by 1/sqrt(2·n_layers).
    pub init_std: f64,
    /// The sequence mixer of every layer, unless `pattern` says otherwise.
    #[serde(default)]
    pub mixer: MixerKind,
    /// The channel mixer of every layer that the pattern does not mark.
    #[serde(default)]
    pub ffn: FfnKind,
    /// Layer pattern (`config::pattern`), e.g. `AMMMMMMA`; empty means `n_layers` layers of
    /// `mixer`. When set, it decides the number of layers.
    #[serde(default)]
    pub pattern: String,
    /// Attention: a sigmoid gate on each output channel, from a doubled `q_proj` (Qiu et al.
    /// 2025, "Gated Attention for LLMs"; Qwen3-Next's full-attention layers).
    #[serde(default)]
    pub attn_output_gate: bool,
    /// Attention: RMSNorm over each head of q and k before RoPE (Qwen3, Qwen3-Next).
    #[serde(default)]
    pub qk_norm: bool,
    /// Attention: the fraction of each head's channels that RoPE rotates (Qwen3-Next: 0.25;
    /// GPT-NeoX's `rotary_pct`); the rest carry no position. `factor · head_dim` must be even.
    #[serde(default = "full_rotation")]
    pub partial_rotary_factor: f64,
    /// Window of local (`L`) attention layers, in tokens (the query's own included).
    #[serde(default = "default_window")]
    pub window: usize,
    #[serde(default)]
    pub hymba: HymbaConfig,
    #[serde(default)]
    pub mamba: MambaConfig,
    #[serde(default)]
    pub mamba2: Mamba2Config,
    #[serde(default)]
    pub moe: MoeConfig,
    #[serde(default)]
    pub gdn: GatedDeltaNetConfig,
}

fn default_window() -> usize {
    256
}

fn full_rotation() -> f64 {
    1.0
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 on GPUs that support it, f32 elsewhere.
    Auto,
    F32,
    /// bf16 matmuls with fp32 master weights, fp32 optimizer state and fp32 reductions.
    Bf16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub seed: u64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    pub seq_len: usize,
    /// Micro-batches per optimizer step; the effective batch is `batch_size · grad_accum`.
    pub grad_accum: usize,
    pub max_steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// The cosine decays to `lr · min_lr_ratio`.
    pub min_lr_ratio: f64,
    pub warmup_steps: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    /// Clip the global gradient norm to this value; 0 disables clipping.
    pub grad_clip: f64,
    pub precision: Precision,
    /// Write the `last` checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Log a training record every this many steps.
    pub log_every: usize,
    /// A fine-tune's parent checkpoint (`train --init-from`): its weights start this run.
    /// Empty for a run from scratch (and then not written, so older configs are unchanged).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub init_from: String,
    /// Recompute each block's activations in the backward pass instead of keeping them: less
    /// memory for one more forward pass of the blocks (`train::recompute`).
    #[serde(default)]
    pub activation_checkpointing: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate on the validation set every this many steps (and at the end).
    pub every: usize,
    /// Number of validation batches (fixed windows, the same at every evaluation).
    pub batches: usize,
}

impl RunConfig {
    /// Resolves preset → file → overrides, then validates.
    pub fn resolve(preset: &str, file: Option<&Path>, sets: &[String]) -> Result<Self> {
        let base = presets::preset(preset)?;
        let mut tree = toml::Value::try_from(&base).expect("a RunConfig always serialises");
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let file_tree: toml::Value = toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!("malformed TOML in {}: {}", path.display(), e.to_string().trim())
            })?;
            merge_checked(&mut tree, file_tree, "")
                .with_context(|| format!("in config file {}", path.display()))?;
        }
        for set in sets {
            apply_override(&mut tree, set)?;
        }
        let mut cfg: RunConfig = tree.try_into().map_err(|e: toml::de::Error| {
            anyhow::anyhow!("invalid config value: {}", e.to_string().trim())
        })?;
        // A pattern names every layer's mixer: a changed `model.mixer` beside it would be
        // silently ignored.
        if !cfg.model.pattern.trim().is_empty() && cfg.model.mixer != base.model.mixer {
            bail!(
                "model.mixer = {:?} has no effect beside model.pattern = {:?}, which names every \
                 layer's mixer; drop model.mixer, or write its symbol ({}) into the pattern",
                cfg.model.mixer.name(),
                cfg.model.pattern,
                pattern::mixer_symbol(cfg.model.mixer)
            );
        }
        // A pattern decides the depth, unless the user also changed n_layers (then they must agree).
        if cfg.model.n_layers == base.model.n_layers
            && let Ok(p) = pattern::Pattern::parse(&cfg.model.pattern)
        {
            cfg.model.n_layers = p.len();
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads the `config.toml` saved in a run directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let cfg: RunConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("malformed config {}: {}", path.display(), e.to_string().trim()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a RunConfig always serialises")
    }

    /// Checks what can be checked without data or a device. Errors name the key and the fix.
    pub fn validate(&self) -> Result<()> {
        let m = &self.model;
        let t = &self.train;
        m.validate()?;
        let positive = [
            ("train.batch_size", t.batch_size),
            ("train.seq_len", t.seq_len),
            ("train.grad_accum", t.grad_accum),
            ("train.max_steps", t.max_steps),
            ("train.log_every", t.log_every),
            ("eval.every", self.eval.every),
            ("eval.batches", self.eval.batches),
        ];
        must_be_positive(&positive)?;
        let step_tokens = t.batch_size as f64 * t.seq_len as f64 * t.grad_accum as f64;
        if step_tokens > (1u64 << 32) as f64 || t.seq_len > 1 << 24 {
            bail!(
                "train.batch_size × train.seq_len × train.grad_accum = {step_tokens:.0} tokens per step \
                 (seq_len {}): at most 2^32 per step and 2^24 per sequence",
                t.seq_len
            );
        }
        if m.context_limit().is_some_and(|limit| t.seq_len > limit) {
            bail!(
                "train.seq_len ({}) exceeds model.max_seq_len ({}); raise model.max_seq_len",
                t.seq_len,
                m.max_seq_len
            );
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            bail!("train.lr must be a positive number (got {})", t.lr);
        }
        if !(0.0..=1.0).contains(&t.min_lr_ratio) {
            bail!("train.min_lr_ratio must be in [0, 1] (got {})", t.min_lr_ratio);
        }
        if !(0.0..1.0).contains(&t.beta1) || !(0.0..1.0).contains(&t.beta2) {
            bail!("train.beta1 and train.beta2 must be in [0, 1)");
        }
        if t.grad_clip < 0.0 || t.weight_decay < 0.0 {
            bail!("train.grad_clip and train.weight_decay must not be negative");
        }
        let d = &self.data;
        if !(0.0 < d.val_fraction && d.val_fraction < 0.5) {
            bail!("data.val_fraction must be in (0, 0.5) (got {})", d.val_fraction);
        }
        if d.source.trim().is_empty() {
            bail!("data.source is empty; use builtin:stories or a path to a text corpus");
        }
        crate::data::tokenizer::TokenizerSpec::parse(&d.tokenizer)?;
        if let Some(task) = crate::data::tasks::Task::from_source(&d.source, &d.task)? {
            task.check(t.seq_len)?;
            let longest = d.task.eval_lengths(t.seq_len).into_iter().max().unwrap_or(0).max(t.seq_len);
            for len in d.task.eval_lengths(t.seq_len) {
                task.check(len)
                    .with_context(|| format!("held-out length {len} (data.task.eval_seq_lens)"))?;
            }
            if m.context_limit().is_some_and(|limit| longest > limit) {
                bail!(
                    "data.task is evaluated at lengths up to {longest} but model.max_seq_len is {}; \
                     raise model.max_seq_len to {longest} or set data.task.eval_seq_lens",
                    m.max_seq_len
                );
            }
            if m.vocab_size != 0 && m.vocab_size < task.vocab_size() {
                bail!(
                    "model.vocab_size ({}) is smaller than the task's vocabulary (data.task.vocab = {}); \
                     set model.vocab_size = 0 to take the task's",
                    m.vocab_size,
                    task.vocab_size()
                );
            }
        }
        Ok(())
    }
}

/// The largest model [`ModelConfig::validate`] accepts, by [`ModelConfig::rough_params_bound`]
/// (a thousand times today's largest models; integer counts stay below 2^60).
pub const MAX_ROUGH_PARAMS: f64 = 1e15;

impl ModelConfig {
    /// Checks the model section alone; only the settings of the mixers in use are checked.
    pub fn validate(&self) -> Result<()> {
        let m = self;
        must_be_positive(&[("model.d_model", m.d_model), ("model.n_layers", m.n_layers)])?;
        let layers = m.layers()?;
        if !(0.0..1.0).contains(&m.dropout) {
            bail!("model.dropout must be in [0, 1) (got {})", m.dropout);
        }
        let rough = m.rough_params_bound();
        if rough > MAX_ROUGH_PARAMS {
            bail!(
                "a model this large (about {rough:.1e} parameters, bounding its sizes from above) is \
                 beyond what archlab can train or count (at most {MAX_ROUGH_PARAMS:.0e}); check model.d_model, \
                 d_ff, n_layers, vocab_size, the expand and state sizes, and moe.n_experts"
            );
        }
        let uses = |f: &dyn Fn(&LayerKind) -> bool| layers.iter().any(f);
        if uses(&|l| l.ffn == FfnKind::Mlp) {
            must_be_positive(&[("model.d_ff", m.d_ff)])?;
        }
        if uses(&|l| l.ffn == FfnKind::Moe) {
            m.validate_moe()?;
        }
        if uses(&|l| l.mixer.attends()) {
            m.validate_attention()?;
        }
        if uses(&|l| matches!(l.mixer, MixerKind::Mamba | MixerKind::Hymba)) {
            m.validate_mamba()?;
        }
        if uses(&|l| l.mixer == MixerKind::Mamba2) {
            m.validate_mamba2()?;
        }
        if uses(&|l| matches!(l.mixer, MixerKind::GatedDeltaNet | MixerKind::DeltaNet)) {
            m.validate_gdn()?;
        }
        if uses(&|l| l.mixer == MixerKind::Local) {
            must_be_positive(&[("model.window", m.window)])?;
        }
        if m.hymba.meta_tokens > 0 && !uses(&|l| l.mixer == MixerKind::Hymba) {
            bail!("model.hymba.meta_tokens is set but no layer is Hymba (H); set it to 0 or add H layers");
        }
        if !(m.hymba.scale_init > 0.0 && m.hymba.scale_init.is_finite()) {
            bail!("model.hymba.scale_init must be positive (got {})", m.hymba.scale_init);
        }
        Ok(())
    }

    /// An upper bound of the parameter count from the sizes alone, in f64 (no overflow): every
    /// layer holds at most 16·S²·max(1, E) parameters, S being the sum of all its sizes and E
    /// the experts. Refusing models past [`MAX_ROUGH_PARAMS`] keeps every count archlab makes
    /// in integers far from overflowing.
    fn rough_params_bound(&self) -> f64 {
        let d = self.d_model as f64;
        let g = &self.gdn;
        let sizes = [
            d,
            self.d_ff as f64,
            self.moe.expert_d_ff as f64,
            self.moe.shared_expert_d_ff as f64,
            self.mamba.expand as f64 * d,
            self.mamba.d_state as f64,
            self.mamba.d_conv as f64,
            self.mamba2.expand as f64 * d,
            self.mamba2.n_groups as f64 * self.mamba2.d_state as f64,
            self.mamba2.d_conv as f64,
            g.n_heads.max(1) as f64 * g.head_dim as f64,
            g.n_v_heads.max(g.n_heads).max(1) as f64 * g.v_head_dim.max(2 * g.head_dim) as f64,
            g.d_conv as f64,
            self.vocab_size as f64,
            self.max_seq_len as f64,
            self.window as f64,
            self.hymba.meta_tokens as f64,
        ];
        let s: f64 = sizes.iter().sum();
        (self.n_layers as f64 + 2.0) * 16.0 * s * s * (self.moe.n_experts.max(1) as f64)
    }

    /// The resolved layers as a pattern with every layer's channel mixer spelled out, e.g.
    /// `AfSnSnAf` (empty for an invalid config).
    pub fn layer_pattern(&self) -> String {
        use pattern::{ffn_symbol, mixer_symbol};
        self.layers()
            .unwrap_or_default()
            .iter()
            .flat_map(|l| [mixer_symbol(l.mixer), ffn_symbol(l.ffn)])
            .collect()
    }

    /// The resolved layers: the pattern's (with `ffn` filling unmarked layers), or `n_layers`
    /// of `mixer` and `ffn`. Errors name the bad symbol and the valid ones.
    pub fn layers(&self) -> Result<Vec<LayerKind>> {
        if self.pattern.trim().is_empty() {
            return Ok(vec![LayerKind { mixer: self.mixer, ffn: self.ffn }; self.n_layers]);
        }
        let p = pattern::Pattern::parse(&self.pattern)
            .map_err(|e| anyhow::anyhow!("model.pattern {:?}: {e}", self.pattern))?;
        if p.len() != self.n_layers {
            bail!(
                "model.pattern {:?} has {} layers but model.n_layers is {}; set model.n_layers = {} \
                 (or leave it at the preset's value, which the pattern then sets)",
                self.pattern,
                p.len(),
                self.n_layers,
                p.len()
            );
        }
        Ok(p.0.iter().map(|l| LayerKind { mixer: l.mixer, ffn: l.ffn.unwrap_or(self.ffn) }).collect())
    }

    fn validate_attention(&self) -> Result<()> {
        let m = self;
        must_be_positive(&[("model.n_heads", m.n_heads), ("model.max_seq_len", m.max_seq_len)])?;
        if m.head_dim == 0 && !m.d_model.is_multiple_of(m.n_heads) {
            bail!(
                "model.d_model ({}) must be divisible by model.n_heads ({}); try n_heads = {}, or set \
                 model.head_dim",
                m.d_model,
                m.n_heads,
                largest_divisor_at_most(m.d_model, m.n_heads)
            );
        }
        let kv = m.kv_heads();
        if !m.n_heads.is_multiple_of(kv) {
            bail!("model.n_heads ({}) must be a multiple of model.n_kv_heads ({kv})", m.n_heads);
        }
        let f = m.partial_rotary_factor;
        if !(f > 0.0 && f <= 1.0) {
            bail!("model.partial_rotary_factor must be in (0, 1] (got {f}); 1 rotates every channel");
        }
        let (hd, rotary) = (m.head_dim(), m.rotary_dim());
        if m.positions == Positions::Rope && (rotary == 0 || !rotary.is_multiple_of(2)) {
            bail!(
                "RoPE needs an even number of rotated channels; head_dim {hd} × model.partial_rotary_factor \
                 {f} = {rotary}; choose a factor (or n_heads) that makes it even and at least 2"
            );
        }
        Ok(())
    }

    fn validate_mamba(&self) -> Result<()> {
        let c = &self.mamba;
        check_conv_width("model.mamba.d_conv", c.d_conv)?;
        must_be_positive(&[("model.mamba.d_state", c.d_state), ("model.mamba.expand", c.expand)])?;
        check_dt_range("model.mamba", c.dt_min, c.dt_max, c.dt_init_floor)
    }

    fn validate_mamba2(&self) -> Result<()> {
        let c = &self.mamba2;
        check_conv_width("model.mamba2.d_conv", c.d_conv)?;
        must_be_positive(&[
            ("model.mamba2.d_state", c.d_state),
            ("model.mamba2.expand", c.expand),
            ("model.mamba2.head_dim", c.head_dim),
            ("model.mamba2.n_groups", c.n_groups),
            ("model.mamba2.chunk_size", c.chunk_size),
        ])?;
        let inner = c.expand * self.d_model;
        if !inner.is_multiple_of(c.head_dim) {
            bail!(
                "model.mamba2.head_dim ({}) must divide the inner width expand · d_model = {inner}; try head_dim = {}",
                c.head_dim,
                largest_divisor_at_most(inner, c.head_dim)
            );
        }
        let heads = inner / c.head_dim;
        if !heads.is_multiple_of(c.n_groups) {
            bail!(
                "model.mamba2.n_groups ({}) must divide the number of heads ({heads} = {inner} / head_dim); try n_groups = {}",
                c.n_groups,
                largest_divisor_at_most(heads, c.n_groups)
            );
        }
        if !(0.0 < c.a_init_min && c.a_init_min <= c.a_init_max) {
            bail!("model.mamba2 needs 0 < a_init_min <= a_init_max (got {}, {})", c.a_init_min, c.a_init_max);
        }
        check_dt_range("model.mamba2", c.dt_min, c.dt_max, c.dt_init_floor)
    }

    fn validate_gdn(&self) -> Result<()> {
        let c = &self.gdn;
        check_conv_width("model.gdn.d_conv", c.d_conv)?;
        must_be_positive(&[("model.gdn.head_dim", c.head_dim), ("model.gdn.chunk_size", c.chunk_size)])?;
        let (k_heads, v_heads) = (c.key_heads(self.d_model), c.value_heads(self.d_model));
        if !v_heads.is_multiple_of(k_heads) {
            bail!(
                "model.gdn.n_v_heads ({v_heads}) must be a multiple of the key heads ({k_heads}, \
                 model.gdn.n_heads); try n_v_heads = {}",
                k_heads * v_heads.div_ceil(k_heads)
            );
        }
        if !(0.0 <= c.a_init_min && c.a_init_min <= c.a_init_max && c.a_init_max > 0.0) {
            bail!(
                "model.gdn needs 0 <= a_init_min <= a_init_max, a_init_max > 0 (got {}, {})",
                c.a_init_min,
                c.a_init_max
            );
        }
        check_dt_range("model.gdn", c.dt_min, c.dt_max, c.dt_init_floor)
    }

    fn validate_moe(&self) -> Result<()> {
        let c = &self.moe;
        must_be_positive(&[("model.moe.n_experts", c.n_experts), ("model.moe.top_k", c.top_k)])?;
        if c.top_k > c.n_experts {
            bail!(
                "model.moe.top_k ({}) cannot exceed model.moe.n_experts ({}); lower top_k or add experts",
                c.top_k,
                c.n_experts
            );
        }
        if c.expert_width(self.d_ff) == 0 {
            bail!("model.moe.expert_d_ff is 0 and so is model.d_ff; set one of them");
        }
        let coefs = [
            ("capacity_factor", c.capacity_factor),
            ("balance_coef", c.balance_coef),
            ("z_loss_coef", c.z_loss_coef),
        ];
        for (key, value) in coefs {
            if !(value >= 0.0 && value.is_finite()) {
                bail!("model.moe.{key} must be a non-negative number (got {value})");
            }
        }
        if c.capacity_factor > 0.0 && c.capacity_factor < 1.0 / c.n_experts as f64 {
            bail!(
                "model.moe.capacity_factor ({}) leaves experts no room for a single token per {} tokens; \
                 use 0 (no limit) or at least 1.0 (Switch uses 1.0–1.25)",
                c.capacity_factor,
                c.n_experts
            );
        }
        if !(0.0..1.0).contains(&c.jitter) {
            bail!("model.moe.jitter must be in [0, 1) (got {}); Switch used 0.01", c.jitter);
        }
        if c.shared_expert_gate && c.shared_expert_d_ff == 0 {
            bail!("model.moe.shared_expert_gate needs a shared expert; set model.moe.shared_expert_d_ff");
        }
        Ok(())
    }

    /// The longest context the model can take: `max_seq_len` where a table is sized by it
    /// (RoPE in attention, learned positions); `None` for a recurrent model without one.
    pub fn context_limit(&self) -> Option<usize> {
        let attends = self.layers().map(|ls| ls.iter().any(|l| l.mixer.attends())).unwrap_or(true);
        let rope_table = attends && self.positions == Positions::Rope;
        (rope_table || self.positions == Positions::Learned)
            .then(|| self.max_seq_len.saturating_sub(self.hymba.meta_tokens))
    }

    pub fn kv_heads(&self) -> usize {
        if self.n_kv_heads == 0 { self.n_heads } else { self.n_kv_heads }
    }

    /// `model.head_dim`, or `d_model / n_heads` when that is 0; 0 without heads (a model
    /// without attention may leave n_heads 0).
    pub fn head_dim(&self) -> usize {
        if self.head_dim > 0 { self.head_dim } else { self.d_model.checked_div(self.n_heads).unwrap_or(0) }
    }

    /// Channels of each attention head that RoPE rotates: `partial_rotary_factor · head_dim`,
    /// rounded down (as `transformers` does).
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim() as f64 * self.partial_rotary_factor) as usize
    }
}

fn must_be_positive(values: &[(&str, usize)]) -> Result<()> {
    for (key, value) in values {
        if *value == 0 {
            bail!("{key} must be at least 1 (got 0)");
        }
    }
    Ok(())
}

fn check_conv_width(key: &str, k: usize) -> Result<()> {
    if k < 2 {
        bail!("{key} must be at least 2 (got {k}); the paper uses 4");
    }
    Ok(())
}

fn check_dt_range(section: &str, min: f64, max: f64, floor: f64) -> Result<()> {
    if !(0.0 < min && min <= max && max.is_finite()) {
        bail!("{section} needs 0 < dt_min <= dt_max (got dt_min = {min}, dt_max = {max})");
    }
    if !(0.0..=max).contains(&floor) {
        bail!("{section}.dt_init_floor must be in [0, dt_max] (got {floor})");
    }
    Ok(())
}

fn largest_divisor_at_most(n: usize, k: usize) -> usize {
    (1..=k).rev().find(|d| n.is_multiple_of(*d)).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_resolve_and_validate() {
        for name in presets::NAMES {
            RunConfig::resolve(name, None, &[]).unwrap();
        }
    }

    #[test]
    fn overrides_change_typed_values() {
        let cfg = RunConfig::resolve(
            "tiny",
            None,
            &["model.d_model=96".into(), "model.mlp=\"gelu\"".into(), "train.lr=1e-3".into()],
        )
        .unwrap();
        assert_eq!(cfg.model.d_model, 96);
        assert_eq!(cfg.model.mlp, MlpKind::Gelu);
        assert_eq!(cfg.train.lr, 1e-3);
    }

    #[test]
    fn bare_words_are_strings() {
        let cfg = RunConfig::resolve("tiny", None, &["model.norm=layer".into()]).unwrap();
        assert_eq!(cfg.model.norm, NormKind::Layer);
    }

    #[test]
    fn unknown_key_lists_valid_ones() {
        let err = RunConfig::resolve("tiny", None, &["model.d_modle=512".into()]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("unknown config key `model.d_modle`"), "{msg}");
        assert!(msg.contains("d_model"), "{msg}");
        assert!(msg.contains("did you mean `model.d_model`"), "{msg}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let err = RunConfig::resolve("tiny", None, &["model.d_model=\"big\"".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("d_model"), "{err:#}");
    }

    #[test]
    fn invalid_combination_names_the_fix() {
        let err = RunConfig::resolve("tiny", None, &["model.n_heads=5".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("divisible"), "{err:#}");
    }

    #[test]
    fn gdn_and_attention_options_are_checked_before_work() {
        let bad = |sets: &[&str], expect: &str| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            let msg = format!("{:#}", RunConfig::resolve("tiny", None, &sets).unwrap_err());
            assert!(msg.contains(expect), "{sets:?}: {msg}");
        };
        // tiny: head_dim 32.
        bad(&["model.partial_rotary_factor=0.1"], "even number of rotated channels");
        bad(&["model.partial_rotary_factor=1.5"], "(0, 1]");
        bad(
            &["model.mixer=\"gdn\"", "model.gdn.n_heads=2", "model.gdn.n_v_heads=3"],
            "multiple of the key heads",
        );
        bad(&["model.mixer=\"gdn\"", "model.gdn.chunk_size=0"], "model.gdn.chunk_size");
        bad(&["model.pattern=\"GGDX\""], "A/L/M/S/H/G/D");
        bad(&["model.pattern=\"XG\""], "G (gdn), D (deltanet)");
        bad(&["model.mixer=\"mamba\"", "model.pattern=\"AA\""], "write its symbol (M) into the pattern");
        let ok = RunConfig::resolve("tiny", None, &["model.partial_rotary_factor=0.25".into()]).unwrap();
        assert_eq!(ok.model.rotary_dim(), 8);
    }

    /// A run directory written before the (Gated) DeltaNet and gated-attention keys existed
    /// still loads: the new keys take their defaults.
    #[test]
    fn configs_without_the_newer_keys_still_load() {
        let cfg = RunConfig::resolve("tiny", None, &[]).unwrap();
        let mut tree = toml::Value::try_from(&cfg).unwrap();
        let model = tree.get_mut("model").unwrap().as_table_mut().unwrap();
        for key in ["gdn", "attn_output_gate", "qk_norm", "partial_rotary_factor", "head_dim"] {
            assert!(model.remove(key).is_some(), "{key}");
        }
        let train = tree.get_mut("train").unwrap().as_table_mut().unwrap();
        assert!(train.remove("activation_checkpointing").is_some());
        let old: RunConfig = toml::from_str(&toml::to_string(&tree).unwrap()).unwrap();
        assert_eq!(old, cfg);
    }

    /// Keys that default to "off" are written too: `--set` finds only keys the resolved tree
    /// holds, so a key left out of it could not be set.
    #[test]
    fn keys_that_default_to_off_can_be_set() {
        let sets = ["model.head_dim=64".to_string(), "train.activation_checkpointing=true".to_string()];
        let cfg = RunConfig::resolve("tiny", None, &sets).unwrap();
        assert_eq!(cfg.model.head_dim, 64);
        assert!(cfg.train.activation_checkpointing);
    }

    #[test]
    fn saved_config_round_trips() {
        let cfg = RunConfig::resolve("27m", None, &[]).unwrap();
        let back: RunConfig = toml::from_str(&cfg.to_toml()).unwrap();
        assert_eq!(cfg, back);
    }

    /// Random overrides with hostile values (zero, negative, huge, NaN, wrong types) resolve to
    /// a valid config or an error, never a panic or an overflow; a config that validates can be
    /// counted (`describe`'s numbers) without one either.
    #[test]
    fn survives_hostile_overrides() {
        let keys = [
            "model.d_model",
            "model.n_layers",
            "model.n_heads",
            "model.n_kv_heads",
            "model.d_ff",
            "model.vocab_size",
            "model.max_seq_len",
            "model.window",
            "model.mamba.d_state",
            "model.mamba.expand",
            "model.mamba2.head_dim",
            "model.mamba2.n_groups",
            "model.mamba2.chunk_size",
            "model.moe.n_experts",
            "model.moe.top_k",
            "model.moe.capacity_factor",
            "model.gdn.n_heads",
            "model.gdn.head_dim",
            "model.hymba.meta_tokens",
            "model.partial_rotary_factor",
            "model.pattern",
            "train.seq_len",
            "train.batch_size",
            "train.lr",
            "train.max_steps",
            "train.warmup_steps",
            "data.val_fraction",
            "eval.batches",
            "eval.every",
        ];
        let values = [
            "0",
            "1",
            "-1",
            "3",
            "64",
            "4294967296",
            "18446744073709551615",
            "1e300",
            "nan",
            "inf",
            "-0.5",
            "\"\"",
            "\"(A)9999\"",
            "\"(MA)64\"",
            "true",
            "[1]",
            "\"x\"",
        ];
        let mut rng = crate::rng::Rng::new(17);
        for _ in 0..1500 {
            let sets: Vec<String> =
                (0..1 + rng.below(3)).map(|_| format!("{}={}", rng.pick(&keys), rng.pick(&values))).collect();
            let preset = *rng.pick(&["tiny", "mamba-tiny", "moe-tiny", "gdn-tiny"]);
            if let Ok(cfg) = RunConfig::resolve(preset, None, &sets) {
                let _ = cfg.model.param_counts();
                let _ = cfg.model.layer_counts(cfg.train.seq_len);
                let _ = cfg.model.train_flops_per_token(cfg.train.seq_len);
            }
        }
    }
}
