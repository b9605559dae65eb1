//! Checkpoints: one file per checkpoint (`last.ckpt`, `best.ckpt`) holding the training state,
//! the model and both optimizer states, written atomically (temporary file + rename), so a
//! run killed at any moment resumes from the last complete checkpoint.
//!
//! ```text
//! version 2: b"ARCHCKPT" | u32 2 | sections | u32 CRC-32 of every byte before it
//!            sections: 3 or 5 × (u64 length, bytes): state JSON, parameter shapes JSON, model
//!                      [, AdamW decay, AdamW no-decay]
//! version 1: b"ARCHCKPT" | u32 1 | 2 or 4 × (u64 length, bytes): state JSON, model [, AdamW …]
//! ```
//! The model and optimizer sections are burn records (`BinBytesRecorder`, full precision). The
//! checksum catches a damaged file; the parameter shapes (every parameter's path and shape)
//! are checked against the model the run's config builds before any weight is read, so a
//! checkpoint that does not fit its config is an error that names the parameter. Version-1
//! files (written before both existed) still load, with a note that damage to them cannot be
//! detected.

use std::path::Path;

use crate::kernels::AutodiffBackend;
use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::Optimizer;
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::{Bool, Int, Tensor};
use serde::{Deserialize, Serialize};

use super::optim::Optimizers;
use crate::model::LanguageModel;
use crate::model::moe::RoutingStats;
use crate::util::atomic;

const MAGIC: &[u8; 8] = b"ARCHCKPT";
const VERSION: u32 = 2;

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
    let mut sections = vec![serde_json::to_vec(state)?, serde_json::to_vec(&param_shapes(model))?];
    sections.push(Recorder::<B>::record(&rec, model.clone().into_record(), ()).context("serialising model")?);
    if let Some(o) = optim {
        sections.push(Recorder::<B>::record(&rec, o.decay.to_record(), ()).context("serialising optimizer")?);
        sections
            .push(Recorder::<B>::record(&rec, o.no_decay.to_record(), ()).context("serialising optimizer")?);
    }
    let mut bytes = Vec::with_capacity(sections.iter().map(|s| s.len() + 8).sum::<usize>() + 16);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    for s in &sections {
        bytes.extend_from_slice(&(s.len() as u64).to_le_bytes());
        bytes.extend_from_slice(s);
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    atomic::write(path, &bytes)
}

/// One parameter: its path in the module tree (`layers.0.mixer.Attention.q_proj.weight`) and
/// its shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ParamShape {
    pub path: String,
    pub shape: Vec<usize>,
}

/// Every parameter of `model`, in module order.
pub fn param_shapes<B: crate::kernels::Backend>(model: &LanguageModel<B>) -> Vec<ParamShape> {
    struct Shapes {
        path: Vec<String>,
        out: Vec<ParamShape>,
    }
    impl Shapes {
        fn push(&mut self, shape: burn::tensor::Shape) {
            self.out.push(ParamShape { path: self.path.join("."), shape: shape.to_vec() });
        }
    }
    impl<B: burn::tensor::backend::Backend> ModuleVisitor<B> for Shapes {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.push(param.lazy_shape());
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
            self.push(param.lazy_shape());
        }
        fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
            self.push(param.lazy_shape());
        }
    }
    let mut shapes = Shapes { path: Vec::new(), out: Vec::new() };
    model.visit(&mut shapes);
    shapes.out
}

/// A checkpoint's sections, its checksum verified (version 2).
struct Sections {
    version: u32,
    /// State JSON, then (version 2) parameter shapes JSON, then the records.
    parts: Vec<Vec<u8>>,
}

impl Sections {
    fn read(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
        Self::parse(&bytes).map_err(|why| {
            anyhow::anyhow!(
                "corrupt checkpoint {}: {why}; delete it to start the run over, or use the run's other \
                 checkpoint (best.ckpt / last.ckpt)",
                path.display()
            )
        })
    }

    fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err("not an archlab checkpoint".into());
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        let body = match version {
            1 => &bytes[12..],
            2 => {
                if bytes.len() < 16 {
                    return Err("truncated: no checksum".into());
                }
                let (data, crc) = bytes.split_at(bytes.len() - 4);
                let stored = u32::from_le_bytes(crc.try_into().expect("4 bytes"));
                let actual = crc32fast::hash(data);
                if stored != actual {
                    return Err(format!(
                        "checksum mismatch (stored {stored:08x}, computed {actual:08x}): the file was \
                         damaged or truncated after it was written"
                    ));
                }
                &data[12..]
            }
            v => return Err(format!("version {v}; this archlab reads versions 1 and {VERSION}")),
        };
        let mut parts = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            if rest.len() < 8 {
                return Err("truncated section header".into());
            }
            let (len, tail) = rest.split_at(8);
            let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
            let len = usize::try_from(len).ok().filter(|&l| l <= tail.len()).ok_or("truncated section")?;
            parts.push(tail[..len].to_vec());
            rest = &tail[len..];
        }
        let with_shapes = usize::from(version >= 2);
        if parts.len() != 2 + with_shapes && parts.len() != 4 + with_shapes {
            return Err(format!("{} sections where 2 or 4 (+1 from version 2) belong", parts.len()));
        }
        Ok(Self { version, parts })
    }

    fn state(&self) -> Result<TrainState> {
        serde_json::from_slice(&self.parts[0]).context("checkpoint state")
    }

    fn model_index(&self) -> usize {
        if self.version >= 2 { 2 } else { 1 }
    }

    /// The model record, after checking (version 2) every parameter's shape against `model`.
    fn load_model<B: crate::kernels::Backend>(
        &mut self,
        path: &Path,
        model: LanguageModel<B>,
        device: &B::Device,
    ) -> Result<LanguageModel<B>> {
        let expected = param_shapes(&model);
        if self.version >= 2 {
            let stored: Vec<ParamShape> =
                serde_json::from_slice(&self.parts[1]).context("checkpoint parameter shapes")?;
            check_shapes(path, &stored, &expected)?;
        } else {
            eprintln!(
                "note: {} is a version-1 checkpoint: it carries no checksum, so damage to it cannot be \
                 detected (the next checkpoint the run writes has one)",
                path.display()
            );
        }
        let misfit = |e: &dyn std::fmt::Display| {
            anyhow::anyhow!(
                "checkpoint {} does not fit the model its run's config.toml describes ({e})",
                path.display()
            )
        };
        let at = self.model_index();
        let bytes = std::mem::take(&mut self.parts[at]);
        let record = Recorder::<B>::load(&recorder(), bytes, device).map_err(|e| misfit(&e))?;
        // burn's load_record does not check shapes and panics on a different layer count; a
        // version-1 file has no shapes to check first, so its mismatch is caught here.
        let loaded = without_panic_message(|| model.load_record(record)).map_err(|e| misfit(&e))?;
        check_shapes(path, &param_shapes(&loaded), &expected)?;
        Ok(loaded)
    }
}

/// An error naming the first parameters whose shapes differ, if any do.
fn check_shapes(path: &Path, stored: &[ParamShape], expected: &[ParamShape]) -> Result<()> {
    if stored == expected {
        return Ok(());
    }
    let show = |s: Option<&ParamShape>| s.map_or("absent".to_string(), |p| format!("{:?}", p.shape));
    let mut differences = Vec::new();
    for e in expected {
        let s = stored.iter().find(|s| s.path == e.path);
        if s.map(|s| &s.shape) != Some(&e.shape) {
            differences.push(format!(
                "{} is {} in the checkpoint, {:?} in the config",
                e.path,
                show(s),
                e.shape
            ));
        }
    }
    for s in stored.iter().filter(|s| !expected.iter().any(|e| e.path == s.path)) {
        differences.push(format!("{} is {:?} in the checkpoint and absent from the config", s.path, s.shape));
    }
    let more = differences.len().saturating_sub(3);
    differences.truncate(3);
    let more = if more > 0 { format!(" (and {more} more)") } else { String::new() };
    bail!(
        "checkpoint {} does not fit the model its run's config.toml describes: {}{more}; was config.toml \
         edited after the run started? Restore it, or train into a new run directory",
        path.display(),
        differences.join("; ")
    )
}

/// Runs `f`, turning a panic into an error without printing the panic message.
fn without_panic_message<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(hook);
    result.map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

/// Loads the model (and, if present and wanted, the optimizer states) into freshly built ones.
pub fn load<B: AutodiffBackend>(
    path: &Path,
    model: LanguageModel<B>,
    optim: Option<&mut Optimizers<B>>,
    device: &B::Device,
) -> Result<(TrainState, LanguageModel<B>)> {
    let mut s = Sections::read(path)?;
    let state = s.state()?;
    let model = s.load_model(path, model, device)?;
    if let Some(o) = optim {
        let at = s.model_index() + 1;
        if s.parts.len() < at + 2 {
            bail!("checkpoint {} has no optimizer state; it cannot be resumed", path.display());
        }
        let rec = recorder();
        let misfit = |e: burn::record::RecorderError| {
            anyhow::anyhow!("checkpoint {}: optimizer state does not fit the model ({e})", path.display())
        };
        let decay = Recorder::<B>::load(&rec, std::mem::take(&mut s.parts[at]), device).map_err(misfit)?;
        let no_decay =
            Recorder::<B>::load(&rec, std::mem::take(&mut s.parts[at + 1]), device).map_err(misfit)?;
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
    Sections::read(path)?.load_model(path, model, device)
}

#[cfg(test)]
mod tests {
    use super::Sections;

    /// A version-2 file: a header, two sections and its checksum.
    fn file(sections: &[&[u8]]) -> Vec<u8> {
        let mut bytes = b"ARCHCKPT".to_vec();
        bytes.extend_from_slice(&2u32.to_le_bytes());
        for s in sections {
            bytes.extend_from_slice(&(s.len() as u64).to_le_bytes());
            bytes.extend_from_slice(s);
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn every_damaged_or_truncated_byte_is_caught() {
        let good = file(&[b"{}", b"[]", b"weights"]);
        assert!(Sections::parse(&good).is_ok());
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            assert!(Sections::parse(&bad).is_err(), "byte {i} flipped went unnoticed");
            assert!(Sections::parse(&good[..i]).is_err(), "truncated to {i} bytes went unnoticed");
        }
    }

    #[test]
    fn a_huge_section_length_is_an_error_not_an_overflow() {
        let mut bytes = b"ARCHCKPT".to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        bytes.extend_from_slice(b"x");
        let err = Sections::parse(&bytes).err().unwrap();
        assert!(err.contains("truncated section"), "{err}");
    }

    /// Damaged and crafted files are errors, never panics or overflows; also past the checksum
    /// (a crafted file can carry a right one).
    #[test]
    fn survives_mutated_files() {
        let valid = file(&[b"{}", b"[]", b"weights", b"a", b"b"]);
        for bytes in crate::util::mutate::mutants(&valid, 500, 3) {
            assert!(Sections::parse(&bytes).is_err() || bytes == valid);
            if bytes.len() >= 16 {
                let mut resealed = bytes[..bytes.len() - 4].to_vec();
                let crc = crc32fast::hash(&resealed);
                resealed.extend_from_slice(&crc.to_le_bytes());
                let _ = Sections::parse(&resealed);
            }
        }
    }
}
