//! From names to sized configs: every architecture of a comparison (or a bench), resolved at
//! one size and sized to one budget.

use anyhow::{Context, Result};

use super::arch::arch_config;
use super::sizing::{MatchBy, Sizing, size_to};
use crate::config::RunConfig;
use crate::data::tokenizer::{Tokenizer, TokenizerSpec};

/// One architecture, ready to train.
#[derive(Clone, Debug)]
pub struct PlannedArch {
    pub name: String,
    pub cfg: RunConfig,
    pub sizing: Sizing,
}

/// Resolves every architecture at `size` with the shared `sets`, and sizes each to `budget`
/// of `by` (default: the dense architecture's own value at this size). Returns the budget used.
pub fn plan_archs(
    names: &[String],
    size: &str,
    sets: &[String],
    by: MatchBy,
    budget: Option<f64>,
) -> Result<(f64, Vec<PlannedArch>)> {
    let budget = match budget {
        Some(b) => b,
        None => default_budget(size, sets, by)?,
    };
    let archs = names.iter().map(|n| plan_one(n, n, size, sets, by, budget)).collect::<Result<_>>()?;
    Ok((budget, archs))
}

/// The dense architecture's value of `by` at `size`: the budget when none is given.
pub fn default_budget(size: &str, sets: &[String], by: MatchBy) -> Result<f64> {
    let mut dense = arch_config("dense", size, sets)?;
    dense.model.vocab_size = planned_vocab(&dense)?;
    Ok(by.measure(&dense.model, dense.train.seq_len))
}

/// Architecture `arch` at `size` with `sets`, sized to `budget` of `by`, labelled `label`.
pub fn plan_one(
    label: &str,
    arch: &str,
    size: &str,
    sets: &[String],
    by: MatchBy,
    budget: f64,
) -> Result<PlannedArch> {
    let mut cfg = arch_config(arch, size, sets).with_context(|| format!("architecture `{label}`"))?;
    cfg.model.vocab_size = planned_vocab(&cfg)?;
    let seq_len = cfg.train.seq_len;
    let sizing = size_to(&mut cfg.model, by, budget, seq_len)
        .with_context(|| format!("sizing architecture `{label}`"))?;
    cfg.validate()?;
    Ok(PlannedArch { name: label.to_string(), cfg, sizing })
}

/// The vocabulary size the model will have, known before any data is prepared: the config's,
/// or the tokenizer's (`byte`: 256, `bpe:N`: N, a file: its size).
pub fn planned_vocab(cfg: &RunConfig) -> Result<usize> {
    if cfg.model.vocab_size > 0 {
        return Ok(cfg.model.vocab_size);
    }
    if let Some(task) = crate::data::tasks::Task::from_source(&cfg.data.source, &cfg.data.task)? {
        return Ok(task.vocab_size());
    }
    Ok(match TokenizerSpec::parse(&cfg.data.tokenizer)? {
        TokenizerSpec::Byte => 256,
        TokenizerSpec::TrainBpe(n) => n,
        TokenizerSpec::File(path) => Tokenizer::from_file(&path)?.vocab_size(),
    })
}
