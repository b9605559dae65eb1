//! The one table of layer kinds: pattern symbol ↔ config name ↔ what the layer is. The
//! pattern parser, its error messages, `archlab describe --list` and the mixer tests read it;
//! a duplicate symbol or name is rejected by a test below.

use super::{FfnKind, MixerKind};

/// A sequence mixer: mixes across time, `[b, t, d] → [b, t, d]`, causal.
#[derive(Clone, Copy, Debug)]
pub struct SeqMixerInfo {
    /// Its letter in a layer pattern (upper case).
    pub symbol: char,
    pub kind: MixerKind,
    /// Its name in configs (`model.mixer`) and reports.
    pub name: &'static str,
    /// The config section that shapes it, if any.
    pub section: &'static str,
    /// One line: what it is.
    pub summary: &'static str,
    /// The Hugging Face architectures (`model_type`) whose layers `archlab import` maps onto it.
    pub hf_import: &'static [&'static str],
    /// Its fused CubeCL kernels on a GPU backend (the plain-ops twins run elsewhere).
    pub fused_kernels: &'static [&'static str],
}

/// A channel mixer: mixes across channels, token by token.
#[derive(Clone, Copy, Debug)]
pub struct ChannelMixerInfo {
    /// Its letter after a layer's sequence mixer (lower case).
    pub symbol: char,
    pub kind: FfnKind,
    pub name: &'static str,
    pub summary: &'static str,
}

pub const SEQ_MIXERS: &[SeqMixerInfo] = &[
    SeqMixerInfo {
        symbol: 'A',
        kind: MixerKind::Attention,
        name: "attention",
        section: "",
        summary: "causal softmax attention (MHA/GQA; RoPE, learned or no positions)",
        hf_import: &["llama", "mixtral", "jamba"],
        fused_kernels: &["FlashAttention-2 forward + backward"],
    },
    SeqMixerInfo {
        symbol: 'L',
        kind: MixerKind::Local,
        name: "local",
        section: "model.window",
        summary: "sliding-window causal attention over the last model.window tokens",
        hf_import: &[],
        fused_kernels: &["FlashAttention-2 forward + backward (windowed)"],
    },
    SeqMixerInfo {
        symbol: 'M',
        kind: MixerKind::Mamba,
        name: "mamba",
        section: "model.mamba",
        summary: "Mamba-1 selective state-space model (Gu & Dao 2023)",
        hf_import: &["mamba", "jamba"],
        fused_kernels: &["selective scan", "causal conv"],
    },
    SeqMixerInfo {
        symbol: 'S',
        kind: MixerKind::Mamba2,
        name: "mamba2",
        section: "model.mamba2",
        summary: "Mamba-2 / SSD, scalar decay per head, chunked scan (Dao & Gu 2024)",
        hf_import: &["mamba2"],
        fused_kernels: &["SSD state passing", "gated RMSNorm", "causal conv"],
    },
    SeqMixerInfo {
        symbol: 'H',
        kind: MixerKind::Hymba,
        name: "hymba",
        section: "model.hymba",
        summary: "attention and Mamba-1 heads in parallel on one input (Hymba, Dong et al. 2024)",
        hf_import: &[],
        fused_kernels: &["those of A and M"],
    },
    SeqMixerInfo {
        symbol: 'G',
        kind: MixerKind::GatedDeltaNet,
        name: "gdn",
        section: "model.gdn",
        summary: "Gated DeltaNet: delta rule with a decay gate, chunked WY form (Yang et al. 2024)",
        hf_import: &[],
        fused_kernels: &["causal conv"],
    },
    SeqMixerInfo {
        symbol: 'D',
        kind: MixerKind::DeltaNet,
        name: "deltanet",
        section: "model.gdn",
        summary: "DeltaNet: the delta rule without decay, chunked WY form (Yang et al. 2024)",
        hf_import: &[],
        fused_kernels: &["causal conv"],
    },
];

pub const CHANNEL_MIXERS: &[ChannelMixerInfo] = &[
    ChannelMixerInfo {
        symbol: 'f',
        kind: FfnKind::Mlp,
        name: "mlp",
        summary: "MLP of width model.d_ff (GELU or SwiGLU, model.mlp)",
    },
    ChannelMixerInfo {
        symbol: 'e',
        kind: FfnKind::Moe,
        name: "moe",
        summary: "Mixture of Experts, model.moe (top-k routing, shared expert, capacity)",
    },
    ChannelMixerInfo {
        symbol: 'n',
        kind: FfnKind::None,
        name: "none",
        summary: "no channel mixer: the block is x + mixer(norm(x)) (the Mamba paper's layout)",
    },
];

/// The entry of a sequence mixer.
pub fn seq_mixer(kind: MixerKind) -> &'static SeqMixerInfo {
    SEQ_MIXERS.iter().find(|m| m.kind == kind).expect("every MixerKind has a registry entry")
}

/// The entry of a channel mixer.
pub fn channel_mixer(kind: FfnKind) -> &'static ChannelMixerInfo {
    CHANNEL_MIXERS.iter().find(|m| m.kind == kind).expect("every FfnKind has a registry entry")
}

/// The sequence mixer a pattern letter stands for.
pub fn seq_mixer_by_symbol(symbol: char) -> Option<&'static SeqMixerInfo> {
    SEQ_MIXERS.iter().find(|m| m.symbol == symbol)
}

/// The channel mixer a pattern letter stands for.
pub fn channel_mixer_by_symbol(symbol: char) -> Option<&'static ChannelMixerInfo> {
    CHANNEL_MIXERS.iter().find(|m| m.symbol == symbol)
}

/// `A/L/M/…`: the sequence mixers' letters, for error messages.
pub fn seq_symbols() -> String {
    SEQ_MIXERS.iter().map(|m| m.symbol.to_string()).collect::<Vec<_>>().join("/")
}

/// `f/e/n`: the channel mixers' letters.
pub fn channel_symbols() -> String {
    CHANNEL_MIXERS.iter().map(|m| m.symbol.to_string()).collect::<Vec<_>>().join("/")
}

/// `A (attention), L (local), …`: every sequence mixer with its name.
pub fn seq_symbols_named() -> String {
    SEQ_MIXERS.iter().map(|m| format!("{} ({})", m.symbol, m.name)).collect::<Vec<_>>().join(", ")
}

/// The registry as a Markdown table (`archlab describe --list`).
pub fn table() -> String {
    let mut out = String::from(
        "| symbol | name | config | what it is | HF import | fused kernels |\n|---|---|---|---|---|---|\n",
    );
    let or_dash = |items: &[&str]| if items.is_empty() { "—".to_string() } else { items.join(", ") };
    for m in SEQ_MIXERS {
        out += &format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            m.symbol,
            m.name,
            if m.section.is_empty() { "model" } else { m.section },
            m.summary,
            or_dash(m.hf_import),
            or_dash(m.fused_kernels)
        );
    }
    out += "\nChannel mixers (after a sequence mixer's letter; without one, model.ffn):\n\n";
    out += "| symbol | name | what it is |\n|---|---|---|\n";
    for c in CHANNEL_MIXERS {
        out += &format!("| {} | {} | {} |\n", c.symbol, c.name, c.summary);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn symbols_and_names_are_unique_and_well_formed() {
        let mut symbols = HashSet::new();
        let mut names = HashSet::new();
        for m in SEQ_MIXERS {
            assert!(m.symbol.is_ascii_uppercase(), "{}: sequence mixers are upper case", m.name);
            assert!(symbols.insert(m.symbol), "duplicate symbol {}", m.symbol);
            assert!(names.insert(m.name), "duplicate name {}", m.name);
        }
        for c in CHANNEL_MIXERS {
            assert!(c.symbol.is_ascii_lowercase(), "{}: channel mixers are lower case", c.name);
            assert!(symbols.insert(c.symbol), "duplicate symbol {}", c.symbol);
        }
        // Pattern syntax must stay free: groups and repeat counts.
        assert!(symbols.iter().all(|c| c.is_ascii_alphabetic()));
    }

    /// Every variant is in the table. Adding a variant makes the match below fail to compile
    /// until it is listed here, and then `seq_mixer` fails until it has its registry line.
    #[test]
    fn every_variant_is_registered() {
        use MixerKind::*;
        for kind in [Attention, Local, Mamba, Mamba2, Hymba, GatedDeltaNet, DeltaNet] {
            match kind {
                Attention | Local | Mamba | Mamba2 | Hymba | GatedDeltaNet | DeltaNet => {}
            }
            seq_mixer(kind);
        }
        for kind in [FfnKind::Mlp, FfnKind::Moe, FfnKind::None] {
            channel_mixer(kind);
        }
    }

    /// Every kind has exactly one entry, and its registry name is its config (serde) name.
    #[test]
    fn every_kind_has_one_entry_named_as_in_configs() {
        for m in SEQ_MIXERS {
            assert_eq!(SEQ_MIXERS.iter().filter(|o| o.kind == m.kind).count(), 1);
            assert_eq!(serde_json::to_value(m.kind).unwrap(), serde_json::json!(m.name));
            assert_eq!(m.kind.name(), m.name);
        }
        for c in CHANNEL_MIXERS {
            assert_eq!(CHANNEL_MIXERS.iter().filter(|o| o.kind == c.kind).count(), 1);
            assert_eq!(serde_json::to_value(c.kind).unwrap(), serde_json::json!(c.name));
            assert_eq!(c.kind.name(), c.name);
        }
    }
}
