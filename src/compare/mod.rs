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
//!    continues where it stopped. The runs are one numbered list (`runs`): trained here
//!    `--jobs` at a time, or one per `--run-index` process (Slurm array tasks: `slurm`);
//! 5. `results.json` collects everything; `report` draws it.

pub mod arch;
pub mod plan;
pub mod results;
pub mod runs;
pub mod sizing;
pub mod slurm;
pub mod spec;
pub mod stats;
pub mod worker;

use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};

use crate::device::{self, Resolved};
use crate::train::metrics::Summary;
use crate::train::{self, human, human_bytes};
use crate::util::atomic;
use crate::util::lock::DirLock;
use crate::with_backend;
use plan::PlannedArch;
use results::{ArchResult, ComparisonResults, SeedRun};
use runs::{Slot, Stage, Unit};
use sizing::MatchBy;
use spec::CompareSpec;
pub use spec::{ArchSelection, CompareRequest, Emit};

/// The prompt of the text samples in the report (the built-in corpus is stories).
const SAMPLE_PROMPT: &str = "Once upon a time";
const SAMPLE_TOKENS: usize = 160;

pub fn run(args: CompareRequest) -> Result<()> {
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None if args.run_index.is_some() || args.finish || args.emit.is_some() => {
            bail!("--run-index, --finish and --emit work on a comparison directory: name it with --dir")
        }
        None => train::default_run_dir("compare"),
    };
    if args.jobs == 0 {
        bail!("--jobs 0: give the number of runs to train at once, 1 or more");
    }
    let spec = resolve_spec(&args, &dir)?;
    let units = plan_units(&spec, &dir)?;
    let all = runs::slots(&units);
    // A batch that does not split across --devices (and the like) fails now, not in a run.
    let on_gpu = !matches!(args.arch.device, device::DeviceArg::Cpu);
    for arch in units.iter().flat_map(|u| &u.archs) {
        crate::train::data_parallel::check(&arch.cfg, args.devices, on_gpu)
            .with_context(|| format!("architecture {}", arch.name))?;
    }

    let _lock = match args.run_index {
        // A single run only writes its own directory, under its own lock: tasks run side by side.
        Some(_) => None,
        None => Some(DirLock::acquire(&dir, "compare")?),
    };
    if let Some(Emit::Slurm) = args.emit {
        // No device is resolved here: the jobs run on the cluster's nodes, not on this one.
        claim_dir(&dir, &spec, Claim::New)?;
        let files = slurm::emit(&dir, &units, &all, &args)?;
        print_plan_of(&units, args.arch.device.name());
        for f in files {
            println!("wrote {}", f.display());
        }
        println!("submit with: bash {}", dir.join("slurm").join(slurm::SUBMIT).display());
        return Ok(());
    }
    let resolved = device::resolve(args.arch.device)?;
    device::check_data_parallel(resolved, args.devices)?;
    if let Some(index) = args.run_index {
        // One run of a plan written before (a Slurm array task, or by hand).
        claim_dir(&dir, &spec, Claim::Existing)?;
        let Some(slot) = all.get(index) else {
            bail!(
                "--run-index {index} is out of range: the comparison in {} has {} runs (0 to {})",
                dir.display(),
                all.len(),
                all.len().saturating_sub(1)
            );
        };
        return runs::execute(&units, slot, &run_options(&args, resolved));
    }

    if args.finish {
        claim_dir(&dir, &spec, Claim::Existing)?;
        let how = "trained separately by `--run-index` (e.g. Slurm array tasks): runs placed on one machine \
                   at the same time shared it, and their throughput and memory show that";
        return finish(&spec, &units, &dir, resolved, Some(how), &args);
    }

    claim_dir(&dir, &spec, Claim::New)?;
    print_plan_of(&units, resolved.name());
    let opts = run_options(&args, resolved);
    let mut failed = Vec::new();
    let mut grid_failed = Vec::new();
    for stage in [Stage::Grid, Stage::Seeds] {
        let todo: Vec<&Slot> =
            all.iter().filter(|s| s.stage == stage && !grid_failed.contains(&(s.unit, s.arch))).collect();
        for (slot, err) in run_parallel(&todo, args.jobs, |slot| runs::execute(&units, slot, &opts)) {
            eprintln!("error: run {}: {err:#}", runs::describe(&units, slot));
            failed.push(runs::describe(&units, slot));
            if stage == Stage::Grid {
                grid_failed.push((slot.unit, slot.arch));
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} runs failed: {}; their errors are printed above. Fix the cause and rerun the same \
             compare command: finished runs are kept",
            failed.len(),
            all.len(),
            failed.join("; ")
        );
    }
    let how = (args.jobs > 1).then(|| {
        format!(
            "{} at once on this machine: throughput and memory were measured with {} runs sharing it",
            args.jobs, args.jobs
        )
    });
    finish(&spec, &units, &dir, resolved, how.as_deref(), &args)
}

/// The comparison `args` asks for; with no plan on the command line, the one already in
/// `dir` (its `compare.json`), so that `compare --dir DIR` continues whatever DIR holds.
fn resolve_spec(args: &CompareRequest, dir: &Path) -> Result<CompareSpec> {
    let saved = dir.join("compare.json");
    if args.names_a_plan() || !saved.exists() {
        return CompareSpec::from_request(args);
    }
    let text = std::fs::read_to_string(&saved).with_context(|| format!("cannot read {}", saved.display()))?;
    serde_json::from_str(&text).with_context(|| format!("malformed {}", saved.display()))
}

/// Every comparison of `spec` planned (sized, a bad name or task refused) before any
/// training: the one comparison in `dir`, or one per task in `dir/<task>/`.
fn plan_units(spec: &CompareSpec, dir: &Path) -> Result<Vec<Unit>> {
    let one = |spec: CompareSpec, dir: std::path::PathBuf| -> Result<Unit> {
        let (budget, archs) = plan(&spec)?;
        Ok(Unit { dir, spec, budget, archs })
    };
    if spec.tasks.is_empty() {
        return Ok(vec![one(spec.clone(), dir.to_path_buf())?]);
    }
    spec.tasks.iter().map(|t| one(spec.for_task(t), dir.join(t))).collect()
}

/// Resolves and sizes every architecture of `spec`: a bad name, task or budget fails now.
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

fn run_options(args: &CompareRequest, device: Resolved) -> runs::RunOptions {
    // Runs side by side on the CPU share its cores instead of each starting a thread per core.
    let threads = (args.jobs > 1 && device == Resolved::Cpu).then(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / args.jobs).max(1)
    });
    runs::RunOptions { device, quiet: args.quiet || args.jobs > 1, threads, devices: args.devices }
}

/// Runs `f` on every slot, `jobs` at a time, each to its end whatever the others do; returns
/// the failures.
fn run_parallel<'a>(
    slots: &[&'a Slot],
    jobs: usize,
    f: impl Fn(&Slot) -> Result<()> + Sync,
) -> Vec<(&'a Slot, anyhow::Error)> {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(slots.len()) {
            scope.spawn(|| {
                while let Some(&slot) = slots.get(next.fetch_add(1, Ordering::SeqCst)) {
                    if let Err(e) = f(slot) {
                        failures.lock().unwrap().push((slot, e));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort_by_key(|(s, _)| s.index);
    failures
}

/// After the runs: the scaling measurement, the text samples, `results.json` and the report
/// of each comparison (and a suite's overview). Every run must have finished; if some have
/// not, the report of those that did is drawn and the missing ones are named.
fn finish(
    spec: &CompareSpec,
    units: &[Unit],
    dir: &Path,
    resolved: Resolved,
    how: Option<&str>,
    args: &CompareRequest,
) -> Result<()> {
    let per_unit = (0..units.len()).map(|u| collect(units, u, Some(resolved))).collect::<Result<Vec<_>>>()?;
    let missing: Vec<String> = per_unit.iter().flat_map(|(_, m)| m.iter().cloned()).collect();
    if !missing.is_empty() {
        merge(spec, units, dir, per_unit)?;
        bail!(
            "{} of {} runs have not finished, so the comparison cannot be completed: {}. The report of \
             those that did is in {}; rerun the missing ones (resubmitting the same job arrays, or \
             `archlab compare --dir {}`): finished runs are kept",
            missing.len(),
            runs::slots(units).len(),
            missing.join("; "),
            dir.display(),
            dir.display()
        );
    }
    let collected: Vec<Vec<ArchResult>> = per_unit.into_iter().map(|(archs, _)| archs).collect();
    for a in collected.iter().flatten().filter(|a| !a.lr_trials.is_empty()) {
        eprintln!("{}: learning rate {:e} wins the grid on the held-out selection set", a.name, a.lr);
    }
    let mut results = Vec::new();
    for (unit, archs) in units.iter().zip(collected) {
        if units.len() > 1 {
            eprintln!("task:{}", unit.dir.file_name().unwrap_or_default().to_string_lossy());
        }
        results.push(finish_unit(unit, archs, resolved, how, args)?);
    }
    if !spec.tasks.is_empty() {
        let suite: Vec<(String, ComparisonResults)> = spec.tasks.iter().cloned().zip(results).collect();
        let files = crate::report::write_suite(dir, &spec.title, &suite)?;
        print!("{}", crate::report::suite_table(&suite));
        for f in files {
            println!("report: {}", f.display());
        }
    }
    Ok(())
}

/// One comparison's end: text samples, the optional scaling measurement, `results.json` and
/// the report.
fn finish_unit(
    unit: &Unit,
    mut archs: Vec<ArchResult>,
    resolved: Resolved,
    how: Option<&str>,
    args: &CompareRequest,
) -> Result<ComparisonResults> {
    for a in &mut archs {
        a.sample = sample_text(&unit.dir.join(&a.runs[0].dir), resolved).ok().flatten();
    }
    let spec = &unit.spec;
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
            work_dir: unit.dir.join("bench"),
            quiet: args.quiet,
        };
        Some(crate::bench::measure(&unit.archs, &opts)?)
    };
    let mut comparison = comparison_results(unit, archs, resolved.name(), how, Vec::new(), bench)?;
    if args.devices > 1 {
        let what = format!("{} in data parallel (each batch split across them)", args.devices);
        comparison.settings.push(("devices per run".into(), what));
    }
    atomic::write_json(&unit.dir.join("results.json"), &comparison)?;
    let files = crate::report::write(&unit.dir, &comparison)?;
    print_results(&comparison);
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "md" || e == "html")) {
        println!("report: {}", f.display());
    }
    Ok(comparison)
}

fn comparison_results(
    unit: &Unit,
    archs: Vec<ArchResult>,
    device: &str,
    how: Option<&str>,
    missing: Vec<String>,
    bench: Option<results::BenchResults>,
) -> Result<ComparisonResults> {
    let first = &unit.archs[0].cfg;
    let mut settings = shared_settings(&unit.spec, first, device);
    if let Some(how) = how {
        settings.push(("runs".into(), how.to_string()));
    }
    Ok(ComparisonResults {
        title: unit.spec.title.clone(),
        match_by: unit.spec.match_by.clone(),
        budget: unit.budget,
        settings,
        task: crate::data::tasks::Task::from_source(&first.data.source, &first.data.task)?
            .map(|t| t.name().to_string()),
        archs,
        bench,
        missing,
    })
}

/// Every architecture of comparison `u` with the runs that finished: its grid trials, the
/// winning rate, its seeds at that rate. Returns them and the runs that have not finished
/// (an architecture whose grid is unfinished, or with no finished seed, is left out). With a
/// device, grid trials not yet scored on the selection set are scored.
fn collect(units: &[Unit], u: usize, device: Option<Resolved>) -> Result<(Vec<ArchResult>, Vec<String>)> {
    let unit = &units[u];
    let all = runs::slots(units);
    let mut missing = Vec::new();
    let mut out = Vec::new();
    for (a, arch) in unit.archs.iter().enumerate() {
        let seeds = all.iter().filter(|s| s.stage == Stage::Seeds && s.unit == u && s.arch == a);
        let lr = match runs::winner(units, u, a, device)? {
            Ok(lr) => lr,
            Err(grid) => {
                missing.extend(grid);
                missing.extend(seeds.map(|s| format!("{}: waits for the grid", runs::describe(units, s))));
                continue;
            }
        };
        let mut trials = Vec::new();
        let mut runs: Vec<SeedRun> = Vec::new();
        if !unit.spec.lr_grid.is_empty() {
            for (trial, run) in runs::grid_trials(units, u, a, device)?.0 {
                if trial.lr == lr {
                    runs.push(run); // the winning trial is the first seed's run
                }
                trials.push(trial);
            }
        }
        for slot in seeds {
            let dir = runs::run_dir(unit, a, lr, slot.seed);
            match runs::run_state(&dir) {
                runs::RunState::Finished => runs.push(runs::finished_run(&unit.dir, &dir, slot.seed)?),
                state => missing.push(format!("{}: {state}", runs::describe(units, slot))),
            }
        }
        if runs.is_empty() {
            continue;
        }
        let counts = arch.cfg.model.param_counts();
        out.push(ArchResult {
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
            sample: None,
        });
    }
    Ok((out, missing))
}

/// Draws the report of whatever has finished in a comparison whose runs are not all done
/// (`archlab report` on it, or `--finish` before the end) from what `collect` found per unit,
/// naming the runs still missing.
/// Returns the files written.
fn merge(
    spec: &CompareSpec,
    units: &[Unit],
    dir: &Path,
    collected: Vec<(Vec<ArchResult>, Vec<String>)>,
) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut suite = Vec::new();
    let mut all_missing = Vec::new();
    for (unit, (archs, missing)) in units.iter().zip(collected) {
        let device_name =
            archs.first().map(|a| a.runs[0].summary.device.clone()).unwrap_or_else(|| "n/a".into());
        all_missing.extend(missing.iter().cloned());
        let results = comparison_results(unit, archs, &device_name, None, missing, None)?;
        files.extend(crate::report::write(&unit.dir, &results)?);
        suite.push((unit.dir.file_name().unwrap_or_default().to_string_lossy().into_owned(), results));
    }
    if !spec.tasks.is_empty() {
        files.extend(crate::report::write_suite(dir, &spec.title, &suite)?);
    }
    if all_missing.is_empty() {
        eprintln!(
            "every run has finished; `archlab compare --dir {} --finish` adds the scaling measurement and \
             the text samples",
            dir.display()
        );
    } else {
        eprintln!("{} runs have not finished (the report says which):", all_missing.len());
        for m in &all_missing {
            eprintln!("  {m}");
        }
    }
    Ok(files)
}

/// How `claim_dir` treats the comparison directory.
#[derive(Clone, Copy, PartialEq)]
enum Claim {
    /// Start the comparison there, or continue the same one.
    New,
    /// It must already hold this comparison (`--run-index`, `--finish`).
    Existing,
}

/// Creates the comparison directory, or checks that the one there holds this comparison.
fn claim_dir(dir: &Path, spec: &CompareSpec, claim: Claim) -> Result<()> {
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
        if claim == Claim::New {
            eprintln!("continuing the comparison in {} (finished runs are kept)", dir.display());
        }
        return Ok(());
    }
    if claim == Claim::Existing {
        bail!(
            "{} holds no comparison plan (compare.json); write one with `archlab compare ARCHS --dir {} \
             --emit slurm`, or run the comparison there",
            dir.display(),
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let lock = std::ffi::OsStr::new(crate::util::lock::LOCK_FILE);
    if std::fs::read_dir(dir)?.any(|e| e.map_or(true, |e| e.file_name() != lock)) {
        bail!("{} is not empty and holds no comparison; choose another --dir", dir.display());
    }
    atomic::write_json(&path, spec)
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
    device: &str,
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
        ("device".into(), device.to_string()),
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

fn print_plan_of(units: &[Unit], device: &str) {
    for unit in units {
        print_plan(&unit.spec, &unit.archs, unit.budget, &unit.dir, device);
    }
}

fn print_plan(spec: &CompareSpec, archs: &[PlannedArch], budget: f64, dir: &Path, device: &str) {
    let t = &archs[0].cfg.train;
    eprintln!(
        "archlab compare: {} architectures × {} seeds, {} steps of {} tokens each, on {}; sized to {} {}",
        archs.len(),
        spec.seeds,
        t.max_steps,
        t.batch_size * t.grad_accum * t.seq_len,
        device,
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

/// Redraws the report of the comparison in `dir` (`archlab report`): from its results alone
/// once it has finished (for a task suite, each task's report and the overview); before then,
/// from the runs that have finished, naming those that have not. Returns the files written.
pub fn redraw_report(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    // A comparison written by an older archlab may have a compare.json that does not read as
    // today's: its results.json alone is then used.
    let spec = std::fs::read_to_string(dir.join("compare.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<CompareSpec>(&text).ok());
    let finished = |d: &Path| d.join("results.json").exists();
    let Some(spec) = spec else {
        return crate::report::write(dir, &load_results(dir)?);
    };
    let all_finished = match spec.tasks.is_empty() {
        true => finished(dir),
        false => spec.tasks.iter().all(|t| finished(&dir.join(t))),
    };
    if !all_finished {
        let units = plan_units(&spec, dir)?;
        let collected = (0..units.len()).map(|u| collect(&units, u, None)).collect::<Result<Vec<_>>>()?;
        return merge(&spec, &units, dir, collected);
    }
    if spec.tasks.is_empty() {
        return crate::report::write(dir, &load_results(dir)?);
    }
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

/// Reads `DIR/results.json`.
pub fn load_results(dir: &Path) -> Result<ComparisonResults> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("{} has no results.json; pass a directory written by `archlab compare`", dir.display())
    })?;
    serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))
}
