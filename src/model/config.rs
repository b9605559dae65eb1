//! The `[model]` table of a run's config: the shared sizes and settings every layer reads,
//! and one section per mixer that has settings of its own. Each section is defined, defaulted
//! and checked in its mixer's file (`[model.mamba]` in `mamba.rs`, …); this file only holds
//! them, so the model layer owns its configuration and the config layer (`crate::config`,
//! which resolves presets, files and `--set` overrides into a `RunConfig`) reads it from here.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::pattern;
use super::registry::{FfnKind, MixerKind};

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

/// One resolved layer: its sequence mixer and channel mixer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerKind {
    pub mixer: MixerKind,
    pub ffn: FfnKind,
}

/// Reads the table of layer kinds (`crate::registry`): writes `ModelConfig` with one
/// `#[serde(default)]` field per mixer config section (so a `config.toml` without it keeps
/// loading), and its default, the base preset's model, with every section at its default.
macro_rules! model_config {
    (
        sequence mixers {
            $($variant:ident => $module:ident :: $ty:ident $(, [model . $section:ident] = $scfg:ident)? {
                $($kinds:tt)*
            })+
        }
        channel mixers {
            $($ckind:ident = $csymbol:literal, $cname:literal $(=> $cmodule:ident :: $cty:ident $(, [model . $csection:ident] = $ccfg:ident)?)? {
                $($cfield:tt)*
            })+
        }
    ) => {
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
            /// Layer pattern (`model::pattern`), e.g. `AMMMMMMA`; empty means `n_layers` layers of
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
            $($(
                #[doc = concat!("`[model.", stringify!($section), "]`: the settings of `model::", stringify!($module), "`.")]
                #[serde(default)]
                pub $section: super::$module::$scfg,
            )?)+
            $($($(
                #[doc = concat!("`[model.", stringify!($csection), "]`: the settings of `model::", stringify!($cmodule), "`.")]
                #[serde(default)]
                pub $csection: super::$cmodule::$ccfg,
            )?)?)+
        }

        /// The base preset's model (`config::presets`): a 384-wide, 8-layer Llama-style
        /// Transformer, every mixer section at its default.
        impl Default for ModelConfig {
            fn default() -> Self {
                Self {
                    vocab_size: 0,
                    d_model: 384,
                    n_layers: 8,
                    n_heads: 6,
                    head_dim: 0,
                    n_kv_heads: 0,
                    d_ff: 1536,
                    max_seq_len: 512,
                    positions: Positions::Rope,
                    rope_theta: 10_000.0,
                    norm: NormKind::Rms,
                    norm_eps: 1e-5,
                    mlp: MlpKind::Swiglu,
                    tie_embeddings: true,
                    bias: false,
                    dropout: 0.0,
                    init_std: 0.02,
                    mixer: MixerKind::Attention,
                    ffn: FfnKind::Mlp,
                    pattern: String::new(),
                    attn_output_gate: false,
                    qk_norm: false,
                    partial_rotary_factor: 1.0,
                    window: 256,
                    $($($section: Default::default(),)?)+
                    $($($($csection: Default::default(),)?)?)+
                }
            }
        }
    };
}
crate::registry::layer_table!(model_config);

fn default_window() -> usize {
    256
}

fn full_rotation() -> f64 {
    1.0
}

impl ModelConfig {
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

#[cfg(test)]
mod tests {
    use super::super::registry::SEQ_MIXERS;
    use super::*;

    /// The sections the table of layer kinds names are keys of the `[model]` table, and a
    /// `config.toml` written before a section existed (its table missing) loads with that
    /// section's defaults.
    #[test]
    fn every_mixer_section_is_a_model_key_that_old_files_may_lack() {
        let base = ModelConfig::default();
        let toml::Value::Table(table) = toml::Value::try_from(&base).unwrap() else {
            panic!("the model config serialises to a table")
        };
        for info in SEQ_MIXERS.iter().filter(|i| !i.section.is_empty()) {
            let key = info.section.strip_prefix("model.").expect("a section is a key of [model]");
            assert!(table.contains_key(key), "{}: model.{key} is not in the config", info.name);
        }
        let sections: Vec<&String> = table.iter().filter(|(_, v)| v.is_table()).map(|(k, _)| k).collect();
        assert!(sections.len() >= 5, "mixer sections: {sections:?}");
        for key in sections {
            let mut without = table.clone();
            without.remove(key);
            let back: ModelConfig = toml::Value::Table(without).try_into().unwrap();
            assert_eq!(back, base, "a config without [model.{key}] loads differently");
        }
    }
}
