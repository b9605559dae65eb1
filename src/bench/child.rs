//! Running one `bench-point` child process: a time limit, on the CPU an address-space limit,
//! and how its end is read (finished, out of memory, failed).
//!
//! Why a process per point: its peak memory is its own (VmHWM, or the GPU allocator's pool),
//! and running out of memory ends only that point. Why an address-space limit on the CPU: a
//! point that needs more memory than the machine has would otherwise swap for hours or get
//! some other process OOM-killed; under `ulimit -v` its allocation fails at once and Rust
//! aborts with "memory allocation of N bytes failed", which is classified as out of memory.
//! No limit on a GPU: CUDA reserves huge virtual ranges that such a limit would break.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::compare::results::BenchStatus;

/// Overrides the CPU address-space limit of every point, in MiB (tests use it to force an
/// out-of-memory point; a user can use it to keep a bench well inside the machine).
pub const MEMORY_LIMIT_ENV: &str = "ARCHLAB_BENCH_MEMORY_LIMIT_MB";

/// Texts in a child's stderr that mean it ran out of memory: Rust's allocation-failure abort,
/// the OS's ENOMEM, burn/cubecl's and CUDA's out-of-memory errors. Matched case-insensitively.
const OOM_MARKERS: &[&str] = &[
    "memory allocation of",
    "out of memory",
    "outofmemory",
    "out_of_memory", // CUDA_ERROR_OUT_OF_MEMORY
    "cannot allocate memory",
];

/// One child to run: the program, its arguments and its limits.
pub struct ChildSpec {
    pub exe: PathBuf,
    pub args: Vec<String>,
    /// Where its stderr goes (kept: the reason of a failure is in there).
    pub stderr_log: PathBuf,
    pub timeout: Duration,
    /// Address-space limit in KiB (`ulimit -v`), `None` for none.
    pub memory_limit_kb: Option<u64>,
}

/// How a child ended.
pub enum Ended {
    /// It exited; with the kernel's out-of-memory kills during its life where the kernel
    /// counts them (`oom_kill` in /proc/vmstat, Linux), `None` elsewhere.
    Exited(ExitStatus, Option<u64>),
    /// Still running at the time limit; it was killed.
    TimedOut,
}

/// The kernel's count of out-of-memory kills since boot (Linux ≥ 4.13), machine-wide.
fn oom_kills() -> Option<u64> {
    let vmstat = std::fs::read_to_string("/proc/vmstat").ok()?;
    vmstat.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok())
}

/// Runs the child to its end or its time limit; returns how it ended and its stderr.
pub fn run(spec: &ChildSpec) -> Result<(Ended, String)> {
    let stderr =
        File::create(&spec.stderr_log).with_context(|| format!("creating {}", spec.stderr_log.display()))?;
    let mut cmd = match spec.memory_limit_kb {
        // `$0` is the limit and `"$@"` the command, so no argument is ever re-parsed by sh.
        Some(kb) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(r#"ulimit -v "$0" && exec "$@""#).arg(kb.to_string()).arg(&spec.exe);
            c
        }
        None => Command::new(&spec.exe),
    };
    // The child runs its matmuls as this process does (`--matmul`).
    cmd.env(crate::kernels::MATMUL_ENV, crate::kernels::matmul_choice());
    cmd.args(&spec.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(stderr);
    let oom_before = oom_kills();
    let mut child = cmd.spawn().with_context(|| format!("starting {}", spec.exe.display()))?;
    let deadline = Instant::now() + spec.timeout;
    let ended = loop {
        if let Some(status) = child.try_wait().context("waiting for a bench point")? {
            let oom_during = oom_before.zip(oom_kills()).map(|(before, after)| after.saturating_sub(before));
            break Ended::Exited(status, oom_during);
        }
        if Instant::now() >= deadline {
            child.kill().ok(); // it may have exited just now
            child.wait().ok();
            break Ended::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&spec.stderr_log).unwrap_or_default();
    Ok((ended, text))
}

/// The status of a child that exited (not timed out): `Ok` on success; `OutOfMemory` when its
/// stderr says it ran out of memory, or it was SIGKILLed (what the Linux OOM killer sends)
/// while the kernel counted an out-of-memory kill (`oom_kills_during`; where the kernel does
/// not count them, `None`, a SIGKILL is taken for one); otherwise `Failed` with the last line
/// of its stderr, or how it ended.
pub fn classify(status: &ExitStatus, stderr: &str, oom_kills_during: Option<u64>) -> BenchStatus {
    if status.success() {
        return BenchStatus::Ok;
    }
    let lower = stderr.to_lowercase();
    if OOM_MARKERS.iter().any(|m| lower.contains(m)) {
        return BenchStatus::OutOfMemory;
    }
    if killed_by_sigkill(status) {
        return match oom_kills_during {
            Some(0) => BenchStatus::Failed(
                "killed by SIGKILL, not by the out-of-memory killer (the kernel counted no OOM kill)".into(),
            ),
            _ => BenchStatus::OutOfMemory,
        };
    }
    BenchStatus::Failed(last_line(stderr).unwrap_or_else(|| describe_exit(status)))
}

#[cfg(unix)]
fn killed_by_sigkill(status: &ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

#[cfg(not(unix))]
fn killed_by_sigkill(_: &ExitStatus) -> bool {
    false
}

fn describe_exit(status: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => "exited abnormally".into(),
    }
}

/// The last non-empty line, shortened to something a table cell can hold.
fn last_line(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    const MAX: usize = 300;
    Some(match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    })
}

/// The address-space limit for a CPU point, in KiB: `ARCHLAB_BENCH_MEMORY_LIMIT_MB` when set,
/// else the memory available now minus a margin (10%, at least 512 MiB) so that the rest of
/// the machine keeps running; `None` where /proc/meminfo cannot be read (not Linux).
pub fn cpu_memory_limit_kb() -> Result<Option<u64>> {
    if let Ok(v) = std::env::var(MEMORY_LIMIT_ENV) {
        return match v.trim().parse::<u64>() {
            Ok(mb) if mb > 0 => Ok(Some(mb * 1024)),
            _ => {
                bail!("{MEMORY_LIMIT_ENV}={v:?} is not a positive number of MiB; unset it or write e.g. 4096")
            }
        };
    }
    let Some(available) = meminfo_kb(Path::new("/proc/meminfo"), "MemAvailable:") else {
        return Ok(None);
    };
    let margin = (available / 10).max(512 * 1024);
    let limit = available.saturating_sub(margin).max(1024 * 1024);
    // `ulimit -v` cannot raise a hard limit this process already has.
    Ok(Some(match hard_address_space_limit_kb() {
        Some(hard) => limit.min(hard),
        None => limit,
    }))
}

/// A `Key: N kB` field of a meminfo-style file.
fn meminfo_kb(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The hard `Max address space` limit of this process in KiB, `None` when unlimited.
fn hard_address_space_limit_kb() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    let hard: u64 = line.split_whitespace().nth(4)?.parse().ok()?; // "unlimited" → None
    Some(hard / 1024)
}
