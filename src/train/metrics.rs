//! Run records: append-only `metrics.jsonl` (one JSON object per line, llm.c `main.log`
//! style) and the final `summary.json`.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::mixer::Diagnostic;
use crate::model::moe::RoutingStats;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Train {
        step: usize,
        #[serde(with = "crate::util::json_f64")]
        loss: f64,
        #[serde(with = "crate::util::json_f64")]
        lr: f64,
        #[serde(with = "crate::util::json_f64")]
        grad_norm: f64,
        #[serde(with = "crate::util::json_f64")]
        tokens_per_s: f64,
        tokens: u64,
        #[serde(with = "crate::util::json_f64")]
        elapsed_s: f64,
        /// The step was skipped because its loss or gradient was not finite.
        skipped: bool,
        /// The MoE auxiliary loss (weighted, as added to the objective); `loss` is the
        /// cross-entropy alone, comparable with models without MoE.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::util::json_opt_f64")]
        aux_loss: Option<f64>,
        /// Expert load of each MoE layer on this step's tokens.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        moe: Vec<ExpertLoad>,
        /// What each layer's mixer reports about itself after this step (e.g. Hymba's branch
        /// scales against their initial value).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        diagnostics: Vec<Diagnostic>,
    },
    Eval {
        step: usize,
        #[serde(with = "crate::util::json_f64")]
        val_loss: f64,
        #[serde(with = "crate::util::json_f64")]
        val_ppl: f64,
        #[serde(with = "crate::util::json_f64")]
        val_bpb: f64,
        /// Synthetic tasks: accuracy on the held-out answers.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::util::json_opt_f64")]
        val_accuracy: Option<f64>,
        tokens: u64,
        #[serde(with = "crate::util::json_f64")]
        elapsed_s: f64,
    },
}

impl Record {
    pub fn step(&self) -> usize {
        match self {
            Record::Train { step, .. } | Record::Eval { step, .. } => *step,
        }
    }
}

pub struct MetricsLog {
    file: File,
}

impl MetricsLog {
    /// Opens `path` for appending. When resuming at `resume_step`, records of steps at or after
    /// it (written after the checkpoint by the interrupted process) are dropped first, so the
    /// log reads as one uninterrupted run.
    pub fn open(path: &Path, resume_step: Option<usize>) -> Result<Self> {
        if let Some(k) = resume_step {
            let kept: Vec<String> = read_records(path)?
                .into_iter()
                .filter(|r| r.step() < k)
                .map(|r| serde_json::to_string(&r).expect("records serialise"))
                .collect();
            let mut text = kept.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            crate::util::atomic::write(path, text.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self { file })
    }

    pub fn write(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.flush()?;
        Ok(())
    }
}

/// All records of a run's `metrics.jsonl` (a missing file has none; a torn last line from a
/// killed process is ignored).
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let reader = BufReader::new(File::open(path)?);
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line?;
        if let Ok(r) = serde_json::from_str::<Record>(&line) {
            out.push(r);
        }
    }
    Ok(out)
}

/// One MoE layer's routing over some tokens (a step's in `metrics.jsonl`, the whole run's in
/// `summary.json`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExpertLoad {
    pub layer: usize,
    pub tokens: u64,
    /// Fraction of routed (token, expert) assignments per expert; 1/E each when even.
    pub load: Vec<f64>,
    /// Entropy of `load` over ln E: 1 for an even load, 0 when one expert takes everything.
    #[serde(with = "crate::util::json_f64")]
    pub load_entropy: f64,
    /// Fraction of assignments dropped by the capacity limit.
    #[serde(with = "crate::util::json_f64")]
    pub dropped_fraction: f64,
    pub dropped: u64,
    /// Mean unweighted balancing loss (k when even) and z-loss.
    #[serde(with = "crate::util::json_f64")]
    pub balance_loss: f64,
    #[serde(with = "crate::util::json_f64")]
    pub z_loss: f64,
}

impl ExpertLoad {
    pub fn new(layer: usize, stats: &RoutingStats) -> Self {
        Self {
            layer,
            tokens: stats.tokens,
            load: stats.load(),
            load_entropy: stats.load_entropy(),
            dropped_fraction: stats.dropped_fraction(),
            dropped: stats.dropped,
            balance_loss: stats.mean_balance_loss(),
            z_loss: stats.mean_z_loss(),
        }
    }

    pub fn all(routing: &[(usize, RoutingStats)]) -> Vec<Self> {
        routing.iter().map(|(layer, s)| Self::new(*layer, s)).collect()
    }
}

/// Adds `more` (per-layer stats) into `total`, layer by layer.
pub fn merge_routing(total: &mut Vec<(usize, RoutingStats)>, more: &[(usize, RoutingStats)]) {
    for (layer, stats) in more {
        match total.iter_mut().find(|(l, _)| l == layer) {
            Some((_, t)) => t.merge(stats),
            None => total.push((*layer, stats.clone())),
        }
    }
}

/// The result of a run, written as `summary.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    #[serde(with = "crate::util::json_f64")]
    pub final_val_loss: f64,
    #[serde(with = "crate::util::json_f64")]
    pub final_val_ppl: f64,
    #[serde(with = "crate::util::json_f64")]
    pub final_val_bpb: f64,
    #[serde(with = "crate::util::json_f64")]
    pub best_val_loss: f64,
    pub best_step: usize,
    pub steps: usize,
    pub tokens_seen: u64,
    pub params_total: usize,
    pub params_non_embedding: usize,
    pub params_embedding: usize,
    /// Parameters a token uses (`params_total` minus the experts it is not routed to).
    #[serde(default)]
    pub params_active: usize,
    #[serde(with = "crate::util::json_f64")]
    pub train_flops_per_token: f64,
    #[serde(with = "crate::util::json_f64")]
    pub wall_time_s: f64,
    /// Mean training throughput, excluding the first steps (compilation, autotuning, caches).
    #[serde(with = "crate::util::json_f64")]
    pub steady_tokens_per_s: f64,
    /// Time of the excluded warm-up steps.
    #[serde(with = "crate::util::json_f64")]
    pub warmup_time_s: f64,
    /// Peak resident memory of the process (CPU) or peak device memory (GPU), in bytes.
    pub peak_memory_bytes: u64,
    pub peak_memory_kind: String,
    pub nan_skips: usize,
    pub device: String,
    pub precision: String,
    /// Expert load of each MoE layer over the whole training run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moe: Vec<ExpertLoad>,
    /// What each layer's mixer reports about itself at the end
    /// ([`crate::model::mixer::SequenceMixer::diagnostics`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
    /// Hymba's branch scales as summaries written before `diagnostics` held them; read only
    /// (see [`Summary::all_diagnostics`]).
    #[serde(default, rename = "hymba", skip_serializing)]
    pub legacy_hymba: Vec<LegacyBranchScales>,
    /// Synthetic tasks only: accuracy on the answer tokens of the held-out sequences.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::util::json_opt_f64")]
    pub final_val_accuracy: Option<f64>,
    /// Synthetic tasks only: held-out accuracy at the training length and longer ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub length_accuracy: Vec<LengthAccuracy>,
    /// The causality / time-mixing probe of every layer on the final weights.
    #[serde(default)]
    pub health: Vec<crate::eval::health::LayerHealth>,
}

impl Summary {
    /// `diagnostics`, with the Hymba branch scales of an older summary converted into them.
    pub fn all_diagnostics(&self) -> Vec<Diagnostic> {
        let legacy = self.legacy_hymba.iter().flat_map(|s| {
            let entry = |name: &str, value: f64, init: Option<f64>| Diagnostic {
                layer: s.layer,
                mixer: "hymba".into(),
                name: name.into(),
                value,
                init,
            };
            [
                entry("attention β", s.attn_mean, Some(s.init)),
                entry("SSM β", s.ssm_mean, Some(s.init)),
                entry("attention |Δβ|", s.attn_mean_abs_change, None),
                entry("SSM |Δβ|", s.ssm_mean_abs_change, None),
            ]
        });
        self.diagnostics.iter().cloned().chain(legacy).collect()
    }
}

/// A Hymba layer's branch scales as older summaries recorded them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LegacyBranchScales {
    pub layer: usize,
    pub init: f64,
    pub attn_mean: f64,
    pub ssm_mean: f64,
    pub attn_mean_abs_change: f64,
    pub ssm_mean_abs_change: f64,
}

/// Held-out accuracy of a synthetic task at one sequence length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LengthAccuracy {
    pub seq_len: usize,
    /// Fraction of answer tokens predicted exactly (argmax).
    #[serde(with = "crate::util::json_f64")]
    pub token_accuracy: f64,
    /// Fraction of sequences whose answer tokens are all right.
    #[serde(with = "crate::util::json_f64")]
    pub sequence_accuracy: f64,
}

/// Resets the peak resident set size to the current one (Linux: writing 5 to
/// `/proc/self/clear_refs`), so that each of several runs in one process (a comparison)
/// reports its own peak. Elsewhere it does nothing, and peaks accumulate.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set size of this process (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
