//! Each training run of a comparison in its own process (`archlab train-run`, hidden), so that
//! what a run measures is its own: the CPU's peak resident memory cannot be reset within a
//! process (the allocator keeps what it freed), nor a GPU allocator's pool released, so runs
//! sharing one process would report the largest peak so far instead of theirs. A crash of one
//! run also ends only that run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use super::runs::RunOptions;
use crate::config::RunConfig;
use crate::device::{self, DeviceArg, Resolved};
use crate::train::{self, TrainOptions};
use crate::with_backend;

/// What the child process is asked to do: train the run whose resolved config is in
/// `run_dir/config.toml`.
#[derive(Clone, Debug)]
pub struct TrainRunRequest {
    pub run_dir: PathBuf,
    pub device: DeviceArg,
    /// Continue from `run_dir/last.ckpt`.
    pub resume: bool,
    pub quiet: bool,
    /// The PID of the comparison that started the run: the run ends with it.
    pub parent: Option<u32>,
    /// Devices the run trains on in data parallel.
    pub devices: usize,
}

/// The child's side: trains the run to its end (its `summary.json` is the result).
pub fn train_run(req: TrainRunRequest) -> Result<()> {
    exit_with_parent(req.parent);
    let cfg = RunConfig::load(&req.run_dir.join("config.toml"))?;
    let resolved = device::resolve(req.device)?;
    device::check_data_parallel(resolved, req.devices)?;
    let opts = TrainOptions {
        devices: req.devices,
        run_dir: req.run_dir.clone(),
        resume: req.resume,
        stop_after: None,
        progress: !req.quiet,
        device_name: resolved.name().into(),
        on_gpu: resolved != Resolved::Cpu,
        device_memory: device::memory_probe(resolved),
    };
    let outcome = with_backend!(resolved, |B, dev| train::train::<B>(&cfg, &dev, &opts))?;
    match outcome.summary {
        Some(_) => Ok(()),
        None => bail!("{} stopped before its last step", req.run_dir.display()),
    }
}

/// Ends this process when the comparison that started it ends (killed, interrupted): an
/// orphaned run would go on holding its directory's lock and writing into it while the
/// comparison is rerun. (Its lock is then stale, and the rerun takes it over and resumes it; a
/// rerun that comes before this process has noticed waits for it.) `parent` is the PID the
/// comparison passed: one killed before this process started looking is noticed too.
fn exit_with_parent(parent: Option<u32>) {
    crate::util::lock::exit_with_parent(
        parent,
        "archlab: the comparison that started this run has ended; stopping the run",
    );
}

/// The parent's side: writes `cfg` as the run's config (unless resuming, when the run's own is
/// used) and runs the child to its end; its progress and messages go to this process's stderr.
pub fn spawn_train_run(cfg: &RunConfig, run_dir: &Path, opts: &RunOptions, resume: bool) -> Result<()> {
    if !resume {
        crate::util::atomic::write(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    }
    let mut cmd = Command::new(own_binary()?);
    cmd.arg("train-run").arg("--run-dir").arg(run_dir).args(["--device", opts.device.name()]);
    cmd.arg("--parent").arg(std::process::id().to_string());
    if resume {
        cmd.arg("--resume");
    }
    if opts.quiet {
        cmd.arg("--quiet");
    }
    if opts.devices > 1 {
        cmd.arg("--devices").arg(opts.devices.to_string());
    }
    if let Some(n) = opts.threads {
        cmd.env("RAYON_NUM_THREADS", n.to_string());
    }
    // The child runs its matmuls as this process does (`--matmul`).
    cmd.env(crate::kernels::MATMUL_ENV, crate::kernels::matmul_choice());
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot start the training process of {}", run_dir.display()))?;
    if !status.success() {
        bail!(
            "the training run {} failed ({status}); its error is printed above. Fix it and rerun the same \
             compare command: finished runs are kept",
            run_dir.display()
        );
    }
    Ok(())
}

/// This process's binary. On Linux through `/proc/<pid>/exe`, which still runs it after a
/// rebuild has replaced the file on disk (`current_exe()` then names a deleted path).
pub fn own_binary() -> Result<PathBuf> {
    let proc_exe = PathBuf::from(format!("/proc/{}/exe", std::process::id()));
    if proc_exe.exists() {
        return Ok(proc_exe);
    }
    std::env::current_exe().context("cannot find the archlab binary to run a training process")
}
