//! What a layer reports about itself, one named measurement at a time.

use serde::{Deserialize, Serialize};

/// A named measurement a layer reports about itself: a sequence mixer from its weights
/// ([`SequenceMixer::diagnostics`], e.g. Hymba's branch scales), a channel mixer from what it
/// did during training (an MoE layer's expert loads). One generic path carries them into
/// `metrics.jsonl`, `summary.json`, the terminal and the report, which know no mixer by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub layer: usize,
    /// The mixer's registry name.
    pub mixer: String,
    /// What is measured, as the report prints it.
    pub name: String,
    #[serde(with = "crate::util::json_f64")]
    pub value: f64,
    /// The value to read `value` against, drawn beside it in the report: for a learned
    /// quantity its initial value (one that never moved, or collapsed to 0, shows), for a
    /// statistic its ideal (an even expert load, 1/E).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::util::json_opt_f64")]
    pub reference: Option<f64>,
    /// A headline quantity: the report's results table notes its range over layers.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub headline: bool,
}

impl Diagnostic {
    /// `name` of layer `layer`'s mixer `mixer`, without a reference, not a headline.
    pub fn new(layer: usize, mixer: &str, name: &str, value: f64) -> Self {
        Self { layer, mixer: mixer.into(), name: name.into(), value, reference: None, headline: false }
    }

    /// Read against `reference`.
    pub fn against(self, reference: f64) -> Self {
        Self { reference: Some(reference), ..self }
    }

    /// Noted in the report's results table.
    pub fn headline(self) -> Self {
        Self { headline: true, ..self }
    }
}
