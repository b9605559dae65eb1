//! Checkpoints: one file per checkpoint (`last.ckpt`, `best.ckpt`) holding the training state,
//! the model and both optimizer states, written atomically (temporary file + rename), so a
//! run killed at any moment resumes from the last complete checkpoint.
//!
//! ```text
//! b"ARCHCKPT" | u32 version | 4 × (u64 length, bytes): state JSON, model, AdamW decay, AdamW no-decay
//! ```
//! The model and optimizer sections are burn records (`BinBytesRecorder`, full precision).

use std::path::Path;

use crate::kernels::AutodiffBackend;
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use serde::{Deserialize, Serialize};

use super::optim::Optimizers;
use crate::model::LanguageModel;
use crate::model::moe::RoutingStats;
use crate::util::atomic;

const MAGIC: &[u8; 8] = b"ARCHCKPT";
const VERSION: u32 = 1;

/// Everything besides tensors that a resumed run needs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: usize,
    pub tokens_seen: u64,
    pub nan_skips: usize,
    pub best_val_loss: Option<f64>,
    pub best_step: Option<usize>,
    /// Training wall time before this process, so a resumed run reports the total.
    pub elapsed_s: f64,
    /// Routing counts of each MoE layer over all steps so far, `(layer, stats)`.
    #[serde(default)]
    pub routing: Vec<(usize, RoutingStats)>,
}

fn recorder() -> BinBytesRecorder<FullPrecisionSettings> {
    BinBytesRecorder::default()
}

pub fn save<B: AutodiffBackend>(
    path: &Path,
    state: &TrainState,
    model: &LanguageModel<B>,
    optim: Option<&Optimizers<B>>,
) -> Result<()> {
    let rec = recorder();
    let mut sections = vec![serde_json::to_vec(state)?];
    sections.push(Recorder::<B>::record(&rec, model.clone().into_record(), ()).context("serialising model")?);
    if let Some(o) = optim {
        sections.push(Recorder::<B>::record(&rec, o.decay.to_record(), ()).context("serialising optimizer")?);
        sections
            .push(Recorder::<B>::record(&rec, o.no_decay.to_record(), ()).context("serialising optimizer")?);
    }
    let mut bytes = Vec::with_capacity(sections.iter().map(|s| s.len() + 8).sum::<usize>() + 12);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    for s in &sections {
        bytes.extend_from_slice(&(s.len() as u64).to_le_bytes());
        bytes.extend_from_slice(s);
    }
    atomic::write(path, &bytes)
}

fn sections(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let corrupt = |why: &str| anyhow::anyhow!("corrupt checkpoint {}: {why}", path.display());
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(corrupt("not an archlab checkpoint"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().unwrap());
    if version != VERSION {
        bail!("checkpoint {} has version {version}; this archlab reads version {VERSION}", path.display());
    }
    let mut out = Vec::new();
    let mut at = 12;
    while at < bytes.len() {
        if at + 8 > bytes.len() {
            return Err(corrupt("truncated section header"));
        }
        let len = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()) as usize;
        at += 8;
        if at + len > bytes.len() {
            return Err(corrupt("truncated section"));
        }
        out.push(bytes[at..at + len].to_vec());
        at += len;
    }
    if out.len() < 2 {
        return Err(corrupt("missing sections"));
    }
    Ok(out)
}

/// Loads the model (and, if present and wanted, the optimizer states) into freshly built ones.
pub fn load<B: AutodiffBackend>(
    path: &Path,
    model: LanguageModel<B>,
    optim: Option<&mut Optimizers<B>>,
    device: &B::Device,
) -> Result<(TrainState, LanguageModel<B>)> {
    let mut s = sections(path)?;
    let rec = recorder();
    let state: TrainState = serde_json::from_slice(&s[0]).context("checkpoint state")?;
    let model_record = Recorder::<B>::load(&rec, std::mem::take(&mut s[1]), device)
        .map_err(|e| anyhow::anyhow!("checkpoint {} does not fit this model ({e})", path.display()))?;
    let model = model.load_record(model_record);
    if let Some(o) = optim {
        if s.len() < 4 {
            bail!("checkpoint {} has no optimizer state; it cannot be resumed", path.display());
        }
        let decay = Recorder::<B>::load(&rec, std::mem::take(&mut s[2]), device)
            .map_err(|e| anyhow::anyhow!("checkpoint optimizer state: {e}"))?;
        let no_decay = Recorder::<B>::load(&rec, std::mem::take(&mut s[3]), device)
            .map_err(|e| anyhow::anyhow!("checkpoint optimizer state: {e}"))?;
        o.decay = o.decay.clone().load_record(decay);
        o.no_decay = o.no_decay.clone().load_record(no_decay);
    }
    Ok((state, model))
}

/// The model of the run in `dir` from its `which` checkpoint (`best` or `last`), built for
/// `cfg` on `device` (bf16 matmuls where the run's precision asks for them on a GPU).
pub fn load_model<B: crate::kernels::Backend>(
    dir: &Path,
    which: &str,
    cfg: &crate::config::RunConfig,
    device: &B::Device,
    on_gpu: bool,
) -> Result<LanguageModel<B>> {
    let path = dir.join(format!("{which}.ckpt"));
    if !path.exists() {
        bail!("{} has no {which}.ckpt; has the run started?", dir.display());
    }
    let bf16 = super::use_bf16::<B>(cfg.train.precision, device, on_gpu)?;
    let model = LanguageModel::<B>::new(&cfg.model, cfg.train.seed, bf16, device);
    load_weights(&path, model, device)
}

/// Loads only the model weights, for evaluation and generation (inference backend).
pub fn load_weights<B: crate::kernels::Backend>(
    path: &Path,
    model: LanguageModel<B>,
    device: &B::Device,
) -> Result<LanguageModel<B>> {
    let mut s = sections(path)?;
    let record = Recorder::<B>::load(&recorder(), std::mem::take(&mut s[1]), device)
        .map_err(|e| anyhow::anyhow!("checkpoint {} does not fit this model ({e})", path.display()))?;
    Ok(model.load_record(record))
}
