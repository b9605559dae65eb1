//! The architectures `compare` and `bench` know by name, and patterns.
//!
//! Every architecture starts from the dense preset of the chosen size (`tiny`, `27m`), so
//! that data, tokenizer, optimizer, schedule, tokens and batch are the same for all; only the
//! model section differs. The named ones:
//!
//! | name | layers | from |
//! |---|---|---|
//! | dense | attention + MLP | the seeds' Transformer (Llama-style) |
//! | mamba | Mamba-1, no MLP | Gu & Dao 2023 (twice the layers of dense, as the paper size-matches) |
//! | mamba2 | Mamba-2 (SSD), no MLP | Dao & Gu 2024 |
//! | moe | attention + MoE (8 experts, top-2) | Mixtral; the seeds' MoE |
//! | sandwich | `AMMMMMMA`, MLP in every layer | the seeds' best hybrid |
//! | sandwich2 | `ASSSSSSA` | the same with Mamba-2 |
//! | hybrid | `(MMMA)2` | one attention layer in four (Jamba's ratio is 1:7) |
//! | local | `(LLLA)2`, window = T/4 | sliding-window hybrid (Gemma 2 / Mistral style) |
//! | hymba | `H` in every layer | Hymba: parallel attention ‖ SSM heads (Dong et al. 2024) |
//! | jamba | `MfMeMfMeAfMeMfMe` | Jamba's block: 1 attention in 8, MoE every other layer |
//! | gdn | Gated DeltaNet + MLP in every layer | Yang, Kautz & Hatamizadeh 2024 (fla's GatedDeltaNet) |
//! | deltanet | DeltaNet + MLP in every layer | Yang et al. 2024 |
//! | gdn-hybrid | `(GGGA)2`, gated attention | 3 Gated DeltaNet : 1 attention with Qwen3-Next's output gate, qk-norm and 25% RoPE |
//!
//! Anything else that parses as a layer pattern (`AMMA`, `(LLLA)2`…) is used as one, on the
//! dense preset's settings.

use anyhow::{Result, bail};

use crate::config::RunConfig;
use crate::model::pattern::Pattern;

/// What `archlab compare` runs with no architectures given: a dense Transformer, Mamba, MoE
/// and the seeds' sandwich hybrid. Mamba-2 stands in for Mamba-1 in the default because the
/// Mamba-1 scan is ~15× slower than attention on a CPU (bench/results/ssm-cpu.md); name
/// `mamba` and `sandwich` to compare Mamba-1.
pub const DEFAULT_ARCHS: &[&str] = &["dense", "mamba2", "moe", "sandwich2"];

pub const NAMES: &[&str] = &[
    "dense",
    "mamba",
    "mamba2",
    "moe",
    "sandwich",
    "sandwich2",
    "hybrid",
    "local",
    "hymba",
    "jamba",
    "gdn",
    "deltanet",
    "gdn-hybrid",
];

/// Sizes: the dense preset each size starts from.
pub const SIZES: &[(&str, &str)] = &[("tiny", "tiny"), ("27m", "27m")];

/// The config of architecture `name` at `size`, with the shared `sets` applied (before budget
/// sizing; see `sizing`).
pub fn arch_config(name: &str, size: &str, sets: &[String]) -> Result<RunConfig> {
    let Some(&(_, dense)) = SIZES.iter().find(|(s, _)| *s == size) else {
        bail!(
            "unknown size `{size}`; choose one of: {}",
            SIZES.iter().map(|(s, _)| *s).collect::<Vec<_>>().join(", ")
        );
    };
    let preset =
        |family: &str| if family.is_empty() { dense.to_string() } else { format!("{family}-{size}") };
    let (preset, model_sets): (String, Vec<String>) = match name {
        "dense" => (preset(""), vec![]),
        "mamba" => (preset("mamba"), vec![]),
        "mamba2" => (preset("mamba2"), vec![]),
        "moe" => (preset("moe"), vec![]),
        "sandwich" => (preset(""), vec![pattern("AMMMMMMA")]),
        "sandwich2" => (preset(""), vec![pattern("ASSSSSSA")]),
        "hybrid" => (preset(""), vec![pattern("(MMMA)2")]),
        "local" => (preset(""), vec![pattern("(LLLA)2")]),
        "hymba" => (preset(""), vec![]),
        "jamba" => (preset(""), vec![pattern("MfMeMfMeAfMeMfMe")]),
        "gdn" => (preset("gdn"), vec![]),
        "deltanet" => (preset("gdn"), vec!["model.mixer=\"deltanet\"".into()]),
        // Qwen3-Next's fourth layer: attention with an output gate, qk-norm and partial RoPE.
        "gdn-hybrid" => (
            preset("gdn"),
            vec![
                pattern("(GGGA)2"),
                "model.attn_output_gate=true".into(),
                "model.qk_norm=true".into(),
                "model.partial_rotary_factor=0.25".into(),
            ],
        ),
        other => match Pattern::parse(other) {
            Ok(_) => (preset(""), vec![pattern(other)]),
            Err(e) => {
                bail!("`{other}` is neither an architecture ({}) nor a layer pattern: {e}", NAMES.join(", "))
            }
        },
    };
    // The architecture's own settings first, so that the user's shared overrides win.
    let mut all = model_sets;
    all.extend_from_slice(sets);
    let mut cfg = RunConfig::resolve(&preset, None, &all)?;
    let user_set = |key: &str| sets.iter().any(|s| s.trim_start().starts_with(key));
    match name {
        "hymba" if !user_set("model.pattern") => {
            cfg.model.pattern = "H".repeat(cfg.model.n_layers);
        }
        // A window of a quarter of the context: local layers then see less than global ones.
        "local" if !user_set("model.window") => cfg.model.window = (cfg.train.seq_len / 4).max(1),
        _ => {}
    }
    if name == "jamba" {
        // Jamba's MoE: 16 experts top-2 at full width; at these sizes 8 experts of half
        // width keep the active parameters of an MLP layer, as the `moe` preset does.
        let base = crate::config::presets::preset(&preset)?;
        if !user_set("model.moe") {
            cfg.model.moe.expert_d_ff = base.model.d_ff / 2;
        }
    }
    cfg.validate()?;
    Ok(cfg)
}

fn pattern(p: &str) -> String {
    format!("model.pattern={p:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_resolves_at_every_size() {
        for (size, _) in SIZES {
            for name in NAMES {
                let cfg = arch_config(name, size, &[]).unwrap_or_else(|e| panic!("{name} at {size}: {e:#}"));
                assert!(cfg.model.n_layers >= 4, "{name}");
            }
        }
    }

    #[test]
    fn shared_settings_are_the_dense_presets() {
        let dense = arch_config("dense", "tiny", &["train.max_steps=7".into()]).unwrap();
        for name in NAMES {
            let cfg = arch_config(name, "tiny", &["train.max_steps=7".into()]).unwrap();
            assert_eq!(cfg.train, dense.train, "{name}");
            assert_eq!(cfg.data, dense.data, "{name}");
            assert_eq!(cfg.eval, dense.eval, "{name}");
        }
    }

    #[test]
    fn patterns_are_architectures_and_bad_names_explain() {
        let cfg = arch_config("AMMA", "tiny", &[]).unwrap();
        assert_eq!(cfg.model.n_layers, 4);
        let err = format!("{:#}", arch_config("transformer", "tiny", &[]).unwrap_err());
        assert!(err.contains("neither an architecture") && err.contains("dense"), "{err}");
        assert!(arch_config("dense", "huge", &[]).is_err());
    }
}
