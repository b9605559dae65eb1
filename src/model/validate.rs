//! Checks a [`ModelConfig`] before any work: the shared keys, then every mixer in use checks
//! its own section (`MixerSpec::validate`, `ChannelSpec::validate`, through the dispatch in
//! `mixer.rs`). Apart from `config.rs` so that the config and the mixers' contracts, which take
//! it, do not import each other.

use anyhow::{Result, bail};

use super::config::{LayerKind, ModelConfig};
use super::mixer;
use super::registry::{self, MixerKind};
use crate::util::checks::must_be_positive;

/// The largest model [`ModelConfig::validate`] accepts, by [`ModelConfig::rough_params_bound`]
/// (a thousand times today's largest models; integer counts stay below 2^60).
pub const MAX_ROUGH_PARAMS: f64 = 1e15;

impl ModelConfig {
    /// Checks the model section alone; only the settings of the mixers in use are checked.
    pub fn validate(&self) -> Result<()> {
        let m = self;
        must_be_positive(&[("model.d_model", m.d_model), ("model.n_layers", m.n_layers)])?;
        let layers = m.layers()?;
        if !(0.0..1.0).contains(&m.dropout) {
            bail!("model.dropout must be in [0, 1) (got {})", m.dropout);
        }
        let rough = m.rough_params_bound();
        if rough > MAX_ROUGH_PARAMS {
            bail!(
                "a model this large (about {rough:.1e} parameters, bounding its sizes from above) is \
                 beyond what archlab can train or count (at most {MAX_ROUGH_PARAMS:.0e}); check model.d_model, \
                 d_ff, n_layers, vocab_size, the expand and state sizes, and moe.n_experts"
            );
        }
        let uses = |f: &dyn Fn(&LayerKind) -> bool| layers.iter().any(f);
        // Each mixer in use checks its own settings, channel mixers first, in the table's order.
        for info in registry::CHANNEL_MIXERS {
            if uses(&|l| l.ffn == info.kind) {
                mixer::validate_channel(m, info.kind)?;
            }
        }
        for info in registry::SEQ_MIXERS {
            if uses(&|l| l.mixer == info.kind) {
                mixer::validate(m, info.kind)?;
            }
        }
        if m.hymba.meta_tokens > 0 && !uses(&|l| l.mixer == MixerKind::Hymba) {
            bail!("model.hymba.meta_tokens is set but no layer is Hymba (H); set it to 0 or add H layers");
        }
        Ok(())
    }

    /// An upper bound of the parameter count from the sizes alone, in f64 (no overflow): every
    /// layer holds at most 16·S² parameters, S being the sum of all sizes, the shared ones and
    /// every mixer's own ([`mixer::section_sizes`], experts multiplied out). Refusing
    /// models past [`MAX_ROUGH_PARAMS`] keeps every count archlab makes in integers far from
    /// overflowing.
    fn rough_params_bound(&self) -> f64 {
        let shared = [self.d_model, self.d_ff, self.vocab_size, self.max_seq_len, self.window];
        let s: f64 = shared.iter().map(|&x| x as f64).chain(mixer::section_sizes(self)).sum();
        (self.n_layers as f64 + 2.0) * 16.0 * s * s
    }
}
