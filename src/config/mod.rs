//! Run configuration: one typed, fully resolved `RunConfig {data, model, train, eval}` per run.
//!
//! Resolution order (later wins): a preset (`--preset tiny`), a TOML file (`--config f.toml`),
//! then `--set section.key=value` overrides. Every layer is checked against the full key tree
//! of the preset, so a misspelt key is an error that lists the valid ones instead of a silent
//! no-op. The resolved config is validated before any data or device work starts and is saved
//! as `config.toml` in every run directory.

mod overrides;
pub mod presets;

// The `[model]` table is the model layer's own (`model::config`, its mixers' sections in their
// files); the run config holds it.
pub use crate::model::config::{LayerKind, MlpKind, ModelConfig, NormKind, Positions};
pub use crate::model::gated_deltanet::GatedDeltaNetConfig;
pub use crate::model::hymba::HymbaConfig;
pub use crate::model::mamba::MambaConfig;
pub use crate::model::mamba2::Mamba2Config;
pub use crate::model::moe::MoeConfig;
use crate::model::pattern;
pub use crate::model::registry::{FfnKind, MixerKind};
pub use crate::model::validate::MAX_ROUGH_PARAMS;

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::util::checks::must_be_positive;

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
