//! The layer-pattern language: one symbol per layer, the way the seed studies write their
//! hybrids (`AMMMMMMA`, `AAMMAAMMAA`, …), each optionally followed by the layer's channel mixer.
//!
//! ```text
//! pattern := item+                      whitespace between items is ignored
//! item    := layer | "(" item+ ")" N    a group repeated N ≥ 1 times: "(MMMA)6"
//! layer   := mixer ffn?
//! mixer   := A | L | M | S | H | G | D  a sequence mixer (`model::registry`: `archlab describe --list`)
//! ffn     := f  MLP        e  MoE (`[model.moe]`)        n  none
//!            (absent: `model.ffn`, the global default)
//! ```
//!
//! Examples: `AAAAAAAA` (dense), `MMMMMMMM` (pure Mamba, with `model.ffn = "none"`),
//! `AMMMMMMA` (sandwich), `(MMMAMMMM)` with MoE every other layer as Jamba:
//! `MMeMMeAMeMMe`, Hymba with MoE: `HeHeHe`. Display writes the expanded form, which parses
//! back to the same layers.

use std::fmt;

use super::registry::{self, FfnKind, MixerKind};

/// One layer as the pattern names it; `ffn: None` takes the global default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSymbol {
    pub mixer: MixerKind,
    pub ffn: Option<FfnKind>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(pub Vec<LayerSymbol>);

/// Why a pattern does not parse: the 0-based character position, what was found there, and
/// what would have been valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    pub position: usize,
    pub found: Option<char>,
    pub expected: String,
}

const MAX_LAYERS: usize = 100_000;
const MAX_COUNT: usize = 9999;
/// Groups nest at most this deep (the parser recurses per level: no stack overflow).
const MAX_DEPTH: usize = 32;
const GROUP_COUNT: &str = "a repeat count (1–9999) right after ')', as in (MMMA)6";

fn mixers_expected() -> String {
    format!("a sequence mixer {} or '('", registry::seq_symbols_named())
}

fn after_layer_expected() -> String {
    format!(
        "a mixer symbol {}, a channel mixer {} (MLP / MoE / none), '(' or ')' closing a group",
        registry::seq_symbols(),
        registry::channel_symbols()
    )
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.found {
            Some(c) => {
                write!(f, "unexpected '{c}' at position {}; expected {}", self.position, self.expected)
            }
            None => write!(f, "pattern ends at position {}; expected {}", self.position, self.expected),
        }
    }
}

impl std::error::Error for PatternError {}

fn mixer_of(c: char) -> Option<MixerKind> {
    registry::seq_mixer_by_symbol(c).map(|m| m.kind)
}

fn ffn_of(c: char) -> Option<FfnKind> {
    registry::channel_mixer_by_symbol(c).map(|m| m.kind)
}

pub fn mixer_symbol(m: MixerKind) -> char {
    registry::seq_mixer(m).symbol
}

pub fn ffn_symbol(f: FfnKind) -> char {
    registry::channel_mixer(f).symbol
}

impl Pattern {
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        let chars: Vec<char> = text.chars().collect();
        let mut parser = Parser { chars: &chars, at: 0 };
        let layers = parser.items(0)?;
        if layers.is_empty() {
            return Err(PatternError { position: 0, found: None, expected: mixers_expected() });
        }
        Ok(Pattern(layers))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for layer in &self.0 {
            write!(f, "{}", mixer_symbol(layer.mixer))?;
            if let Some(ffn) = layer.ffn {
                write!(f, "{}", ffn_symbol(ffn))?;
            }
        }
        Ok(())
    }
}

struct Parser<'a> {
    chars: &'a [char],
    at: usize,
}

impl Parser<'_> {
    fn peek(&mut self) -> Option<char> {
        while self.chars.get(self.at).is_some_and(|c| c.is_whitespace()) {
            self.at += 1;
        }
        self.chars.get(self.at).copied()
    }

    fn error(&self, expected: impl Into<String>) -> PatternError {
        PatternError { position: self.at, found: self.chars.get(self.at).copied(), expected: expected.into() }
    }

    /// Items up to the end (depth 0) or up to the ')' closing the current group.
    fn items(&mut self, depth: usize) -> Result<Vec<LayerSymbol>, PatternError> {
        let mut layers = Vec::new();
        loop {
            match self.peek() {
                None if depth == 0 => return Ok(layers),
                None => return Err(self.error("')' closing the group")),
                Some(')') if depth > 0 && !layers.is_empty() => return Ok(layers),
                Some('(') if depth >= MAX_DEPTH => {
                    return Err(self.error(format!("at most {MAX_DEPTH} nested groups")));
                }
                Some('(') => {
                    self.at += 1;
                    let group = self.items(depth + 1)?;
                    self.at += 1; // the ')'
                    let count = self.count()?;
                    if layers.len() + group.len() * count > MAX_LAYERS {
                        return Err(self.error(format!("a pattern of at most {MAX_LAYERS} layers")));
                    }
                    for _ in 0..count {
                        layers.extend_from_slice(&group);
                    }
                }
                Some(c) => match mixer_of(c) {
                    Some(mixer) => {
                        self.at += 1;
                        let ffn = self.chars.get(self.at).and_then(|&c| ffn_of(c));
                        if ffn.is_some() {
                            self.at += 1;
                        }
                        layers.push(LayerSymbol { mixer, ffn });
                    }
                    None if ffn_of(c).is_some() => {
                        return Err(self.error(format!(
                            "a mixer symbol {} before the channel mixer {}",
                            registry::seq_symbols(),
                            registry::channel_symbols()
                        )));
                    }
                    None => {
                        return Err(self.error(if layers.is_empty() {
                            mixers_expected()
                        } else {
                            after_layer_expected()
                        }));
                    }
                },
            }
        }
    }

    fn count(&mut self) -> Result<usize, PatternError> {
        let start = self.at;
        while self.chars.get(self.at).is_some_and(|c| c.is_ascii_digit()) {
            self.at += 1;
        }
        let digits: String = self.chars[start..self.at].iter().collect();
        let parsed = digits.parse::<usize>();
        self.at = start;
        match parsed {
            Ok(n) if (1..=MAX_COUNT).contains(&n) => {
                self.at += digits.len();
                Ok(n)
            }
            _ if digits.len() > 1 && digits.chars().any(|c| c != '0') => {
                Err(self.error(format!("a repeat count of at most {MAX_COUNT}, not {digits}")))
            }
            _ => Err(self.error(GROUP_COUNT)),
        }
    }
}

/// The seed studies' patterns, verbatim: every one must stay valid.
pub const SEED_PATTERNS: &[&str] = &[
    "AMMMMMMA",
    "AAMMMMAA",
    "AMAMAMAM",
    "MAMAMAMA",
    "AAMMAAMMAA",
    "MMMMAAA",
    "MMMMAAAA",
    "AAAAMMMM",
    "MAMMAMMMA",
    "MMMMMMMM",
    "AAAAAAAA",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn seed_patterns_parse_verbatim() {
        for p in SEED_PATTERNS {
            let parsed = Pattern::parse(p).unwrap();
            assert_eq!(parsed.len(), p.len());
            assert_eq!(parsed.to_string(), *p);
            assert!(parsed.0.iter().all(|l| l.ffn.is_none()));
        }
    }

    #[test]
    fn channel_mixers_groups_and_whitespace() {
        let p = Pattern::parse("(MMe)2 A Hn").unwrap();
        assert_eq!(p.to_string(), "MMeMMeAHn");
        assert_eq!(p.0[1], LayerSymbol { mixer: MixerKind::Mamba, ffn: Some(FfnKind::Moe) });
        assert_eq!(p.0[5], LayerSymbol { mixer: MixerKind::Hymba, ffn: Some(FfnKind::None) });
        assert_eq!(Pattern::parse("((AL)2S)3").unwrap().len(), 15);
    }

    #[test]
    fn errors_name_the_position_the_symbol_and_the_valid_ones() {
        let e = Pattern::parse("AMXMA").unwrap_err();
        assert_eq!((e.position, e.found), (2, Some('X')));
        assert!(e.to_string().contains("A/L/M/S/H/G/D"), "{e}");
        let e = Pattern::parse("eMM").unwrap_err();
        assert_eq!((e.position, e.found), (0, Some('e')));
        let e = Pattern::parse("(AM)").unwrap_err();
        assert_eq!(e.position, 4);
        assert!(e.to_string().contains("repeat count"), "{e}");
        let e = Pattern::parse("(AM").unwrap_err();
        assert!(e.to_string().contains("')'"), "{e}");
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("()3").is_err());
        assert!(Pattern::parse("(A)0").is_err());
        assert!(Pattern::parse("(((A)99)99)99").is_err(), "too many layers");
    }

    /// Property: random strings over the grammar's alphabet (and a few others) never panic;
    /// every string built from random layers round-trips through Display.
    #[test]
    fn random_strings_never_panic_and_valid_ones_round_trip() {
        let alphabet: Vec<char> = "ALMSHGDfen()0123456789 xZé".chars().collect();
        let mut rng = Rng::new(42);
        for _ in 0..20_000 {
            let len = rng.below(16);
            let s: String = (0..len).map(|_| alphabet[rng.below(alphabet.len())]).collect();
            if let Ok(p) = Pattern::parse(&s) {
                assert_eq!(Pattern::parse(&p.to_string()).unwrap(), p, "{s}");
            }
        }
        let mixers: Vec<char> = registry::SEQ_MIXERS.iter().map(|m| m.symbol).collect();
        let ffns = [None, Some('f'), Some('e'), Some('n')];
        for _ in 0..2000 {
            let n = 1 + rng.below(12);
            let s: String = (0..n)
                .map(|_| {
                    let m = mixers[rng.below(mixers.len())];
                    match ffns[rng.below(4)] {
                        Some(f) => format!("{m}{f}"),
                        None => m.to_string(),
                    }
                })
                .collect();
            let p = Pattern::parse(&s).unwrap();
            assert_eq!(p.to_string(), s);
            assert_eq!(p.len(), n);
        }
    }

    #[test]
    fn limits_are_stated_not_overflowed() {
        let err = Pattern::parse("(A)999999").unwrap_err().to_string();
        assert!(err.contains("a repeat count of at most 9999, not 999999"), "{err}");
        let err = Pattern::parse("(A)0").unwrap_err().to_string();
        assert!(err.contains("1–9999"), "{err}");
        let deep = format!("{}A{}", "(".repeat(100_000), ")2".repeat(100_000));
        let err = Pattern::parse(&deep).unwrap_err().to_string();
        assert!(err.contains("at most 32 nested groups"), "{err}");
        let ok = format!("{}A{}", "(".repeat(10), ")1".repeat(10));
        assert_eq!(Pattern::parse(&ok).unwrap().len(), 1);
    }

    /// Mutated patterns parse or are errors, never panics; what parses stays within the limits.
    #[test]
    fn survives_mutated_patterns() {
        for text in crate::util::mutate::text_mutants("(AMMf)3 L(SnGe)2 H(D(An)4)12", 2000, 9) {
            if let Ok(p) = Pattern::parse(&text) {
                assert!((1..=MAX_LAYERS).contains(&p.len()), "{text}");
            }
        }
    }
}
