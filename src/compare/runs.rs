//! A comparison's training runs as one numbered list, in the order their dependencies allow:
//! first every learning-rate grid trial (of every task and architecture), then every further
//! seed at its architecture's winning rate. A run's number is what `--run-index` takes and what
//! a Slurm array task is given; a local `compare` works through the same list, `--jobs` at a
//! time. Each run is an ordinary `train` run directory, trained in a process of its own
//! (`worker`) under its own lock, so any mix of local and scheduled runs writes each file once.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::plan::PlannedArch;
use super::results::{CurvePoint, LrTrial, SeedRun};
use super::spec::CompareSpec;
use super::worker;
use crate::device::Resolved;
use crate::train::metrics::{Record, Summary, read_records};
use crate::util::atomic;
use crate::with_backend;

/// One comparison, planned: a single comparison, or one task of a suite (`--tasks`).
#[derive(Clone, Debug)]
pub struct Unit {
    pub dir: PathBuf,
    pub spec: CompareSpec,
    pub budget: f64,
    pub archs: Vec<PlannedArch>,
}

/// Which part of the plan a run belongs to: the seeds need their architecture's grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Grid,
    Seeds,
}

/// One training run of the plan.
#[derive(Clone, Debug)]
pub struct Slot {
    pub index: usize,
    pub stage: Stage,
    pub unit: usize,
    pub arch: usize,
    pub seed: u64,
    /// The learning rate; `None`: the winner of the architecture's grid.
    pub lr: Option<f64>,
}

/// Every run of `units`, numbered: grid trials first (on each architecture's first seed), then
/// the remaining seeds. With a grid, the winning trial is the first seed's run, so the seeds
/// stage starts at the second seed.
pub fn slots(units: &[Unit]) -> Vec<Slot> {
    let mut out = Vec::new();
    let mut push = |stage, unit, arch, seed, lr| {
        out.push(Slot { index: out.len(), stage, unit, arch, seed, lr });
    };
    for (u, unit) in units.iter().enumerate() {
        for (a, arch) in unit.archs.iter().enumerate() {
            for &lr in &unit.spec.lr_grid {
                push(Stage::Grid, u, a, arch.cfg.train.seed, Some(lr));
            }
        }
    }
    for (u, unit) in units.iter().enumerate() {
        let grid = !unit.spec.lr_grid.is_empty();
        for (a, arch) in unit.archs.iter().enumerate() {
            for k in usize::from(grid)..unit.spec.seeds {
                let lr = if grid { None } else { Some(arch.cfg.train.lr) };
                push(Stage::Seeds, u, a, arch.cfg.train.seed + k as u64, lr);
            }
        }
    }
    out
}

/// The index range of each stage (empty stages left out), for the job arrays.
pub fn stage_ranges(slots: &[Slot]) -> Vec<(Stage, std::ops::Range<usize>)> {
    [Stage::Grid, Stage::Seeds]
        .into_iter()
        .filter_map(|stage| {
            let first = slots.iter().position(|s| s.stage == stage)?;
            let end = slots.iter().rposition(|s| s.stage == stage)? + 1;
            Some((stage, first..end))
        })
        .collect()
}

/// The directory of architecture `arch`'s run at `lr` and `seed`.
pub fn run_dir(unit: &Unit, arch: usize, lr: f64, seed: u64) -> PathBuf {
    let name = &unit.archs[arch].name;
    unit.dir.join("runs").join(format!("{arch:02}-{}", slug(name))).join(format!("lr{lr:e}-seed{seed}"))
}

/// A label as a folder name.
fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// Where a run stands.
#[derive(Clone, Debug, PartialEq)]
pub enum RunState {
    Finished,
    /// A live process holds its lock.
    Running(String),
    /// Started and stopped before its end (failed, killed, or its node lost): rerunning resumes
    /// it from its last checkpoint, if it wrote one.
    Stopped {
        checkpoint: bool,
    },
    NotStarted,
}

pub fn run_state(run_dir: &Path) -> RunState {
    if run_dir.join("summary.json").exists() {
        RunState::Finished
    } else if let Some(holder) = crate::util::lock::live_holder(run_dir) {
        RunState::Running(holder)
    } else if run_dir.exists() {
        RunState::Stopped { checkpoint: run_dir.join("last.ckpt").exists() }
    } else {
        RunState::NotStarted
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunState::Finished => write!(f, "finished"),
            RunState::Running(who) => write!(f, "running ({who})"),
            RunState::Stopped { checkpoint: true } => {
                write!(f, "stopped before its end (resumes from its checkpoint)")
            }
            RunState::Stopped { checkpoint: false } => write!(f, "stopped before its first checkpoint"),
            RunState::NotStarted => write!(f, "not started"),
        }
    }
}

/// What a slot is called in messages: `#3 dense seed 0, lr 3e-3` (the task first in a suite).
pub fn describe(units: &[Unit], slot: &Slot) -> String {
    let unit = &units[slot.unit];
    let task = if units.len() > 1 { format!("{}: ", task_name(unit)) } else { String::new() };
    let lr = slot.lr.map_or("the grid's winning lr".to_string(), |lr| format!("lr {lr:e}"));
    format!("#{} {task}{} seed {}, {lr}", slot.index, unit.archs[slot.arch].name, slot.seed)
}

fn task_name(unit: &Unit) -> String {
    unit.dir.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

/// The learning rate the seeds of architecture `arch` use: the configured one without a grid,
/// else the trial with the lowest loss on the held-out selection set (a winner picked on the
/// reported validation batches would be biased towards them). `Ok(Err(..))` names the grid
/// runs that have not finished; selection losses not yet computed are computed when a device
/// is given (`None`: such a trial counts as unfinished).
pub fn winner(
    units: &[Unit],
    unit: usize,
    arch: usize,
    device: Option<Resolved>,
) -> Result<Result<f64, Vec<String>>> {
    let u = &units[unit];
    let a = &u.archs[arch];
    if u.spec.lr_grid.is_empty() {
        return Ok(Ok(a.cfg.train.lr));
    }
    let (trials, missing) = grid_trials(units, unit, arch, device)?;
    if !missing.is_empty() {
        return Ok(Err(missing));
    }
    let best = trials
        .iter()
        .filter(|(t, _)| t.selection_loss.is_some_and(f64::is_finite))
        .min_by(|(x, _), (y, _)| x.selection_loss.unwrap().total_cmp(&y.selection_loss.unwrap()));
    match best {
        Some((t, _)) => Ok(Ok(t.lr)),
        None => bail!("every learning rate of the grid diverged for {} (NaN loss); try smaller ones", a.name),
    }
}

/// The grid trials of architecture `arch` that finished (with their runs), and the ones that
/// did not, described.
pub fn grid_trials(
    units: &[Unit],
    unit: usize,
    arch: usize,
    device: Option<Resolved>,
) -> Result<(Vec<(LrTrial, SeedRun)>, Vec<String>)> {
    let u = &units[unit];
    let seed = u.archs[arch].cfg.train.seed;
    let mut trials = Vec::new();
    let mut missing = Vec::new();
    for slot in slots(units).iter().filter(|s| s.stage == Stage::Grid && s.unit == unit && s.arch == arch) {
        let lr = slot.lr.expect("grid trials have their rate");
        let dir = run_dir(u, arch, lr, seed);
        let state = run_state(&dir);
        let selection = match (&state, device) {
            (RunState::Finished, Some(device)) => Some(selection_loss(&dir, device)?),
            (RunState::Finished, None) => cached_selection_loss(&dir),
            _ => None,
        };
        let Some(selection) = selection else {
            let state = match state {
                RunState::Finished => "finished, not yet scored on the selection set (finish it with its \
                                       --run-index or `compare --dir`)"
                    .to_string(),
                other => other.to_string(),
            };
            missing.push(format!("{}: {state}", describe(units, slot)));
            continue;
        };
        let run = finished_run(&u.dir, &dir, seed)?;
        let trial = LrTrial { lr, val_loss: run.summary.final_val_loss, selection_loss: Some(selection) };
        trials.push((trial, run));
    }
    Ok((trials, missing))
}

/// How runs are trained.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub device: Resolved,
    /// No progress bars.
    pub quiet: bool,
    /// Threads per run process (`None`: one per core), for runs sharing a CPU.
    pub threads: Option<usize>,
    /// Devices each run trains on in data parallel.
    pub devices: usize,
}

/// Trains `slot`'s run to its end, or keeps it when it already finished; a grid trial is then
/// scored on the selection set (in this process, so that the seeds that need it only read it). A run stopped after a checkpoint resumes; one stopped before
/// its first checkpoint starts over.
pub fn execute(units: &[Unit], slot: &Slot, opts: &RunOptions) -> Result<()> {
    let device = opts.device;
    let unit = &units[slot.unit];
    let arch = &unit.archs[slot.arch];
    let total = slots(units).len();
    let lr = match slot.lr {
        Some(lr) => lr,
        None => winner(units, slot.unit, slot.arch, Some(device))?.map_err(|missing| {
            anyhow::anyhow!(
                "run {} needs the learning-rate grid of {} to finish first; not finished: {}",
                describe(units, slot),
                arch.name,
                missing.join("; ")
            )
        })?,
    };
    let dir = run_dir(unit, slot.arch, lr, slot.seed);
    let head = format!("[{}/{total}] {} seed {}", slot.index + 1, arch.name, slot.seed);
    if dir.join("summary.json").exists() {
        eprintln!("{head}: finished earlier, kept");
    } else {
        let resume = dir.join("last.ckpt").exists();
        if !resume && dir.exists() && crate::util::lock::live_holder(&dir).is_none() {
            // Started but stopped before its first checkpoint: nothing worth keeping.
            std::fs::remove_dir_all(&dir)?;
        }
        eprintln!("{head}, lr {lr:e}{}", if resume { " (resuming)" } else { "" });
        let mut cfg = arch.cfg.clone();
        cfg.train.lr = lr;
        cfg.train.seed = slot.seed;
        // In a process of its own: its peak memory is then its own (see `worker`).
        worker::spawn_train_run(&cfg, &dir, opts, resume)?;
    }
    if slot.stage == Stage::Grid {
        selection_loss(&dir, device)?;
    }
    Ok(())
}

/// A finished run's result, its directory named relative to the comparison's.
pub fn finished_run(root: &Path, dir: &Path, seed: u64) -> Result<SeedRun> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path)?;
    let summary: Summary =
        serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))?;
    let curve = read_records(&dir.join("metrics.jsonl"))?
        .into_iter()
        .filter_map(|r| match r {
            Record::Eval { step, tokens, val_loss, .. } => Some(CurvePoint { step, tokens, val_loss }),
            _ => None,
        })
        .collect();
    let rel = dir.strip_prefix(root).unwrap_or(dir).display().to_string();
    Ok(SeedRun { seed, dir: rel, summary, curve })
}

#[derive(Serialize, Deserialize)]
struct Selection {
    #[serde(with = "crate::util::json_f64")]
    loss: f64,
}

/// The selection loss kept beside a run (`selection.json`), if it was computed.
fn cached_selection_loss(run_dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(run_dir.join("selection.json")).ok()?;
    serde_json::from_str::<Selection>(&text).ok().map(|s| s.loss)
}

/// The final model of the run in `run_dir` (`last.ckpt`) scored on the held-out selection
/// set ([`crate::data::stream::TrainData::selection`]); kept in `selection.json` beside it, so
/// that it is scored once.
fn selection_loss(run_dir: &Path, resolved: Resolved) -> Result<f64> {
    if let Some(kept) = cached_selection_loss(run_dir) {
        return Ok(kept);
    }
    let cfg = crate::config::RunConfig::load(&run_dir.join("config.toml"))?;
    let (t, b) = (cfg.train.seq_len, cfg.train.batch_size);
    let data = crate::data::stream::TrainData::open(&cfg.data, t)?;
    let batches = data.selection(cfg.eval.batches, b, t, cfg.data.corpus_seed)?;
    let on_gpu = resolved != Resolved::Cpu;
    let loss = with_backend!(resolved, |B, dev| {
        type I = <B as burn::tensor::backend::AutodiffBackend>::InnerBackend;
        let model = crate::train::checkpoint::load_model::<I>(run_dir, "last", &cfg, &dev, on_gpu)?;
        Ok::<f64, anyhow::Error>(crate::eval::evaluate(&model, &batches, None, &dev).loss)
    })?;
    atomic::write_json(&run_dir.join("selection.json"), &Selection { loss })?;
    Ok(loss)
}
