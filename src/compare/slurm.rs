//! `compare --emit slurm`: a comparison as Slurm job arrays, one array task per run, chained by
//! what each stage needs: the learning-rate grid, then the seeds at each architecture's winning
//! rate, then one job for the scaling measurement, the text samples and the report.
//!
//! Every task runs `archlab compare --dir DIR --run-index $SLURM_ARRAY_TASK_ID`: the plan comes
//! from `DIR/compare.json`, the run's number is its place in `runs::slots`, and the task writes
//! only its own run directory, atomically and under the run's lock. A stage waits for the
//! previous one to end (`afterany`, not `afterok`): a failed grid trial then fails only the
//! seeds of its own architecture, with a message that says so, and the final job draws the
//! report of what finished and names the rest. Submitting again reruns only the runs that did
//! not finish (finished ones are kept; stopped ones resume from their checkpoints).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::runs::{Slot, Stage, Unit, stage_ranges};
use super::spec::{CompareRequest, SlurmOptions};
use crate::util::atomic;

/// The script that submits the chain, in `DIR/slurm/`.
pub const SUBMIT: &str = "submit.sh";

/// Slurm's default `MaxArraySize`: array task ids must stay below it.
const DEFAULT_MAX_ARRAY_SIZE: usize = 1001;

/// Writes `DIR/slurm/`: one `sbatch` script per stage and the final job, and `submit.sh`, which
/// submits them chained. Returns the files written.
pub fn emit(dir: &Path, units: &[Unit], slots: &[Slot], args: &CompareRequest) -> Result<Vec<PathBuf>> {
    let opts = args.slurm_options()?;
    let dir = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
    let out = dir.join("slurm");
    std::fs::create_dir_all(out.join("logs")).with_context(|| format!("cannot create {}", out.display()))?;
    // The binary that wrote the plan runs it: the plan's meaning (sizing, run numbers) is this
    // version's. It must be on a file system the nodes share.
    let exe = std::env::current_exe().context("cannot find the archlab binary to put in the job scripts")?;
    let device = match args.devices {
        1 => args.arch.device.name().to_string(),
        n => format!("{} --devices {n}", args.arch.device.name()),
    };
    let title = &units[0].spec.title;
    let base = format!("{} compare --dir {}", quote(&exe), quote(&dir));

    let mut written = Vec::new();
    let mut chain = Vec::new();
    for (stage, range) in stage_ranges(slots) {
        let (name, what) = match stage {
            Stage::Grid => ("grid", "the learning-rate grid, on each architecture's first seed"),
            Stage::Seeds => ("seeds", "every further seed, at its architecture's winning learning rate"),
        };
        let header = Header {
            title,
            what,
            job: format!("archlab-{name}"),
            array: Some(format!("{}-{}", range.start, range.end - 1)),
            log: out.join("logs").join(format!("{name}-%A_%a.out")),
        };
        let command = format!("{base} --run-index \"$SLURM_ARRAY_TASK_ID\" --device {device} --quiet");
        let path = out.join(format!("{name}.sbatch"));
        atomic::write(&path, script(&header, &opts, &command).as_bytes())?;
        written.push(path);
        chain.push(name);
        if range.end > DEFAULT_MAX_ARRAY_SIZE {
            eprintln!(
                "note: this comparison has {} runs; Slurm refuses array task ids of {DEFAULT_MAX_ARRAY_SIZE} \
                 and above unless the cluster's MaxArraySize is raised (scontrol show config)",
                slots.len()
            );
        }
    }
    let header = Header {
        title,
        what: "the scaling measurement, the text samples and the report, once every run has finished",
        job: "archlab-final".into(),
        array: None,
        log: out.join("logs").join("final-%j.out"),
    };
    let command = format!("{base} --finish --device {device} --quiet");
    let path = out.join("final.sbatch");
    atomic::write(&path, script(&header, &opts, &command).as_bytes())?;
    written.push(path);
    chain.push("final");

    let path = out.join(SUBMIT);
    atomic::write(&path, submit_script(title, &chain).as_bytes())?;
    written.push(path);
    Ok(written)
}

struct Header<'a> {
    title: &'a str,
    what: &'a str,
    job: String,
    array: Option<String>,
    log: PathBuf,
}

fn script(h: &Header, opts: &SlurmOptions, command: &str) -> String {
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("# archlab comparison \"{}\": {}.", h.title, h.what),
        format!("#SBATCH --job-name={}", h.job),
    ];
    if let Some(array) = &h.array {
        lines.push(format!("#SBATCH --array={array}"));
    }
    lines.push(format!("#SBATCH --output={}", h.log.display()));
    let mut opt = |flag: &str, value: Option<String>| {
        if let Some(v) = value {
            lines.push(format!("#SBATCH --{flag}={v}"));
        }
    };
    opt("partition", opts.partition.clone());
    opt("account", opts.account.clone());
    opt("time", opts.time.clone());
    opt("gpus-per-task", opts.gpus.map(|n| n.to_string()));
    opt("cpus-per-task", opts.cpus.map(|n| n.to_string()));
    opt("mem", opts.mem.clone());
    for extra in &opts.lines {
        lines.push(format!("#SBATCH {}", extra.trim()));
    }
    lines.push("set -euo pipefail".into());
    lines.push(format!("exec {command}"));
    lines.join("\n") + "\n"
}

/// `submit.sh`: each job after the previous one has ended, whatever its outcome.
fn submit_script(title: &str, chain: &[&str]) -> String {
    let mut s = format!(
        "#!/bin/bash\n\
         # Submits the archlab comparison \"{title}\" as chained Slurm jobs, each after the\n\
         # previous one has ended. Submitting again reruns only the runs that have not finished:\n\
         # finished runs are kept, stopped ones resume from their checkpoints.\n\
         set -euo pipefail\n\
         cd \"$(dirname \"$0\")\"\n\
         ids=\n"
    );
    for (i, name) in chain.iter().enumerate() {
        let after = if i == 0 { String::new() } else { " --dependency=afterany:$id".into() };
        s += &format!(
            "id=$(sbatch --parsable{after} {name}.sbatch)\n\
             id=${{id%%;*}}\n\
             ids=\"$ids {name}=$id\"\n"
        );
    }
    s += "echo \"submitted:$ids\"\n";
    s
}

/// `path` as one shell word.
fn quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
