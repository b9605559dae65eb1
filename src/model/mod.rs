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
//! sequence mixer and a channel mixer (`mlp`, `moe`, or none). `config` is the `[model]` table
//! of a run's config; `pattern` parses layer patterns; `registry` reads the table of layer
//! kinds (`crate::registry`) into `MixerKind`, `FfnKind` and their symbols. `mixer` holds the
//! mixers' contracts and their dispatch: `attention` (global or sliding-window), `mamba` (its
//! scan is `kernels::selective_scan`), `mamba2` with its `ssd`, `hymba` (attention and Mamba in
//! parallel) and `gated_deltanet` (Gated DeltaNet and DeltaNet) with its `delta_rule`; the
//! Mambas and DeltaNets use `conv`. `activation` (SiLU, GELU, softplus, exact on every backend)
//! lives with the kernels, whose plain-ops twins use it too. `count` sums the analytic
//! parameter, FLOP and decoding-state counts each mixer gives. Every weight is drawn from a
//! per-tensor stream of `rng::Rng` named after the tensor. Attention, MLP and expert weights
//! follow GPT-2 (Radford et al. 2019): N(0, `init_std`²), 0.02 by default, the output
//! projections of each residual branch scaled by 1/sqrt(2·n_layers), biases 0, norm gains 1.
//! Mamba and DeltaNet layers follow `mamba_ssm` (and fla for DeltaNet's gates) instead
//! (docs/ARCHITECTURE.md, "Numerics worth knowing").

pub mod block;
pub mod config;
pub mod conv;
pub mod count;
pub mod delta_rule;
pub mod diagnostic;
pub mod layers;
pub mod lm;
pub mod mixer;
pub mod pattern;
pub mod registry;
pub mod routing;
pub mod ssd;
pub mod validate;

/// Declares the module of every sequence and channel mixer in the table of layer kinds
/// (`crate::registry`): a mixer's file joins the crate by its table entry.
macro_rules! mixer_modules {
    (
        sequence mixers {
            $($variant:ident => $module:ident :: $ty:ident $(, [model . $section:ident] = $scfg:ident)? { $($kinds:tt)* })+
        }
        channel mixers {
            $($ckind:ident = $csymbol:literal, $cname:literal $(=> $cmodule:ident :: $cty:ident $(, [model . $csection:ident] = $ccfg:ident)?)? { $($cfields:tt)* })+
        }
    ) => {
        $(pub mod $module;)+
        $($(pub mod $cmodule;)?)+
    };
}
crate::registry::layer_table!(mixer_modules);

pub use lm::{DecodeState, LanguageModel};

/// The pointwise nonlinearities live with the kernels, whose plain-ops twins use them too.
pub use crate::kernels::activation;
