//! `archlab bench`: sequence-length scaling of training and inference throughput and memory.
//!
//! For every architecture and every sequence length T the bench measures one point: training
//! tokens/s at a fixed number of tokens per step (batch = tokens_per_step / T, at least 1),
//! the peak memory of that training, and optionally prefill and decoding tokens/s. Each point
//! runs in its own process (`archlab bench-point`, see `point`), started and judged by
//! `child`: its memory is its own, and an out-of-memory point is reported as such while the
//! bench goes on. Once an architecture runs out of memory (or time) at some T, its longer T's
//! are not tried: they would need more.
//!
//! Each point reports its warm-up step apart from the steady state (mean tokens/s and median
//! step time), and the parent adds the model's FLOPs per token, the achieved TFLOP/s and the
//! MFU against the device's peak (`mfu`). With `--tokens FILE` every point trains on the
//! file's batches (`tokens`), the same ones `tools/torch_baseline.py` feeds PyTorch.

mod child;
#[cfg(feature = "cube-kernels")]
pub mod gemm;
mod mfu;
mod point;
mod tokens;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::compare::arch::DEFAULT_ARCHS;
use crate::compare::plan::{PlannedArch, plan_archs};
use crate::compare::results::{BenchPoint, BenchResults, BenchStatus};
use crate::compare::sizing::{MatchBy, parse_budget};
use crate::compare::spec::ArchSelection;
use crate::config::{Precision, RunConfig};
use crate::device::{self, DeviceArg, Resolved};
use crate::train::{human, human_bytes};
use crate::util::atomic;

pub use child::{MEMORY_LIMIT_ENV, classify};
pub use mfu::{FLOPS_FORMULA, Peak, achieved_tflops, device_peak, mfu, table_peak};
pub use point::{PointRequest, run_point};
pub use tokens::TokenFile;

/// What a user asks `bench` for (its flags).
#[derive(Clone, Debug)]
pub struct BenchRequest {
    pub arch: ArchSelection,
    /// Sequence lengths to measure.
    pub seq_lens: Vec<usize>,
    /// Tokens per training step, kept fixed across sequence lengths.
    pub tokens_per_step: usize,
    /// Timed training steps per point (after one warm-up step).
    pub steps: usize,
    /// Also measure prefill and decoding.
    pub inference: bool,
    pub decode_tokens: usize,
    /// Give up on a point after this many seconds.
    pub timeout_s: u64,
    /// Where bench.json, bench.md and the plots go.
    pub out: PathBuf,
    /// Train on this token file's batches instead of random ids.
    pub tokens: Option<PathBuf>,
    /// The device's dense peak TFLOP/s for MFU.
    pub peak_tflops: Option<f64>,
}

/// How to measure (what `archlab bench` takes from its flags; `compare` fills it too).
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Sequence lengths, measured in increasing order.
    pub seq_lens: Vec<usize>,
    /// Tokens per training step; batch = this / T, at least 1.
    pub tokens_per_step: usize,
    /// Timed training steps per point (after one warm-up step).
    pub steps: usize,
    /// Also measure prefill and decoding.
    pub inference: bool,
    pub decode_tokens: usize,
    /// A point still running after this many seconds is killed and reported as failed.
    pub timeout_s: u64,
    pub device: DeviceArg,
    /// `auto`, `bf16` or `f32`; `None` keeps each architecture's `train.precision`.
    pub precision: Option<String>,
    /// Train on the batches of this token file (raw little-endian u32) instead of random ids.
    pub tokens: Option<PathBuf>,
    /// The device's peak TFLOP/s for MFU, overriding the table of known GPUs.
    pub peak_tflops: Option<f64>,
    /// Where each point's config, result and stderr log are written.
    pub work_dir: PathBuf,
    /// No progress lines.
    pub quiet: bool,
}

/// The `bench` command: plan the architectures, measure, write `bench.json` and the report,
/// print the table.
pub fn run(args: BenchRequest) -> Result<()> {
    let a = &args.arch;
    let names: Vec<String> = if a.archs.is_empty() {
        DEFAULT_ARCHS.iter().map(|s| s.to_string()).collect()
    } else {
        a.archs.clone()
    };
    let by = MatchBy::parse(a.match_by.as_deref().unwrap_or("active"))?;
    let budget = a.budget.as_deref().map(parse_budget).transpose()?;
    let size = a.size.as_deref().unwrap_or("tiny");
    let (_, archs) = plan_archs(&names, size, &a.sets, by, budget)?;
    let opts = BenchOptions {
        seq_lens: args.seq_lens.clone(),
        tokens_per_step: args.tokens_per_step,
        steps: args.steps,
        inference: args.inference,
        decode_tokens: args.decode_tokens,
        timeout_s: args.timeout_s,
        device: a.device,
        precision: a.precision.clone(),
        tokens: args.tokens.clone(),
        peak_tflops: args.peak_tflops,
        work_dir: args.out.join("points"),
        quiet: false,
    };
    let results = measure(&archs, &opts)?;
    let json = args.out.join("bench.json");
    atomic::write_json(&json, &results)?;
    let mut files = vec![json];
    files.extend(crate::report::write_bench(&args.out, &results)?);
    println!(
        "{} · {} · matmul {} · {} tokens per training step · {}",
        results.device,
        results.precision,
        results.matmul,
        results.tokens_per_step,
        results.tokens.as_deref().map_or("random tokens".into(), |f| format!("tokens from {f}"))
    );
    match results.peak_tflops {
        Some(p) => println!("MFU against a peak of {p} TFLOP/s ({})\n", results.peak_source),
        None => println!("MFU not computed: {}\n", results.peak_source),
    }
    println!("{}", crate::report::bench_table(&results));
    for f in files {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// Measures every architecture at every sequence length, each point in its own process.
/// Failed and out-of-memory points are results, not errors; errors are for what stops the
/// whole bench (bad options, an unwritable directory, a binary that cannot be started).
pub fn measure(archs: &[PlannedArch], opts: &BenchOptions) -> Result<BenchResults> {
    check_options(opts)?;
    let mut seq_lens = opts.seq_lens.clone();
    seq_lens.sort_unstable();
    seq_lens.dedup();
    let resolved = device::resolve(opts.device)?;
    // A token file that cannot feed every point is an error before any point runs.
    if let Some(path) = &opts.tokens {
        check_token_file(path, archs, &seq_lens, opts)?;
    }
    let precision = precision_name(archs, opts, resolved);
    let peak = device_peak(resolved, &precision, opts.peak_tflops);
    let exe = own_binary()?;
    std::fs::create_dir_all(&opts.work_dir)
        .with_context(|| format!("creating bench directory {}", opts.work_dir.display()))?;
    let total = archs.len() * seq_lens.len();
    let mut points = Vec::with_capacity(total);
    for (i, arch) in archs.iter().enumerate() {
        // Why this architecture's longer sequences are not tried, once one is known.
        let mut skip: Option<String> = None;
        for &t in &seq_lens {
            let batch = (opts.tokens_per_step / t).max(1);
            let started = Instant::now();
            let files = PointFiles::new(&opts.work_dir, i, &arch.name, t);
            let mut p = match &skip {
                Some(why) => BenchPoint::new(&arch.name, t, batch, BenchStatus::Failed(why.clone())),
                None => measure_one(&exe, arch, t, batch, resolved, opts, &files)?,
            };
            p.arch = arch.name.clone();
            add_model_numbers(&mut p, arch, t, &peak, skip.is_none().then_some(&files.config));
            if skip.is_none() {
                skip = skip_reason(&p.status, t);
            }
            if !opts.quiet {
                eprintln!("bench [{}/{total}] {}", points.len() + 1, progress_line(&p, started.elapsed()));
            }
            points.push(p);
        }
    }
    Ok(BenchResults {
        device: resolved.name().into(),
        precision,
        // The CPU backends run their own matmul whatever `--matmul` says.
        matmul: if matches!(resolved, Resolved::Cpu) {
            "cpu".into()
        } else {
            crate::kernels::matmul_choice()
        },
        tokens_per_step: opts.tokens_per_step,
        tokens: opts.tokens.as_deref().map(path_arg),
        peak_tflops: peak.tflops,
        peak_source: peak.source,
        flops_formula: FLOPS_FORMULA.into(),
        points,
    })
}

/// Opens the token file once and checks it against every point's batch shape and every
/// architecture's vocabulary, so that a bad file stops the bench with its name before any
/// training (the points read it again, each in its own process).
fn check_token_file(
    path: &Path,
    archs: &[PlannedArch],
    seq_lens: &[usize],
    opts: &BenchOptions,
) -> Result<()> {
    let file = TokenFile::open(path)?;
    for arch in archs {
        for &t in seq_lens {
            let batch = (opts.tokens_per_step / t).max(1);
            file.check(batch, t, arch.cfg.model.vocab_size)
                .with_context(|| format!("--tokens for `{}` at T={t} (batch {batch})", arch.name))?;
        }
    }
    Ok(())
}

/// What the parent knows about a point from its config: the parameter counts, the model's
/// FLOPs per token, and from the measured throughput the achieved TFLOP/s and MFU.
fn add_model_numbers(
    p: &mut BenchPoint,
    arch: &PlannedArch,
    t: usize,
    peak: &Peak,
    config: Option<&PathBuf>,
) {
    let m = &arch.cfg.model;
    let counts = m.param_counts();
    p.params_total = Some(counts.total);
    p.params_active = Some(counts.active);
    let flops = m.train_flops_per_token(t);
    p.train_flops_per_token = Some(flops);
    p.config_path = config.map(|c| path_arg(c));
    if let Some(rate) = p.train_tokens_per_s.filter(|_| p.status == BenchStatus::Ok) {
        let achieved = achieved_tflops(flops, rate);
        p.achieved_tflops = Some(achieved);
        p.mfu = mfu(achieved, peak.tflops);
    }
}

/// The binary that runs the points: this very process's. On Linux through `/proc/<pid>/exe`,
/// which still runs it after a rebuild has replaced the file on disk (`current_exe()` then
/// names a deleted path), and keeps the parent and its points on the same code.
fn own_binary() -> Result<PathBuf> {
    let proc_exe = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    if proc_exe.exists() {
        return Ok(proc_exe);
    }
    std::env::current_exe().context("cannot find the archlab binary to run bench points")
}

fn check_options(o: &BenchOptions) -> Result<()> {
    if o.seq_lens.is_empty() || o.seq_lens.contains(&0) {
        bail!("--seq-lens needs at least one sequence length, all positive (e.g. 256,1024,4096)");
    }
    if o.tokens_per_step == 0 || o.steps == 0 || o.timeout_s == 0 {
        bail!("--tokens-per-step, --steps and --timeout-s must be at least 1");
    }
    if let Some(p) = o.peak_tflops
        && !(p > 0.0 && p.is_finite())
    {
        bail!("--peak-tflops must be a positive number of TFLOP/s (got {p})");
    }
    if o.inference && o.decode_tokens == 0 {
        bail!("--decode-tokens must be at least 1 with --inference");
    }
    if let Some(p) = &o.precision {
        parse_precision(p)?;
    }
    Ok(())
}

fn parse_precision(p: &str) -> Result<Precision> {
    Ok(match p {
        "auto" => Precision::Auto,
        "f32" => Precision::F32,
        "bf16" => Precision::Bf16,
        other => bail!("unknown precision `{other}`; use auto, bf16 or f32"),
    })
}

/// The files of one point, under the work directory: `NN-arch-T.{toml,json,log}`.
struct PointFiles {
    config: PathBuf,
    result: PathBuf,
    stderr: PathBuf,
}

impl PointFiles {
    fn new(dir: &Path, arch_index: usize, arch: &str, t: usize) -> Self {
        // Patterns such as `(LLLA)2` are architecture names too: keep file names plain.
        let safe: String = arch.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let stem = format!("{arch_index:02}-{safe}-T{t}");
        Self {
            config: dir.join(format!("{stem}.toml")),
            result: dir.join(format!("{stem}.json")),
            stderr: dir.join(format!("{stem}.log")),
        }
    }
}

/// One point: write its config, run `bench-point` on it, read what it wrote.
fn measure_one(
    exe: &Path,
    arch: &PlannedArch,
    t: usize,
    batch: usize,
    resolved: Resolved,
    opts: &BenchOptions,
    files: &PointFiles,
) -> Result<BenchPoint> {
    let cfg = point_config(arch, t, batch, opts)?;
    atomic::write(&files.config, cfg.to_toml().as_bytes())?;
    std::fs::remove_file(&files.result).ok(); // a stale result must not pass for this one
    let spec = child::ChildSpec {
        exe: exe.to_path_buf(),
        args: point_args(files, t, batch, resolved, opts),
        stderr_log: files.stderr.clone(),
        timeout: Duration::from_secs(opts.timeout_s),
        memory_limit_kb: if resolved == Resolved::Cpu { child::cpu_memory_limit_kb()? } else { None },
    };
    let (ended, stderr) = child::run(&spec)?;
    let status = match ended {
        child::Ended::TimedOut => BenchStatus::Failed(format!("timed out after {} s", opts.timeout_s)),
        child::Ended::Exited(s, oom_kills) => classify(&s, &stderr, oom_kills),
    };
    if status != BenchStatus::Ok {
        return Ok(BenchPoint::new(&arch.name, t, batch, status));
    }
    read_point(&files.result).or_else(|e| {
        let why = format!("the measurement exited cleanly but its result is unreadable: {e:#}");
        Ok(BenchPoint::new(&arch.name, t, batch, BenchStatus::Failed(why)))
    })
}

/// The architecture's config reshaped for one point: T, the batch, no accumulation, a
/// position table long enough for T (plus the decoded tokens), and the chosen precision.
fn point_config(arch: &PlannedArch, t: usize, batch: usize, opts: &BenchOptions) -> Result<RunConfig> {
    let mut cfg = arch.cfg.clone();
    cfg.train.seq_len = t;
    cfg.train.batch_size = batch;
    cfg.train.grad_accum = 1;
    let decoded = if opts.inference { opts.decode_tokens + 1 } else { 0 };
    let needed = t + decoded + cfg.model.hymba.meta_tokens;
    cfg.model.max_seq_len = cfg.model.max_seq_len.max(needed);
    if let Some(p) = &opts.precision {
        cfg.train.precision = parse_precision(p)?;
    }
    cfg.validate().with_context(|| format!("config of `{}` at T={t}", arch.name))?;
    Ok(cfg)
}

fn point_args(
    files: &PointFiles,
    t: usize,
    batch: usize,
    resolved: Resolved,
    opts: &BenchOptions,
) -> Vec<String> {
    let mut args: Vec<String> = vec!["bench-point".into(), "--config".into(), path_arg(&files.config)];
    for (flag, value) in [
        ("--seq-len", t),
        ("--batch", batch),
        ("--steps", opts.steps),
        ("--decode-tokens", opts.decode_tokens),
    ] {
        args.extend([flag.to_string(), value.to_string()]);
    }
    if opts.inference {
        args.push("--inference".into());
    }
    if let Some(tokens) = &opts.tokens {
        args.extend(["--tokens".into(), path_arg(tokens)]);
    }
    // The parent resolved the device once; the child gets it by name, never `auto`.
    args.extend(["--device".into(), resolved.name().into(), "--out".into(), path_arg(&files.result)]);
    args
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn read_point(path: &Path) -> Result<BenchPoint> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))
}

/// Why longer sequences of the same architecture are not worth trying after this point:
/// they would need more memory (or more time) than this one already lacked.
fn skip_reason(status: &BenchStatus, t: usize) -> Option<String> {
    match status {
        BenchStatus::OutOfMemory => Some(format!("skipped: out of memory at T={t}")),
        BenchStatus::Failed(m) if m.starts_with("timed out") => Some(format!("skipped: timed out at T={t}")),
        _ => None,
    }
}

/// The precision the points ran at: the architectures' (after `--precision`), with `auto`
/// resolved as `train::use_bf16` does it (bf16 on a GPU, f32 on the CPU).
fn precision_name(archs: &[PlannedArch], opts: &BenchOptions, resolved: Resolved) -> String {
    let chosen = opts.precision.as_deref().and_then(|p| parse_precision(p).ok());
    let p = chosen.or(archs.first().map(|a| a.cfg.train.precision)).unwrap_or(Precision::Auto);
    match p {
        Precision::F32 => "f32".into(),
        Precision::Bf16 => "bf16".into(),
        Precision::Auto if resolved == Resolved::Cpu => "f32".into(),
        Precision::Auto => "bf16".into(),
    }
}

fn progress_line(p: &BenchPoint, took: Duration) -> String {
    let head = format!("{} T={} batch {}", p.arch, p.seq_len, p.batch);
    let took = took.as_secs_f64();
    if p.status != BenchStatus::Ok {
        return format!("{head}: {} ({took:.0} s)", crate::report::bench_status(&p.status));
    }
    let mut s = format!(
        "{head}: train {}/s, median step {:.3} s, warm-up {:.2} s, peak {}",
        opt_human(p.train_tokens_per_s),
        p.median_step_s.unwrap_or(0.0),
        p.warmup_s.unwrap_or(0.0),
        human_bytes(p.peak_memory_bytes.unwrap_or(0))
    );
    if let Some(m) = p.mfu {
        s += &format!(", MFU {:.1}%", m * 100.0);
    }
    if p.prefill_tokens_per_s.is_some() {
        s += &format!(
            ", prefill {}/s, decode {}/s",
            opt_human(p.prefill_tokens_per_s),
            opt_human(p.decode_tokens_per_s)
        );
    }
    s + &format!(" ({took:.0} s)")
}

fn opt_human(x: Option<f64>) -> String {
    x.map_or("–".into(), human)
}
