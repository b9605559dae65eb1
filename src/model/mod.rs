//! Models: token ids → logits.
//!
//! Glossary (shape letters used in comments and `# Shapes` sections):
//!
//! | name | meaning |
//! |---|---|
//! | `b` | batch size |
//! | `t` | sequence length (time) |
//! | `d` | `d_model`, the residual stream width |
//! | `v` | vocabulary size |
//! | `h`, `kv` | query heads, key/value heads (GQA: `kv` divides `h`) |
//! | `hd` | head dimension, `d / h` |
//! | `f` | `d_ff`, the MLP hidden width |
//! | `n` | tokens of a batch, `b · t` (MoE routing works on the flattened batch) |
//! | `E`, `k` | experts per MoE layer, experts per token |
//!
//! `lm` assembles `layers` (embeddings, linear maps, norms) and `block`s. Each block holds a
//! sequence mixer and a channel mixer (`mlp`, `moe`, or none). `mixer` holds the sequence
//! mixers' contract and their table: `attention` (global or sliding-window), `mamba` (its scan
//! is `kernels::selective_scan`), `mamba2` with its `ssd`, `hymba` (attention and Mamba in
//! parallel) and `gated_deltanet` (Gated DeltaNet and DeltaNet) with its `delta_rule`; the
//! Mambas and DeltaNets use `conv`. `activation` holds SiLU, GELU and softplus. `count` sums
//! the analytic parameter, FLOP and decoding-state counts each mixer gives. Every weight is
//! drawn from a per-tensor stream of `rng::Rng` named after the tensor. Attention, MLP and
//! expert weights follow GPT-2 (Radford et al. 2019): N(0, `init_std`²), 0.02 by default, the
//! output projections of each residual branch scaled by 1/sqrt(2·n_layers), biases 0, norm
//! gains 1. Mamba and DeltaNet layers follow `mamba_ssm` (and fla for DeltaNet's gates) instead
//! (docs/ARCHITECTURE.md, "Numerics worth knowing").

pub mod activation;
pub mod block;
pub mod conv;
pub mod count;
pub mod delta_rule;
pub mod layers;
pub mod lm;
pub mod mixer;
pub mod mlp;
pub mod moe;
pub mod ssd;

/// Declares the module of every sequence mixer in the table of layer kinds
/// (`crate::registry`): a mixer's file joins the crate by its table entry.
macro_rules! mixer_modules {
    (
        sequence mixers { $($variant:ident => $module:ident :: $ty:ident { $($kinds:tt)* })+ }
        channel mixers { $($channel:tt)* }
    ) => {
        $(pub mod $module;)+
    };
}
crate::registry::layer_table!(mixer_modules);

pub use lm::{DecodeState, LanguageModel};
