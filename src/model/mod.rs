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
//! `lm` assembles `layers` (embeddings, linear maps, norms) and `block`s; each block holds a
//! sequence mixer (`attention`, `mamba`, `mamba2`) and a channel mixer (`mlp`, `moe`). `count` gives analytic parameter
//! and FLOP counts. Initialisation policy (GPT-2, Radford et al. 2019): every weight from
//! N(0, 0.02²) drawn from a per-tensor stream of `rng::Rng` named after the tensor, the
//! output projections of each residual branch scaled by 1/sqrt(2·n_layers), biases 0, norm
//! gains 1.

pub mod activation;
pub mod attention;
pub mod block;
pub mod conv;
pub mod count;
pub mod hymba;
pub mod layers;
pub mod lm;
pub mod mamba;
pub mod mamba2;
pub mod mlp;
pub mod moe;
pub mod selective_scan;
pub mod ssd;

pub use lm::{DecodeState, LanguageModel};
