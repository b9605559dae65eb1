//! `archlab compare`: fair side-by-side training of several architectures.
//!
//! The protocol (docs/comparing.md; how the code enforces it: docs/ARCHITECTURE.md, "Comparisons"):
//! 1. every architecture starts from the same size's dense preset and is sized to one budget
//!    (`sizing`), so data, tokenizer, optimizer, schedule, tokens and batch are identical;
//! 2. seed k gives every architecture the same data order (the batcher is a pure function of
//!    the seed), so per-seed differences are paired;
//! 3. an optional LR grid is searched per architecture on the first seed, and the winner is
//!    used for every seed (SSMs and attention do not share a best LR);
//! 4. each run is an ordinary `train` run directory under `DIR/runs/`, trained in a process
//!    of its own (`worker`: its peak memory is its own); a finished run (its `summary.json`)
//!    is never redone, a started one resumes from its checkpoint, so an interrupted comparison
//!    continues where it stopped;
//! 5. `results.json` collects everything; `report` draws it.

pub mod arch;
pub mod plan;
pub mod results;
pub mod sizing;
pub mod spec;
pub mod stats;
pub mod worker;

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::device::{self, Resolved};
use crate::train::metrics::{Record, Summary, read_records};
use crate::train::{self, human, human_bytes};
use crate::util::atomic;
use crate::with_backend;
use plan::PlannedArch;
use results::{ArchResult, ComparisonResults, CurvePoint, LrTrial, SeedRun};
use sizing::MatchBy;
use spec::CompareSpec;
pub use spec::{ArchSelection, CompareRequest};

/// The prompt of the text samples in the report (the built-in corpus is stories).
const SAMPLE_PROMPT: &str = "Once upon a time";
const SAMPLE_TOKENS: usize = 160;

pub fn run(args: CompareRequest) -> Result<()> {
    let spec = CompareSpec::from_request(&args)?;
    let dir = args.dir.clone().unwrap_or_else(|| train::default_run_dir("compare"));
    if spec.tasks.is_empty() {
        let planned = plan(&spec)?;
        run_comparison(&spec, planned, &dir, &args)?;
        return Ok(());
    }
    // A task suite: every task's comparison is planned (and a bad task name refused) before
    // any training, then each runs in its own directory, resumable as any comparison.
    let suite: Vec<(&String, CompareSpec)> = spec.tasks.iter().map(|t| (t, spec.for_task(t))).collect();
    let plans = suite.iter().map(|(_, s)| plan(s)).collect::<Result<Vec<_>>>()?;
    let _lock = crate::util::lock::DirLock::acquire(&dir, "compare")?;
    claim_dir(&dir, &spec)?;
    let mut results = Vec::new();
    for ((task, task_spec), planned) in suite.into_iter().zip(plans) {
        eprintln!("task:{task}");
        results.push((task.clone(), run_comparison(&task_spec, planned, &dir.join(task), &args)?));
    }
    let files = crate::report::write_suite(&dir, &spec.title, &results)?;
    print!("{}", crate::report::suite_table(&results));
    for f in files {
        println!("report: {}", f.display());
    }
    Ok(())
}

/// Resolves and sizes every architecture of `spec`, before any training: a bad name, task or
/// budget fails now.
fn plan(spec: &CompareSpec) -> Result<(f64, Vec<PlannedArch>)> {
    let by = MatchBy::parse(&spec.match_by)?;
    let budget = match spec.budget {
        Some(b) => b,
        None => plan::default_budget(&spec.size, &spec.sets, by)?,
    };
    let archs = spec
        .archs
        .iter()
        .map(|a| plan::plan_one(&a.label, &a.arch, &spec.size, &spec.sets_for(a), by, budget))
        .collect::<Result<_>>()?;
    Ok((budget, archs))
}

/// One comparison, planned, into `dir`: its runs, the optional scaling measurement,
/// `results.json` and the report.
fn run_comparison(
    spec: &CompareSpec,
    (budget, archs): (f64, Vec<PlannedArch>),
    dir: &Path,
    args: &CompareRequest,
) -> Result<ComparisonResults> {
    // One process per comparison directory; each run's own directory is locked by its trainer.
    let _lock = crate::util::lock::DirLock::acquire(dir, "compare")?;
    claim_dir(dir, spec)?;
    let resolved = device::resolve(args.arch.device)?;

    print_plan(spec, &archs, budget, dir, resolved);
    let total_runs = archs.len() * (spec.seeds + spec.lr_grid.len().saturating_sub(1));
    let mut counter = RunCounter { done: 0, total: total_runs };
    let mut results = Vec::new();
    for (i, arch) in archs.iter().enumerate() {
        let arch_dir = dir.join("runs").join(format!("{i:02}-{}", slug(&arch.name)));
        results.push(run_arch(arch, spec, &arch_dir, dir, resolved, args.quiet, &mut counter)?);
    }

    let bench = if spec.bench_seq_lens.is_empty() {
        None
    } else {
        eprintln!("measuring throughput and memory at T = {:?}", spec.bench_seq_lens);
        let opts = crate::bench::BenchOptions {
            seq_lens: spec.bench_seq_lens.clone(),
            tokens_per_step: 4096,
            steps: 2,
            inference: true,
            decode_tokens: 32,
            timeout_s: 600,
            device: args.arch.device,
            precision: spec.precision.clone(),
            tokens: None,
            peak_tflops: None,
            work_dir: dir.join("bench"),
            quiet: args.quiet,
        };
        Some(crate::bench::measure(&archs, &opts)?)
    };

    let first = &archs[0].cfg;
    let comparison = ComparisonResults {
        title: spec.title.clone(),
        match_by: spec.match_by.clone(),
        budget,
        settings: shared_settings(&spec, first, resolved),
        task: crate::data::tasks::Task::from_source(&first.data.source, &first.data.task)?
            .map(|t| t.name().to_string()),
        archs: results,
        bench,
    };
    atomic::write_json(&dir.join("results.json"), &comparison)?;
    let files = crate::report::write(dir, &comparison)?;
    print_results(&comparison);
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "md" || e == "html")) {
        println!("report: {}", f.display());
    }
    Ok(comparison)
}

/// Creates the comparison directory, or checks that the one there holds this comparison.
fn claim_dir(dir: &Path, spec: &CompareSpec) -> Result<()> {
    let path = dir.join("compare.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)?;
        let saved: CompareSpec =
            serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))?;
        if &saved != spec {
            bail!(
                "{} holds a different comparison ({}); rerun it with the same arguments to continue it, \
                 or choose another --dir",
                dir.display(),
                saved.title
            );
        }
        eprintln!("continuing the comparison in {} (finished runs are kept)", dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock = std::ffi::OsStr::new(crate::util::lock::LOCK_FILE);
    if std::fs::read_dir(dir)?.any(|e| e.map_or(true, |e| e.file_name() != lock)) {
        bail!("{} is not empty and holds no comparison; choose another --dir", dir.display());
    }
    atomic::write_json(&path, spec)
}

struct RunCounter {
    done: usize,
    total: usize,
}

/// All runs of one architecture: the LR grid on the first seed (if any), then every seed at
/// the chosen LR.
fn run_arch(
    arch: &PlannedArch,
    spec: &CompareSpec,
    arch_dir: &Path,
    root: &Path,
    resolved: Resolved,
    quiet: bool,
    counter: &mut RunCounter,
) -> Result<ArchResult> {
    let base_seed = arch.cfg.train.seed;
    let mut trials = Vec::new();
    let mut runs: Vec<SeedRun> = Vec::new();
    let lr = if spec.lr_grid.is_empty() {
        arch.cfg.train.lr
    } else {
        // Decided on the held-out selection set: a winner picked on the reported validation
        // batches would be biased towards them (the best of several draws looks better there
        // than it is). The winning run is kept as the first seed.
        let mut best: Option<(f64, f64, SeedRun)> = None;
        for &lr in &spec.lr_grid {
            let run = train_run(arch, lr, base_seed, arch_dir, root, resolved, quiet, counter)?;
            let selection = selection_loss(&root.join(&run.dir), resolved)?;
            trials.push(LrTrial {
                lr,
                val_loss: run.summary.final_val_loss,
                selection_loss: Some(selection),
            });
            let better = best.as_ref().is_none_or(|(_, b, _)| selection < *b || b.is_nan());
            if better && selection.is_finite() {
                best = Some((lr, selection, run));
            }
        }
        let Some((lr, _, run)) = best else {
            bail!("every learning rate of the grid diverged for {} (NaN loss); try smaller ones", arch.name);
        };
        eprintln!("{}: learning rate {lr:e} wins the grid on the held-out selection set", arch.name);
        runs.push(run);
        lr
    };
    for k in runs.len()..spec.seeds {
        runs.push(train_run(arch, lr, base_seed + k as u64, arch_dir, root, resolved, quiet, counter)?);
    }
    let sample = sample_text(&root.join(&runs[0].dir), resolved).ok().flatten();
    let counts = arch.cfg.model.param_counts();
    Ok(ArchResult {
        name: arch.name.clone(),
        pattern: arch.cfg.model.layer_pattern(),
        knob: arch.sizing.knob.clone(),
        achieved: arch.sizing.achieved,
        budget_error: arch.sizing.error,
        params_total: counts.total,
        params_active: counts.active,
        params_non_embedding: counts.non_embedding,
        state_bytes: Some(arch.cfg.model.state_bytes(arch.cfg.train.seq_len)),
        train_flops_per_token: arch.cfg.model.train_flops_per_token(arch.cfg.train.seq_len),
        lr,
        lr_trials: trials,
        runs,
        sample,
    })
}

/// One training run, or its saved result when it already finished. A run that was stopped
/// after a checkpoint resumes; one stopped before its first checkpoint starts over.
#[allow(clippy::too_many_arguments)]
fn train_run(
    arch: &PlannedArch,
    lr: f64,
    seed: u64,
    arch_dir: &Path,
    root: &Path,
    resolved: Resolved,
    quiet: bool,
    counter: &mut RunCounter,
) -> Result<SeedRun> {
    let mut cfg = arch.cfg.clone();
    cfg.train.lr = lr;
    cfg.train.seed = seed;
    let run_dir = arch_dir.join(format!("lr{lr:e}-seed{seed}"));
    counter.done += 1;
    let rel = run_dir.strip_prefix(root).unwrap_or(&run_dir).display().to_string();
    let summary_path = run_dir.join("summary.json");
    let summary: Summary = if summary_path.exists() {
        eprintln!("[{}/{}] {} seed {seed}: finished earlier, kept", counter.done, counter.total, arch.name);
        read_summary(&summary_path)?
    } else {
        let resume = run_dir.join("last.ckpt").exists();
        if !resume && run_dir.exists() {
            // Started but killed before its first checkpoint: nothing worth keeping.
            std::fs::remove_dir_all(&run_dir)?;
        }
        eprintln!(
            "[{}/{}] {} seed {seed}, lr {lr:e}{}",
            counter.done,
            counter.total,
            arch.name,
            if resume { " (resuming)" } else { "" }
        );
        // In a process of its own: its peak memory is then its own (see `worker`).
        worker::spawn_train_run(&cfg, &run_dir, resolved, resume, quiet)?;
        read_summary(&summary_path)?
    };
    let curve = read_records(&run_dir.join("metrics.jsonl"))?
        .into_iter()
        .filter_map(|r| match r {
            Record::Eval { step, tokens, val_loss, .. } => Some(CurvePoint { step, tokens, val_loss }),
            _ => None,
        })
        .collect();
    Ok(SeedRun { seed, dir: rel, summary, curve })
}

fn read_summary(path: &Path) -> Result<Summary> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))
}

/// A text sample from a run's best checkpoint (`None` for a synthetic task).
/// The final model of the run in `run_dir` (`last.ckpt`) scored on the held-out selection
/// set ([`crate::data::stream::TrainData::selection`]); kept in `selection.json` beside it, so
/// that a continued comparison does not score it again.
fn selection_loss(run_dir: &Path, resolved: Resolved) -> Result<f64> {
    #[derive(Serialize, Deserialize)]
    struct Selection {
        #[serde(with = "crate::util::json_f64")]
        loss: f64,
    }
    let cache = run_dir.join("selection.json");
    if let Some(kept) =
        std::fs::read_to_string(&cache).ok().and_then(|t| serde_json::from_str::<Selection>(&t).ok())
    {
        return Ok(kept.loss);
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
    atomic::write_json(&cache, &Selection { loss })?;
    Ok(loss)
}

fn sample_text(run_dir: &Path, resolved: Resolved) -> Result<Option<String>> {
    let cfg = crate::config::RunConfig::load(&run_dir.join("config.toml"))?;
    if cfg.data.source.starts_with("task:") {
        return Ok(None);
    }
    let tokenizer = crate::data::tokenizer::Tokenizer::from_json_file(&run_dir.join("tokenizer.json"))?;
    let sampling = crate::eval::generate::SamplingConfig {
        max_new_tokens: SAMPLE_TOKENS,
        temperature: 0.8,
        top_k: 0,
        top_p: 0.95,
        seed: 0,
        stop_at_eot: true,
    };
    let on_gpu = resolved != Resolved::Cpu;
    let text = with_backend!(resolved, |B, dev| {
        type I = <B as burn::tensor::backend::AutodiffBackend>::InnerBackend;
        let model = crate::train::checkpoint::load_model::<I>(run_dir, "best", &cfg, &dev, on_gpu)?;
        let mut out = String::from(SAMPLE_PROMPT);
        crate::eval::generate::generate(
            &model,
            &tokenizer,
            SAMPLE_PROMPT,
            cfg.model.context_limit(),
            &sampling,
            &dev,
            |piece| out.push_str(piece),
        )?;
        Ok::<String, anyhow::Error>(out)
    })?;
    Ok(Some(text))
}

/// The settings every run shares, for the report's header.
fn shared_settings(
    spec: &CompareSpec,
    cfg: &crate::config::RunConfig,
    resolved: Resolved,
) -> Vec<(String, String)> {
    let t = &cfg.train;
    let tokens = t.max_steps * t.batch_size * t.grad_accum * t.seq_len;
    let mut s = vec![
        ("data".to_string(), cfg.data.source.clone()),
        ("tokenizer".into(), cfg.data.tokenizer.clone()),
        ("sequence length".into(), t.seq_len.to_string()),
        ("effective batch".into(), format!("{} × {} sequences", t.batch_size, t.grad_accum)),
        ("steps".into(), t.max_steps.to_string()),
        ("tokens per run".into(), human(tokens as f64)),
        (
            "schedule".into(),
            format!("{} warm-up steps, cosine to {}× the peak LR", t.warmup_steps, t.min_lr_ratio),
        ),
        (
            "optimizer".into(),
            format!(
                "AdamW(β = {}, {}; weight decay {}), grad clip {}",
                t.beta1, t.beta2, t.weight_decay, t.grad_clip
            ),
        ),
        ("seeds".into(), format!("{} (seed k: same data order for every architecture)", spec.seeds)),
        (
            "evaluation".into(),
            format!("every {} steps on {} fixed validation batches", cfg.eval.every, cfg.eval.batches),
        ),
        ("device".into(), resolved.name().to_string()),
        ("precision".into(), format!("{:?}", t.precision).to_lowercase()),
    ];
    if !spec.lr_grid.is_empty() {
        let grid: Vec<String> = spec.lr_grid.iter().map(|lr| format!("{lr:e}")).collect();
        s.push(("LR grid".into(), format!("{} (first seed; best validation loss wins)", grid.join(", "))));
    } else {
        s.push(("learning rate".into(), format!("{:e} for every architecture", t.lr)));
    }
    s
}

fn print_plan(spec: &CompareSpec, archs: &[PlannedArch], budget: f64, dir: &Path, resolved: Resolved) {
    let t = &archs[0].cfg.train;
    eprintln!(
        "archlab compare: {} architectures × {} seeds, {} steps of {} tokens each, on {}; sized to {} {}",
        archs.len(),
        spec.seeds,
        t.max_steps,
        t.batch_size * t.grad_accum * t.seq_len,
        resolved.name(),
        human(budget),
        MatchBy::parse(&spec.match_by).map_or("", MatchBy::unit)
    );
    for a in archs {
        eprintln!(
            "  {:<14} {:<20} {:>9} ({:+.2}%)  {}",
            a.name,
            a.cfg.model.layer_pattern(),
            human(a.sizing.achieved),
            a.sizing.error * 100.0,
            a.sizing.knob
        );
    }
    eprintln!("  runs and report in {}", dir.display());
}

/// The comparison table and verdicts on the terminal (the report has more).
fn print_results(c: &ComparisonResults) {
    println!();
    let task = c.task.is_some();
    let acc_header = if task { " answer accuracy |" } else { "" };
    println!("| architecture | params (active) | val loss ± 95% CI |{acc_header} tok/s | peak mem | wall |");
    println!("|---|---|---|{}---|---|---|", if task { "---|" } else { "" });
    for a in &c.archs {
        // The report's numbers: the mean over finite seeds, the diverged ones said apart.
        let m = a.loss_ci();
        let diverged = match a.diverged_seeds() {
            0 => String::new(),
            k => format!(" ({k} of {} seeds diverged)", a.runs.len()),
        };
        let ci = m.half_width.map_or("n/a".to_string(), |h| format!("{h:.4}")) + &diverged;
        let mean = |f: &dyn Fn(&Summary) -> f64| {
            a.runs.iter().map(|r| f(&r.summary)).sum::<f64>() / a.runs.len() as f64
        };
        let peak = a.runs.iter().map(|r| r.summary.peak_memory_bytes).max().unwrap_or(0);
        let acc = if task {
            let accs: Vec<f64> = a.runs.iter().filter_map(|r| r.summary.final_val_accuracy).collect();
            format!(" {:.1}% |", 100.0 * stats::mean_ci(&accs).mean)
        } else {
            String::new()
        };
        println!(
            "| {} | {} ({}) | {:.4} ± {ci} |{acc} {} | {} | {:.0} s |",
            a.name,
            human(a.params_total as f64),
            human(a.params_active as f64),
            m.mean,
            human(mean(&|s| s.steady_tokens_per_s)),
            human_bytes(peak),
            mean(&|s| s.wall_time_s)
        );
    }
    println!();
    let mut order: Vec<&ArchResult> = c.archs.iter().collect();
    order.sort_by(|a, b| mean_loss(a).total_cmp(&mean_loss(b)));
    for (i, a) in order.iter().enumerate() {
        for b in &order[i + 1..] {
            let pair = stats::compare_pair(&seed_losses(a), &seed_losses(b));
            println!("{} vs {}: {}", a.name, b.name, pair.verdict(&a.name, &b.name));
        }
    }
}

fn mean_loss(a: &ArchResult) -> f64 {
    a.loss_ci().mean
}

fn seed_losses(a: &ArchResult) -> Vec<(u64, f64)> {
    a.runs.iter().map(|r| (r.seed, r.summary.final_val_loss)).collect()
}

/// A label as a folder name.
fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect()
}

/// Reads `DIR/results.json`.
/// Redraws the report of the comparison in `dir` from its results alone (`archlab report`):
/// for a task suite, each task's report and the overview. Returns the files written.
pub fn redraw_report(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    // A suite is known by its compare.json; one that does not read as today's (a comparison
    // written by an older archlab) is a single comparison.
    let suite_spec = std::fs::read_to_string(dir.join("compare.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<CompareSpec>(&text).ok());
    let Some(spec) = suite_spec.filter(|s| !s.tasks.is_empty()) else {
        return crate::report::write(dir, &load_results(dir)?);
    };
    let mut files = Vec::new();
    let mut suite = Vec::new();
    for task in spec.tasks.clone() {
        let results = load_results(&dir.join(&task))?;
        files.extend(crate::report::write(&dir.join(&task), &results)?);
        suite.push((task, results));
    }
    files.extend(crate::report::write_suite(dir, &spec.title, &suite)?);
    Ok(files)
}

pub fn load_results(dir: &Path) -> Result<ComparisonResults> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("{} has no results.json; pass a directory written by `archlab compare`", dir.display())
    })?;
    serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))
}
