//! Run records: append-only `metrics.jsonl` (one JSON object per line, llm.c `main.log`
//! style) and the final `summary.json`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::model::hymba::scale_diagnostics;
use crate::model::mixer::Diagnostic;
use crate::model::moe::{RoutingStats, routing_diagnostics};

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
        /// What each layer's mixers report about themselves after this step: Hymba's branch
        /// scales against their initial value, an MoE layer's expert loads on this step's
        /// tokens, … ([`Diagnostic`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        diagnostics: Vec<Diagnostic>,
        /// The MoE layers' expert loads as older versions recorded them; read only.
        #[serde(default, rename = "moe", skip_serializing)]
        legacy_moe: Vec<ExpertLoad>,
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
    path: std::path::PathBuf,
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
        Ok(Self { file, path: path.to_path_buf() })
    }

    pub fn write(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        let written = self.file.write_all(line.as_bytes()).and_then(|()| self.file.flush());
        written.map_err(|e| crate::util::atomic::write_error(&self.path, e))
    }
}

/// All records of a run's `metrics.jsonl` (a missing file has none). A torn last line (no
/// newline after it: a process killed while writing it) is left out; any other line that is
/// not a record is an error naming it, never skipped without a word.
pub fn read_records(path: &Path) -> Result<Vec<Record>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    let mut out = Vec::new();
    for (i, line) in complete.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let record = serde_json::from_str::<Record>(line).with_context(|| {
            format!(
                "{} line {} is not a metrics record (was the file edited or damaged?)",
                path.display(),
                i + 1
            )
        })?;
        out.push(record);
    }
    Ok(out)
}

/// One MoE layer's routing as older versions recorded it (`moe` in `metrics.jsonl` and
/// `summary.json`); read only, converted into [`Diagnostic`]s.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ExpertLoad {
    pub layer: usize,
    pub tokens: u64,
    pub load: Vec<f64>,
    #[serde(with = "crate::util::json_f64")]
    pub load_entropy: f64,
    #[serde(with = "crate::util::json_f64")]
    pub dropped_fraction: f64,
    pub dropped: u64,
    #[serde(with = "crate::util::json_f64")]
    pub balance_loss: f64,
    #[serde(with = "crate::util::json_f64")]
    pub z_loss: f64,
}

impl ExpertLoad {
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let losses = [self.balance_loss, self.z_loss];
        routing_diagnostics(self.layer, &self.load, self.load_entropy, self.dropped_fraction, losses)
    }
}

/// Every MoE layer's routing stats as diagnostics.
pub fn routing_diagnostics_all(routing: &[(usize, RoutingStats)]) -> Vec<Diagnostic> {
    routing.iter().flat_map(|(layer, stats)| stats.diagnostics(*layer)).collect()
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
    /// What each layer's mixers report about themselves at the end ([`Diagnostic`]): the
    /// sequence mixers' from their final weights, an MoE layer's expert loads over the whole
    /// training run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
    /// The MoE layers' expert loads as summaries written before `diagnostics` held them; read
    /// only (see [`Summary::all_diagnostics`]).
    #[serde(default, rename = "moe", skip_serializing)]
    pub legacy_moe: Vec<ExpertLoad>,
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
    /// A fine-tune's parent checkpoint (`train --init-from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
}

impl Summary {
    /// `diagnostics`, with the Hymba branch scales and MoE expert loads of an older summary
    /// converted into them.
    pub fn all_diagnostics(&self) -> Vec<Diagnostic> {
        let hymba = self.legacy_hymba.iter().flat_map(|s| {
            let change = [s.attn_mean_abs_change, s.ssm_mean_abs_change];
            scale_diagnostics(s.layer, s.init, [s.attn_mean, s.ssm_mean], change)
        });
        let moe = self.legacy_moe.iter().flat_map(ExpertLoad::diagnostics);
        self.diagnostics.iter().cloned().chain(hymba).chain(moe).collect()
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
    /// The token accuracy of uniform guessing among the answer's possible ids; `None` in
    /// summaries written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "crate::util::json_opt_f64")]
    pub chance: Option<f64>,
    /// Whether this is the length the model was trained at (the first entry of newer summaries).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trained: bool,
}

/// Peak resident set size of this process (Linux `VmHWM`), if known: a run's own when it has
/// the process to itself (`compare` trains each run in a process of its own).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval_line(step: usize) -> String {
        let r = Record::Eval {
            step,
            val_loss: 2.0,
            val_ppl: 7.4,
            val_bpb: 1.1,
            val_accuracy: None,
            tokens: 10,
            elapsed_s: 1.0,
        };
        serde_json::to_string(&r).unwrap()
    }

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("archlab-metrics-{name}-{}.jsonl", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_torn_last_line_is_left_out() {
        let torn = &eval_line(2)[..20];
        let path = file("torn", &format!("{}\n{}\n{torn}", eval_line(0), eval_line(1)));
        let steps: Vec<usize> = read_records(&path).unwrap().iter().map(Record::step).collect();
        assert_eq!(steps, [0, 1]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_damaged_line_is_an_error_that_names_it() {
        let path =
            file("damaged", &format!("{}\n{{\"kind\":\"eval\",\"st\n{}\n", eval_line(0), eval_line(2)));
        let err = format!("{:#}", read_records(&path).unwrap_err());
        assert!(err.contains("line 2 is not a metrics record"), "{err}");
        std::fs::remove_file(path).unwrap();
    }
}
