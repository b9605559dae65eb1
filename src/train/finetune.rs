//! Fine-tuning: a new run that starts from another run's weights (`train --init-from`).
//!
//! The parent gives the model (its whole `[model]` section) and the tokenizer; this run's
//! preset, config file and `--set`s give the data, the training schedule and the evaluation.
//! Only the weights are taken: the step, the optimizer's moments and the learning-rate schedule
//! start fresh. The checkpoint is recorded as `train.init_from` in the run's `config.toml` and
//! in its summary; `--resume` of a fine-tune continues the fine-tune from its own checkpoint.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::{RunConfig, apply_override};

/// A parent run's checkpoint, and the config it was trained with.
pub struct Parent {
    pub checkpoint: PathBuf,
    pub cfg: RunConfig,
    /// The parent's `tokenizer.json` (`None`: the byte tokenizer).
    pub tokenizer: Option<PathBuf>,
}

/// Finds the parent: a run directory (its `best.ckpt`) or a checkpoint file inside one.
pub fn parent(from: &Path) -> Result<Parent> {
    if !from.exists() {
        bail!(
            "--init-from {}: no such run directory or checkpoint; pass a run written by `archlab \
             train` or `archlab import`, or a checkpoint inside one",
            from.display()
        );
    }
    let (dir, checkpoint) = if from.is_dir() {
        (from.to_path_buf(), from.join("best.ckpt"))
    } else {
        let dir = from.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        (dir.to_path_buf(), from.to_path_buf())
    };
    if !dir.join("config.toml").exists() {
        bail!(
            "--init-from {}: {} is not a run directory (no config.toml); pass a run written by \
             `archlab train` or `archlab import`, or a checkpoint inside one",
            from.display(),
            dir.display()
        );
    }
    if !checkpoint.exists() {
        bail!("--init-from {}: there is no checkpoint {}", from.display(), checkpoint.display());
    }
    let cfg = RunConfig::load(&dir.join("config.toml"))?;
    let tokenizer_path = dir.join("tokenizer.json");
    let text = std::fs::read_to_string(&tokenizer_path).with_context(|| {
        format!("--init-from {}: cannot read {}", from.display(), tokenizer_path.display())
    })?;
    let tokenizer = (text.trim() != "\"byte\"").then_some(tokenizer_path);
    Ok(Parent { checkpoint, cfg, tokenizer })
}

/// This run's config for fine-tuning `parent`: `cfg` (from this command's preset, file and
/// `sets`) with the parent's model and tokenizer. A `--set model.*` that would change the
/// parent's model, or a `--set data.tokenizer`, is an error: the weights fix both.
pub fn config(mut cfg: RunConfig, sets: &[String], parent: &Parent) -> Result<RunConfig> {
    let mut tree = toml::Value::try_from(&parent.cfg).expect("a RunConfig always serialises");
    for set in sets.iter().filter(|s| s.trim_start().starts_with("model.")) {
        apply_override(&mut tree, set)?;
        let changed: RunConfig = tree.clone().try_into().map_err(|e: toml::de::Error| {
            anyhow::anyhow!("invalid config value: {}", e.to_string().trim())
        })?;
        if changed.model != parent.cfg.model {
            bail!(
                "--set {set} contradicts the model of {}: a fine-tune keeps its parent's model \
                 (its weights fix it); drop the --set",
                parent.checkpoint.display()
            );
        }
    }
    if sets.iter().any(|s| s.trim_start().starts_with("data.tokenizer")) {
        bail!(
            "--set data.tokenizer: a fine-tune uses its parent's tokenizer ({}); drop the --set",
            parent.tokenizer.as_ref().map_or("byte".into(), |p| p.display().to_string())
        );
    }
    cfg.model = parent.cfg.model.clone();
    cfg.data.tokenizer = match &parent.tokenizer {
        None => "byte".into(),
        Some(path) => std::path::absolute(path).unwrap_or_else(|_| path.clone()).display().to_string(),
    };
    cfg.train.init_from = std::path::absolute(&parent.checkpoint)
        .unwrap_or_else(|_| parent.checkpoint.clone())
        .display()
        .to_string();
    cfg.validate()?;
    Ok(cfg)
}
