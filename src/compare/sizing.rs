//! Budget matching: size an architecture so that its parameters, active parameters, training
//! FLOPs per token or decoding state hit a target, by documented knobs.
//!
//! 1. **Width** (`d_model`) is the coarse knob. Attention keeps its number of heads (so the
//!    width moves in steps of `2 · n_heads`, RoPE needs an even head size); Mamba-2 keeps its
//!    head size as close to the preset's as the width allows (the largest divisor of the inner
//!    width in `[P/2, P]`). The FFN widths (`d_ff`, the experts', a shared expert's) scale
//!    with `d_model`. The widest valid width whose count stays within the budget is taken.
//! 2. **FFN width** is the fine knob, when some layer has an MLP or MoE: `d_ff` (and the
//!    expert widths, in proportion) grow from there to the width closest to the budget.
//!    Architectures without channel mixers (pure Mamba) take the width closest to the budget.
//!
//! Depth, state size, heads, experts and k stay as the architecture defines them: they are
//! what is being compared (only `--match state` turns a state size, below). The result must be
//! within [`TOLERANCE`] of the target, else it is an error that says why (an architecture whose
//! width steps are too coarse at this budget).
//!
//! **Decoding state** (`--match state`, Zoology's iso-state axis) is each mixer's own
//! accounting of the bytes a sequence holds at the training length (a KV cache grows with it,
//! an SSM or delta-rule state does not), summed over layers. The width moves it first (through
//! each mixer's width-dependent sizes: heads, inner width), and the width closest to the budget
//! is taken. Where its steps are too coarse to land within [`STATE_TOLERANCE`] (a stack of few
//! wide heads), each mixer's own state size is turned too ([`MixerSpec::state_knob`]: Mamba's
//! and Mamba-2's `d_state`, Gated DeltaNet's key head width, a sliding window), one after the
//! other, each to the value closest to the budget; the report names the ones that moved.
//!
//! [`MixerSpec::state_knob`]: crate::model::mixer::MixerSpec::state_knob

use anyhow::{Result, bail};

use crate::config::{FfnKind, ModelConfig};

/// Largest accepted relative error between achieved and target.
pub const TOLERANCE: f64 = 0.02;

/// The same for decoding state, whose knobs (the width, the mixers' state sizes) move in
/// coarser steps.
pub const STATE_TOLERANCE: f64 = 0.05;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchBy {
    /// All parameters.
    Params,
    /// Parameters one token uses (MoE: the router's k experts, not all E).
    Active,
    /// Training FLOPs per token at the training context (`ModelConfig::train_flops_per_token`).
    Flops,
    /// Decoding-state bytes per sequence at the training context (`ModelConfig::state_bytes`).
    State,
}

impl MatchBy {
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "params" => MatchBy::Params,
            "active" => MatchBy::Active,
            "flops" => MatchBy::Flops,
            "state" => MatchBy::State,
            other => bail!("unknown --match `{other}`; use params, active, flops or state"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            MatchBy::Params => "params",
            MatchBy::Active => "active",
            MatchBy::Flops => "flops",
            MatchBy::State => "state",
        }
    }

    /// What the budget counts, for sentences such as "sized to 550k parameters".
    pub fn unit(self) -> &'static str {
        match self {
            MatchBy::Params => "parameters",
            MatchBy::Active => "active parameters",
            MatchBy::Flops => "training FLOPs per token",
            MatchBy::State => "bytes of decoding state per sequence",
        }
    }

    /// The matched quantity of a model.
    pub fn measure(self, m: &ModelConfig, seq_len: usize) -> f64 {
        match self {
            MatchBy::Params => m.param_counts().total as f64,
            MatchBy::Active => m.param_counts().active as f64,
            MatchBy::Flops => m.train_flops_per_token(seq_len),
            MatchBy::State => m.state_bytes(seq_len) as f64,
        }
    }

    /// Largest accepted relative error for this quantity.
    pub fn tolerance(self) -> f64 {
        if self == MatchBy::State { STATE_TOLERANCE } else { TOLERANCE }
    }
}

/// Parses a budget such as `25M`, `900k`, `1.5e6` or `2G`.
pub fn parse_budget(s: &str) -> Result<f64> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        Some((i, 'g' | 'G' | 'b' | 'B')) => (&t[..i], 1e9),
        _ => (t, 1.0),
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v * mult),
        _ => bail!("--budget `{s}` is not a positive number; write it like 25M, 900k or 1.5e6"),
    }
}

/// How an architecture was sized.
#[derive(Clone, Debug, PartialEq)]
pub struct Sizing {
    /// The knobs' values, e.g. "d_model 120, d_ff 344".
    pub knob: String,
    pub achieved: f64,
    /// `(achieved − target) / target`.
    pub error: f64,
}

/// Resizes `m` (whose `vocab_size` must be resolved) to `target` of `by`.
pub fn size_to(m: &mut ModelConfig, by: MatchBy, target: f64, seq_len: usize) -> Result<Sizing> {
    if m.vocab_size == 0 {
        bail!("internal: size_to needs the vocabulary size resolved");
    }
    let base = m.clone();
    let measure = |c: &ModelConfig| by.measure(c, seq_len);
    // The FFN width is a knob of every quantity but the decoding state.
    let has_ffn = by != MatchBy::State && m.layers()?.iter().any(|l| l.ffn != FfnKind::None);

    // 1. Width: the widest valid d_model within the budget (or, without FFNs, the closest).
    let candidates: Vec<ModelConfig> = (8..=16_384).filter_map(|d| with_width(&base, d)).collect();
    let within = candidates.iter().rfind(|c| measure(c) <= target);
    let chosen = if has_ffn {
        match within {
            Some(c) => c.clone(),
            None => bail!(
                "even the narrowest {} model exceeds the budget of {}; raise --budget",
                describe_layers(&base),
                crate::train::human(target)
            ),
        }
    } else {
        let closest = candidates
            .iter()
            .min_by(|a, b| (measure(a) - target).abs().total_cmp(&(measure(b) - target).abs()));
        match closest {
            Some(c) => c.clone(),
            None => bail!("no valid width for {}", describe_layers(&base)),
        }
    };

    // 2. FFN width: grow from the width's default to the closest to the budget.
    let mut best = chosen.clone();
    if has_ffn {
        let start = chosen.d_ff.max(1);
        let widen = |w: usize| with_ffn_width(&chosen, &base, w);
        // The count grows with the FFN width: find the last width within budget, then take
        // it or the next, whichever is closer.
        let (mut lo, mut hi) = (start, start.max(2) * 2);
        while measure(&widen(hi)) <= target && hi < 1 << 24 {
            lo = hi;
            hi *= 2;
        }
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if measure(&widen(mid)) <= target { lo = mid } else { hi = mid }
        }
        best = [widen(lo), widen(hi)]
            .into_iter()
            .filter(|c| c.validate().is_ok())
            .min_by(|a, b| (measure(a) - target).abs().total_cmp(&(measure(b) - target).abs()))
            .unwrap_or(chosen);
    }

    // 3. Decoding state: when the width's steps miss the budget, each mixer's own state size.
    if by == MatchBy::State && ((measure(&best) - target) / target).abs() > by.tolerance() {
        best = turn_state_knobs(best, target, &measure);
    }

    let achieved = measure(&best);
    let error = (achieved - target) / target;
    let knob = knob_text(&best, &base);
    if error.abs() > by.tolerance() {
        let fix = if by == MatchBy::State {
            "choose another --budget; the width and the mixers' own state sizes \
             (model.mamba.d_state, model.gdn.head_dim, …) were turned already"
        } else {
            "choose another --budget, or give the pattern MLP layers (f) for a finer knob"
        };
        bail!(
            "cannot size {} to {} {} within {:.0}%: the closest is {} ({knob}, {:+.1}%); {fix}",
            describe_layers(&base),
            crate::train::human(target),
            by.name(),
            by.tolerance() * 100.0,
            crate::train::human(achieved),
            error * 100.0
        );
    }
    *m = best;
    Ok(Sizing { knob, achieved, error })
}

/// `m` with each mixer's state knob ([`crate::model::mixer::state_knobs`]) turned, one after
/// the other, to the valid value whose state is closest to `target`.
fn turn_state_knobs(mut m: ModelConfig, target: f64, measure: &dyn Fn(&ModelConfig) -> f64) -> ModelConfig {
    for knob in crate::model::mixer::state_knobs(&m) {
        let (lo, hi) = knob.range;
        let gap = |c: &ModelConfig| (measure(c) - target).abs();
        let turned = (lo..=hi)
            .filter_map(|v| {
                let mut c = m.clone();
                (knob.set)(&mut c, v);
                c.validate().ok().map(|_| c)
            })
            .min_by(|a, b| gap(a).total_cmp(&gap(b)));
        if let Some(c) = turned.filter(|c| gap(c) < gap(&m)) {
            m = c;
        }
    }
    m
}

/// `base` at width `d` with everything width-proportional scaled, if that is a valid model.
fn with_width(base: &ModelConfig, d: usize) -> Option<ModelConfig> {
    let mut c = base.clone();
    let scale = |w: usize| ((w as f64) * d as f64 / base.d_model as f64).round().max(1.0) as usize;
    c.d_model = d;
    c.d_ff = scale(base.d_ff);
    if base.moe.expert_d_ff > 0 {
        c.moe.expert_d_ff = scale(base.moe.expert_d_ff);
    }
    if base.moe.shared_expert_d_ff > 0 {
        c.moe.shared_expert_d_ff = scale(base.moe.shared_expert_d_ff);
    }
    crate::model::mixer::fit_width(&mut c, base)?;
    c.validate().ok().map(|_| c)
}

/// `c` with MLP width `w` and the expert widths scaled in the same proportion to `d_ff` as in
/// `base`.
fn with_ffn_width(c: &ModelConfig, base: &ModelConfig, w: usize) -> ModelConfig {
    let mut out = c.clone();
    let ratio = |x: usize| ((x as f64) * w as f64 / base.d_ff.max(1) as f64).round().max(1.0) as usize;
    out.d_ff = w;
    if base.moe.expert_d_ff > 0 {
        out.moe.expert_d_ff = ratio(base.moe.expert_d_ff);
    }
    if base.moe.shared_expert_d_ff > 0 {
        out.moe.shared_expert_d_ff = ratio(base.moe.shared_expert_d_ff);
    }
    out
}

/// The knobs' values as the report shows them; a state knob only where it moved from `base`.
fn knob_text(m: &ModelConfig, base: &ModelConfig) -> String {
    let layers = m.layers().unwrap_or_default();
    let uses = |f: &dyn Fn(&crate::config::LayerKind) -> bool| layers.iter().any(f);
    let mut parts = vec![format!("d_model {}", m.d_model)];
    if uses(&|l| l.ffn == FfnKind::Mlp) {
        parts.push(format!("d_ff {}", m.d_ff));
    }
    if uses(&|l| l.ffn == FfnKind::Moe) {
        parts.push(format!("expert d_ff {}", m.moe.expert_width(m.d_ff)));
    }
    parts.extend(crate::model::mixer::knobs(m));
    let before = crate::model::mixer::state_knobs(base);
    for knob in crate::model::mixer::state_knobs(m) {
        if before.iter().any(|b| b.key == knob.key && b.value != knob.value) {
            parts.push(format!("{} {}", knob.key, knob.value));
        }
    }
    parts.join(", ")
}

fn describe_layers(m: &ModelConfig) -> String {
    format!("the {} model", m.layer_pattern())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_with_suffixes_and_reject_nonsense() {
        assert_eq!(parse_budget("25M").unwrap(), 25e6);
        assert_eq!(parse_budget("900k").unwrap(), 9e5);
        assert_eq!(parse_budget("1.5e6").unwrap(), 1.5e6);
        assert_eq!(parse_budget("2G").unwrap(), 2e9);
        for bad in ["", "M", "-3M", "abc", "0"] {
            assert!(parse_budget(bad).is_err(), "{bad}");
        }
    }
}
