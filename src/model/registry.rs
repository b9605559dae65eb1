//! The config layer's reading of the table of layer kinds (`crate::registry`): pattern symbol
//! ↔ config name ↔ what the layer is, and the `MixerKind` and `FfnKind` enums. The pattern
//! parser, its error messages, `archlab describe --list` and the mixer tests read it; a
//! duplicate symbol or name is rejected by a test below.

use serde::{Deserialize, Serialize};

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

/// Reads the table of layer kinds (`crate::registry`): writes the [`MixerKind`] and
/// [`FfnKind`] enums (their serde names are the registry names) and the [`SEQ_MIXERS`] and
/// [`CHANNEL_MIXERS`] tables.
macro_rules! layer_kinds {
    (
        sequence mixers {
            $($variant:ident => $module:ident :: $ty:ident $(, [model . $section:ident] = $scfg:ident)? {
                $($kind:ident = $symbol:literal, $name:literal {
                    section: $kind_section:literal,
                    summary: $summary:literal,
                    hf_import: [$($hf:literal),*],
                    fused_kernels: [$($kernel:literal),*] $(,)?
                })+
            })+
        }
        channel mixers {
            $($ckind:ident = $csymbol:literal, $cname:literal $(=> $cmodule:ident :: $cty:ident $(, [model . $csection:ident] = $ccfg:ident)?)? {
                summary: $csummary:literal $(,)?
            })+
        }
    ) => {
        /// The sequence mixer of a layer (`model.mixer`, or a pattern's upper-case letter); the
        /// modules are in `model/`, built through `model::mixer`'s table.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum MixerKind {
            $($(#[doc = $summary] #[serde(rename = $name)] $kind,)+)+
        }

        /// The channel mixer after each sequence mixer (`model.ffn`, or a pattern's lower-case
        /// letter).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum FfnKind {
            $(#[doc = $csummary] #[serde(rename = $cname)] $ckind,)+
        }

        pub const SEQ_MIXERS: &[SeqMixerInfo] = &[
            $($(SeqMixerInfo {
                symbol: $symbol,
                kind: MixerKind::$kind,
                name: $name,
                section: $kind_section,
                summary: $summary,
                hf_import: &[$($hf),*],
                fused_kernels: &[$($kernel),*],
            },)+)+
        ];

        pub const CHANNEL_MIXERS: &[ChannelMixerInfo] = &[
            $(ChannelMixerInfo { symbol: $csymbol, kind: FfnKind::$ckind, name: $cname, summary: $csummary },)+
        ];
    };
}

crate::registry::layer_table!(layer_kinds);

impl Default for MixerKind {
    fn default() -> Self {
        MixerKind::Attention
    }
}

impl Default for FfnKind {
    fn default() -> Self {
        FfnKind::Mlp
    }
}

impl MixerKind {
    /// Its config name.
    pub fn name(self) -> &'static str {
        seq_mixer(self).name
    }

    /// Whether the mixer attends (and so needs heads, and a position table with RoPE).
    pub fn attends(self) -> bool {
        matches!(self, MixerKind::Attention | MixerKind::Local | MixerKind::Hymba)
    }
}

impl FfnKind {
    /// Its config name.
    pub fn name(self) -> &'static str {
        channel_mixer(self).name
    }
}

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

    // Every kind has exactly one entry, named as in configs, by construction: `layer_kinds!`
    // writes each enum variant, its serde name and its entry from the same table entry.
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
}
