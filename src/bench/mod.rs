//! `archlab bench`: sequence-length scaling of training and inference throughput and memory.
//!
//! For every architecture and every sequence length T the bench measures one point: training
//! tokens/s at a fixed number of tokens per step (batch = tokens_per_step / T, at least 1),
//! the peak memory of that training, and optionally prefill and decoding tokens/s. Each point
//! runs in its own process (`archlab bench-point`, see `point`), started and judged by
//! `child`: its memory is its own, and an out-of-memory point is reported as such while the
//! bench goes on. Once an architecture runs out of memory (or time) at some T, its longer T's
//! are not tried: they would need more.

mod child;
mod point;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::cli::BenchArgs;
use crate::compare::arch::DEFAULT_ARCHS;
use crate::compare::plan::{PlannedArch, plan_archs};
use crate::compare::results::{BenchPoint, BenchResults, BenchStatus};
use crate::compare::sizing::{MatchBy, parse_budget};
use crate::config::{Precision, RunConfig};
use crate::device::{self, DeviceArg, Resolved};
use crate::train::{human, human_bytes};
use crate::util::atomic;

pub use child::{MEMORY_LIMIT_ENV, classify};
pub use point::run_point;

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
    /// Where each point's config, result and stderr log are written.
    pub work_dir: PathBuf,
    /// No progress lines.
    pub quiet: bool,
}

/// The `bench` command: plan the architectures, measure, write `bench.json` and the report,
/// print the table.
pub fn run(args: BenchArgs) -> Result<()> {
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
        work_dir: args.out.join("points"),
        quiet: false,
    };
    let results = measure(&archs, &opts)?;
    let json = args.out.join("bench.json");
    atomic::write_json(&json, &results)?;
    let mut files = vec![json];
    files.extend(crate::report::write_bench(&args.out, &results)?);
    println!(
        "{} · {} · {} tokens per training step\n",
        results.device, results.precision, results.tokens_per_step
    );
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
            let mut p = match &skip {
                Some(why) => unmeasured(&arch.name, t, batch, BenchStatus::Failed(why.clone())),
                None => {
                    let files = PointFiles::new(&opts.work_dir, i, &arch.name, t);
                    measure_one(&exe, arch, t, batch, resolved, opts, &files)?
                }
            };
            p.arch = arch.name.clone();
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
        precision: precision_name(archs, opts, resolved),
        tokens_per_step: opts.tokens_per_step,
        points,
    })
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
        child::Ended::Exited(s) => classify(&s, &stderr),
    };
    if status != BenchStatus::Ok {
        return Ok(unmeasured(&arch.name, t, batch, status));
    }
    read_point(&files.result).or_else(|e| {
        let why = format!("the measurement exited cleanly but its result is unreadable: {e:#}");
        Ok(unmeasured(&arch.name, t, batch, BenchStatus::Failed(why)))
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

/// A point with a status and no numbers.
fn unmeasured(arch: &str, seq_len: usize, batch: usize, status: BenchStatus) -> BenchPoint {
    BenchPoint {
        arch: arch.into(),
        seq_len,
        batch,
        status,
        train_tokens_per_s: None,
        step_time_s: None,
        peak_memory_bytes: None,
        prefill_tokens_per_s: None,
        decode_tokens_per_s: None,
    }
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
        "{head}: train {}/s, step {:.2} s, peak {}",
        opt_human(p.train_tokens_per_s),
        p.step_time_s.unwrap_or(0.0),
        human_bytes(p.peak_memory_bytes.unwrap_or(0))
    );
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
