//! What a comparison is: the architectures (with their variants and sweeps), the budget, the
//! seeds, the LR grid and the shared overrides; from command-line flags and an optional TOML
//! experiment file. The resolved spec is saved as `DIR/compare.json`: rerunning on the same
//! directory continues it, and a different spec there is an error instead of a silent mix.
//!
//! ```toml
//! title = "Mamba state size at 1M parameters"
//! archs = ["dense"]                  # named architectures or patterns
//! size = "tiny"
//! match = "params"                   # params | active | flops | state
//! budget = "1M"
//! seeds = 3
//! steps = 600
//! lr_grid = [1e-3, 3e-3]
//! set = ["train.seq_len=256"]        # shared by every run
//! bench_seq_lens = [128, 512]
//! tasks = ["mqar", "parity"]         # optional: one comparison per task, one overview
//!
//! [[variant]]                        # an architecture with its own overrides
//! name = "mamba-wide-conv"
//! arch = "mamba"
//! set = ["model.mamba.d_conv=8"]
//!
//! [[sweep]]                          # one variant per value
//! arch = "mamba"
//! key = "model.mamba.d_state"
//! values = [8, 16, 32, 64]
//!
//! [slurm]                            # job settings of `--emit slurm` (flags win)
//! partition = "gpu"
//! time = "2:00:00"
//! gpus = 1
//! lines = ["--qos=normal"]
//! ```

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::arch::DEFAULT_ARCHS;
use super::sizing::{MatchBy, parse_budget};
use crate::device::DeviceArg;

/// The default workload of `archlab compare` (no `--steps`, no experiment file): small
/// enough that the default four architectures × 3 seeds finish in under 10 minutes on a
/// 2-core CPU. It is a smoke-sized comparison; the report says how many tokens each model saw.
pub const DEFAULT_STEPS: usize = 40;
pub const DEFAULT_SEEDS: usize = 3;
/// The default budget when neither `--budget` nor an experiment gives one at size `tiny`:
/// a quarter-million active parameters (d_model ≈ 64), so that the default finishes in time.
pub const DEFAULT_TINY_BUDGET: f64 = 250e3;
/// Default sequence lengths of the scaling measurement in the report (at size `tiny`).
pub const DEFAULT_BENCH_SEQ_LENS: &[usize] = &[64, 256];

/// Which architectures, at which size, matched how: what `compare` and `bench` share (their
/// flags; `None` and empty fields take the defaults).
#[derive(Clone, Debug, Default)]
pub struct ArchSelection {
    /// Named architectures (`compare::arch`) or layer patterns; empty: [`DEFAULT_ARCHS`].
    pub archs: Vec<String>,
    /// The preset size they start from (`tiny` or `27m`).
    pub size: Option<String>,
    /// `params`, `active`, `flops` or `state`.
    pub match_by: Option<String>,
    /// The budget, e.g. `25M`.
    pub budget: Option<String>,
    /// Config overrides applied to every architecture.
    pub sets: Vec<String>,
    pub device: DeviceArg,
    /// `auto`, `bf16` or `f32`.
    pub precision: Option<String>,
}

/// What a user asks `compare` for (its flags, over an optional experiment file).
#[derive(Clone, Debug, Default)]
pub struct CompareRequest {
    pub arch: ArchSelection,
    /// A TOML experiment file; explicit fields here win over it.
    pub experiment: Option<std::path::PathBuf>,
    pub seeds: Option<usize>,
    /// Learning rates tried on the first seed; empty: the config's.
    pub lr_grid: Vec<f64>,
    /// Optimizer steps per run.
    pub steps: Option<usize>,
    /// Sequence lengths of the report's scaling measurement (`Some(vec![])`: none).
    pub bench_seq_lens: Option<Vec<usize>>,
    /// Synthetic tasks (`mqar`, `parity`, …) to run the comparison on, each into a directory
    /// of its own, with one overview report; empty: the experiment file's, or the config's data.
    pub tasks: Vec<String>,
    /// The comparison directory (default: `runs/compare-<time>`).
    pub dir: Option<std::path::PathBuf>,
    /// No progress bars.
    pub quiet: bool,
    /// Runs trained at once on this machine, each in its own process (at least 1).
    pub jobs: usize,
    /// Devices each run trains on in data parallel (at least 1).
    pub devices: usize,
    /// Train only run N of the plan in `dir` (a Slurm array task, or by hand).
    pub run_index: Option<usize>,
    /// Only the end: the scaling measurement, samples and report, once every run finished.
    pub finish: bool,
    /// Write the plan and scripts that run it on a scheduler instead of training.
    pub emit: Option<Emit>,
    /// Job settings of `--emit slurm` given as flags (over the experiment's `[slurm]`).
    pub slurm: SlurmOptions,
}

/// What `--emit` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emit {
    /// `sbatch` scripts: job arrays chained by their dependencies (`compare::slurm`).
    Slurm,
}

impl Emit {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "slurm" => Ok(Emit::Slurm),
            other => bail!("--emit {other}: the scheduler archlab writes scripts for is `slurm`"),
        }
    }
}

/// The `#SBATCH` settings of every job of a comparison (`None`: the cluster's default).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub account: Option<String>,
    /// The time limit of one run's task, in Slurm's format (`2:00:00`, `1-00:00:00`).
    pub time: Option<String>,
    /// GPUs per task (`--gpus-per-task`).
    pub gpus: Option<usize>,
    /// CPU cores per task (`--cpus-per-task`).
    pub cpus: Option<usize>,
    /// Memory per task (`--mem`, e.g. `32G`).
    pub mem: Option<String>,
    /// Further `#SBATCH` lines, without the prefix (`--qos=high`, `--constraint=a100`).
    #[serde(default)]
    pub lines: Vec<String>,
}

impl SlurmOptions {
    /// These settings over `base` (each one given here wins; lines add up).
    fn over(self, base: SlurmOptions) -> SlurmOptions {
        SlurmOptions {
            partition: self.partition.or(base.partition),
            account: self.account.or(base.account),
            time: self.time.or(base.time),
            gpus: self.gpus.or(base.gpus),
            cpus: self.cpus.or(base.cpus),
            mem: self.mem.or(base.mem),
            lines: base.lines.into_iter().chain(self.lines).collect(),
        }
    }
}

impl CompareRequest {
    /// Whether the request says what to compare (anything beyond where and how to run it).
    /// One that does not, on a directory that holds a comparison, continues that comparison.
    pub fn names_a_plan(&self) -> bool {
        let a = &self.arch;
        !a.archs.is_empty()
            || a.size.is_some()
            || a.match_by.is_some()
            || a.budget.is_some()
            || !a.sets.is_empty()
            || a.precision.is_some()
            || self.experiment.is_some()
            || self.seeds.is_some()
            || !self.lr_grid.is_empty()
            || self.steps.is_some()
            || self.bench_seq_lens.is_some()
            || !self.tasks.is_empty()
    }

    /// The Slurm job settings: the flags over the experiment file's `[slurm]` section.
    pub fn slurm_options(&self) -> Result<SlurmOptions> {
        let file = match &self.experiment {
            Some(path) => read_experiment(path)?.slurm.unwrap_or_default(),
            None => SlurmOptions::default(),
        };
        Ok(self.slurm.clone().over(file))
    }
}

/// One architecture of a comparison: a named architecture or pattern, plus its own overrides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArchSpec {
    /// The label in tables and plots.
    pub label: String,
    /// The architecture (`compare::arch`) it starts from.
    pub arch: String,
    /// Its own overrides, applied after the shared ones.
    pub sets: Vec<String>,
}

/// A fully resolved comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompareSpec {
    pub title: String,
    pub archs: Vec<ArchSpec>,
    pub size: String,
    pub match_by: String,
    /// `None`: the dense architecture's own value at `size`.
    pub budget: Option<f64>,
    pub seeds: usize,
    pub lr_grid: Vec<f64>,
    /// Overrides shared by every run (`--set`, the experiment's `set`, `--steps`).
    pub sets: Vec<String>,
    pub bench_seq_lens: Vec<usize>,
    pub precision: Option<String>,
    /// A task suite: the comparison runs once per task (`task:<name>` as the data source),
    /// each in `DIR/<name>/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tasks: Vec<String>,
}

/// The experiment file's format (see the module docs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentFile {
    title: Option<String>,
    #[serde(default)]
    archs: Vec<String>,
    size: Option<String>,
    #[serde(rename = "match")]
    match_by: Option<String>,
    budget: Option<toml::Value>,
    seeds: Option<usize>,
    steps: Option<usize>,
    #[serde(default)]
    lr_grid: Vec<f64>,
    #[serde(default)]
    set: Vec<String>,
    bench_seq_lens: Option<Vec<usize>>,
    #[serde(default)]
    tasks: Vec<String>,
    #[serde(default)]
    variant: Vec<VariantEntry>,
    #[serde(default)]
    sweep: Vec<SweepEntry>,
    /// Job settings for `--emit slurm`.
    slurm: Option<SlurmOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantEntry {
    name: String,
    arch: String,
    #[serde(default)]
    set: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepEntry {
    arch: String,
    key: String,
    values: Vec<toml::Value>,
}

impl CompareSpec {
    /// Flags over the experiment file over the defaults.
    pub fn from_request(args: &CompareRequest) -> Result<Self> {
        let file = match &args.experiment {
            Some(path) => read_experiment(path)?,
            None => ExperimentFile::default(),
        };
        let size = args.arch.size.clone().or(file.size).unwrap_or_else(|| "tiny".into());
        let match_by = args.arch.match_by.clone().or(file.match_by).unwrap_or_else(|| "active".into());
        MatchBy::parse(&match_by)?;
        let budget = match (&args.arch.budget, &file.budget) {
            (Some(b), _) => Some(parse_budget(b)?),
            (None, Some(toml::Value::String(b))) => Some(parse_budget(b)?),
            (None, Some(toml::Value::Integer(b))) => Some(parse_budget(&b.to_string())?),
            (None, Some(toml::Value::Float(b))) => Some(parse_budget(&b.to_string())?),
            (None, Some(other)) => bail!("budget = {other} in the experiment file: write it like \"25M\""),
            (None, None) => None,
        };
        let is_default_run = args.experiment.is_none() && args.steps.is_none();
        let budget = match budget {
            None if is_default_run && size == "tiny" && match_by == "active" => Some(DEFAULT_TINY_BUDGET),
            b => b,
        };

        let mut archs: Vec<ArchSpec> = Vec::new();
        let names = if !args.arch.archs.is_empty() { args.arch.archs.clone() } else { file.archs.clone() };
        for name in &names {
            archs.push(ArchSpec { label: name.clone(), arch: name.clone(), sets: vec![] });
        }
        if args.arch.archs.is_empty() {
            for v in &file.variant {
                archs.push(ArchSpec { label: v.name.clone(), arch: v.arch.clone(), sets: v.set.clone() });
            }
            for s in &file.sweep {
                if s.values.is_empty() {
                    bail!("sweep over {} has no values; list them as values = [...]", s.key);
                }
                let short = s.key.rsplit('.').next().unwrap_or(&s.key);
                for value in &s.values {
                    archs.push(ArchSpec {
                        label: format!("{} {short}={value}", s.arch),
                        arch: s.arch.clone(),
                        sets: vec![format!("{}={value}", s.key)],
                    });
                }
            }
        }
        if archs.is_empty() {
            archs = DEFAULT_ARCHS
                .iter()
                .map(|n| ArchSpec { label: n.to_string(), arch: n.to_string(), sets: vec![] })
                .collect();
        }
        let mut seen = std::collections::HashSet::new();
        for a in &archs {
            if !seen.insert(a.label.clone()) {
                bail!("architecture `{}` is listed twice; give each a distinct name", a.label);
            }
        }

        let mut sets = file.set.clone();
        sets.extend(args.arch.sets.iter().cloned());
        let steps = args.steps.or(file.steps).or(is_default_run.then_some(DEFAULT_STEPS));
        if let Some(steps) = steps {
            if steps == 0 {
                bail!("--steps must be at least 1");
            }
            sets.push(format!("train.max_steps={steps}"));
            if is_default_run {
                // Evaluate often enough to draw a curve, on a few batches to keep it cheap.
                sets.extend([
                    "eval.every=10".to_string(),
                    "eval.batches=4".into(),
                    "train.warmup_steps=10".into(),
                ]);
            }
        }
        let seeds = args.seeds.or(file.seeds).unwrap_or(DEFAULT_SEEDS);
        if seeds == 0 {
            bail!("--seeds must be at least 1 (3 or more for confidence intervals)");
        }
        let lr_grid = if !args.lr_grid.is_empty() { args.lr_grid.clone() } else { file.lr_grid };
        if let Some(bad) = lr_grid.iter().find(|lr| !(**lr > 0.0 && lr.is_finite())) {
            bail!("--lr-grid has {bad}; learning rates must be positive");
        }
        let tasks = task_suite(if args.tasks.is_empty() { &file.tasks } else { &args.tasks }, &sets)?;
        let bench_seq_lens = match (&args.bench_seq_lens, file.bench_seq_lens) {
            (Some(v), _) => v.clone(),
            (None, Some(v)) => v,
            // A task suite measures no throughput unless asked: the tasks share the models.
            (None, None) if size == "tiny" && tasks.is_empty() => DEFAULT_BENCH_SEQ_LENS.to_vec(),
            (None, None) => vec![],
        };
        if bench_seq_lens.contains(&0) {
            bail!("--bench-seq-lens must be positive");
        }
        let title = file.title.unwrap_or_else(|| {
            format!("{} at {}", archs.iter().map(|a| a.label.as_str()).collect::<Vec<_>>().join(" vs "), size)
        });
        Ok(Self {
            title,
            archs,
            size,
            match_by,
            budget,
            seeds,
            lr_grid,
            sets,
            bench_seq_lens,
            precision: args.arch.precision.clone(),
            tasks,
        })
    }

    /// The comparison of a task suite on one of its tasks: the same architectures and
    /// settings, `task:<task>` as the data source.
    pub fn for_task(&self, task: &str) -> CompareSpec {
        let mut sets = self.sets.clone();
        sets.push(format!("data.source=\"task:{task}\""));
        CompareSpec {
            title: format!("{} — task:{task}", self.title),
            sets,
            tasks: Vec::new(),
            ..self.clone()
        }
    }

    /// The overrides of one architecture's runs: the shared ones, then its own.
    pub fn sets_for(&self, arch: &ArchSpec) -> Vec<String> {
        let mut sets = self.sets.clone();
        if let Some(p) = &self.precision {
            sets.push(format!("train.precision={p}"));
        }
        sets.extend(arch.sets.iter().cloned());
        sets
    }
}

fn read_experiment(path: &Path) -> Result<ExperimentFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read experiment file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("experiment file {}: {}", path.display(), e.to_string().trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    fn experiment(path: &std::path::Path) -> CompareRequest {
        CompareRequest { experiment: Some(path.to_path_buf()), ..Default::default() }
    }

    #[test]
    fn no_arguments_is_the_default_comparison() {
        let s = CompareSpec::from_request(&CompareRequest::default()).unwrap();
        let names: Vec<&str> = s.archs.iter().map(|a| a.arch.as_str()).collect();
        assert_eq!(names, DEFAULT_ARCHS);
        assert_eq!((s.seeds, s.budget, s.size.as_str()), (DEFAULT_SEEDS, Some(DEFAULT_TINY_BUDGET), "tiny"));
        assert!(s.sets.contains(&format!("train.max_steps={DEFAULT_STEPS}")));
    }

    #[test]
    fn experiment_files_expand_sweeps_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("archlab-spec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("e.toml");
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/mamba-state-size.toml");
        std::fs::copy(file, &path).unwrap();
        let s = CompareSpec::from_request(&experiment(&path)).unwrap();
        let labels: Vec<&str> = s.archs.iter().map(|a| a.label.as_str()).collect();
        assert_eq!(labels, ["dense", "mamba d_state=4", "mamba d_state=16", "mamba d_state=64"]);
        assert_eq!(s.archs[1].sets, ["model.mamba.d_state=4"]);
        assert_eq!((s.budget, s.seeds, s.match_by.as_str()), (Some(1e6), 3, "params"));
        assert_eq!(s.lr_grid, [1e-3, 3e-3]);
        let mut flags = experiment(&path);
        flags.seeds = Some(5);
        flags.arch.budget = Some("2M".into());
        let s = CompareSpec::from_request(&flags).unwrap();
        assert_eq!((s.budget, s.seeds), (Some(2e6), 5));

        std::fs::write(&path, "archs = [\"dense\"]\nbugdet = \"1M\"\n").unwrap();
        let err = CompareSpec::from_request(&experiment(&path)).unwrap_err();
        assert!(format!("{err:#}").contains("bugdet"), "{err:#}");
    }

    /// Every committed experiment file parses and every architecture in it resolves, is sized
    /// to its budget and validates (a typo in a file is caught here, not hours into a run).
    #[test]
    fn every_experiment_file_plans() {
        use super::super::{plan, sizing::MatchBy};
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments");
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        files.sort();
        assert!(files.len() >= 7, "{files:?}");
        for path in files {
            let s = CompareSpec::from_request(&experiment(&path)).unwrap();
            let by = MatchBy::parse(&s.match_by).unwrap();
            let budget = match s.budget {
                Some(b) => b,
                None => plan::default_budget(&s.size, &s.sets, by).unwrap(),
            };
            for a in &s.archs {
                plan::plan_one(&a.label, &a.arch, &s.size, &s.sets_for(a), by, budget)
                    .unwrap_or_else(|e| panic!("{}: {}: {e:#}", path.display(), a.label));
            }
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        let selection = |archs: &[&str], budget: Option<&str>| ArchSelection {
            archs: archs.iter().map(|s| s.to_string()).collect(),
            budget: budget.map(String::from),
            ..Default::default()
        };
        for bad in [
            CompareRequest { seeds: Some(0), ..Default::default() },
            CompareRequest { arch: selection(&[], Some("lots")), ..Default::default() },
            CompareRequest { lr_grid: vec![0.001, -1.0], ..Default::default() },
            CompareRequest { arch: selection(&["dense", "dense"], None), ..Default::default() },
        ] {
            assert!(CompareSpec::from_request(&bad).is_err(), "{bad:?}");
        }
    }
}

/// A task suite's names, without the `task:` prefix; refused beside a `data.source` override
/// (each task is the data source of its comparison) or with a task listed twice. Unknown
/// names are refused when the comparisons are planned, with the list of known tasks.
fn task_suite(names: &[String], sets: &[String]) -> Result<Vec<String>> {
    let tasks: Vec<String> = names.iter().map(|t| t.trim().trim_start_matches("task:").to_string()).collect();
    if tasks.is_empty() {
        return Ok(tasks);
    }
    if let Some(set) = sets.iter().find(|s| s.trim_start().starts_with("data.source")) {
        bail!("--tasks makes each task the data source of its comparison; drop `{set}`");
    }
    let mut seen = std::collections::HashSet::new();
    for t in &tasks {
        if t.is_empty() {
            bail!("--tasks has an empty name; list tasks as e.g. --tasks mqar,parity");
        }
        if !seen.insert(t) {
            bail!("task `{t}` is listed twice in --tasks");
        }
    }
    Ok(tasks)
}
