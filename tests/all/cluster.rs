//! A comparison beyond one process: `--jobs` local workers, the plan's runs one `--run-index`
//! process at a time (what each Slurm array task runs), and real Slurm job arrays submitted to
//! a single-node cluster on this machine (`tools/slurm_cluster.sh`, started by CI). Each way
//! must give the losses of the comparison run in one go, bit for bit.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::temp_dir;
use archlab::compare::results::ComparisonResults;

/// 2 architectures, an LR grid of 2 and 2 seeds: runs 0–3 are the grid (dense, then mamba2),
/// runs 4–5 the second seeds at the winning rates.
const PLAN: &[&str] = &[
    "compare",
    "dense",
    "mamba2",
    "--seeds",
    "2",
    "--lr-grid",
    "1e-3,3e-3",
    "--steps",
    "4",
    "--budget",
    "60k",
    "--set",
    "data.builtin_bytes=300000",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.seq_len=32",
    "--set",
    "eval.every=2",
    "--set",
    "eval.batches=2",
    "--bench-seq-lens",
    "--device",
    "cpu",
    "--quiet",
];

fn archlab(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archlab")).args(args).current_dir(cwd).output().expect("binary runs")
}

fn plan_into(dir: &Path, extra: &[&str]) -> Vec<String> {
    let d = dir.display().to_string();
    PLAN.iter().copied().chain(["--dir", &d]).chain(extra.iter().copied()).map(String::from).collect()
}

fn run_ok(args: &[String], cwd: &Path) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = archlab(&args, cwd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "archlab {}:\n{stderr}", args.join(" "));
    stderr
}

fn run_err(args: &[&str], cwd: &Path) -> String {
    let out = archlab(args, cwd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "archlab {} should have failed:\n{stderr}", args.join(" "));
    stderr
}

fn results(dir: &Path) -> ComparisonResults {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Every architecture's chosen rate and (seed, final validation loss as bits) per run.
fn losses(r: &ComparisonResults) -> BTreeMap<String, (u64, Vec<(u64, u64)>)> {
    r.archs
        .iter()
        .map(|a| {
            let runs = a.runs.iter().map(|r| (r.seed, r.summary.final_val_loss.to_bits())).collect();
            (a.name.clone(), (a.lr.to_bits(), runs))
        })
        .collect()
}

fn setting<'a>(r: &'a ComparisonResults, key: &str) -> Option<&'a str> {
    r.settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The plan emitted for Slurm, its runs trained one `--run-index` process each (in the order
/// the job arrays allow), then finished: the same losses as the comparison trained here with
/// `--jobs 2`. Along the way: every bad `--run-index` is refused before any work, and the
/// report of a comparison under way covers what finished and names the rest.
#[test]
fn a_plan_run_index_by_index_equals_the_comparison_run_here() {
    let dir = temp_dir("cluster-run-index");
    let local = dir.join("local");
    run_ok(&plan_into(&local, &["--jobs", "2"]), &dir);
    let reference = results(&local);
    assert_eq!(reference.archs.len(), 2);
    assert!(reference.archs.iter().all(|a| a.runs.len() == 2 && a.lr_trials.len() == 2));
    let shared = setting(&reference, "runs").expect("the report says the runs shared the machine");
    assert!(shared.starts_with("2 at once"), "{shared}");

    let split = dir.join("split");
    let s_owned = split.display().to_string();
    let s = s_owned.as_str();
    let out = archlab(
        &plan_into(&split, &["--emit", "slurm"]).iter().map(String::as_str).collect::<Vec<_>>(),
        &dir,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!split.join("runs").exists(), "--emit trains nothing");
    let grid = std::fs::read_to_string(split.join("slurm/grid.sbatch")).unwrap();
    assert!(
        grid.contains("#SBATCH --array=0-3") && grid.contains("--run-index \"$SLURM_ARRAY_TASK_ID\""),
        "{grid}"
    );
    let seeds = std::fs::read_to_string(split.join("slurm/seeds.sbatch")).unwrap();
    assert!(seeds.contains("#SBATCH --array=4-5"), "{seeds}");
    let submit = std::fs::read_to_string(split.join("slurm/submit.sh")).unwrap();
    assert!(submit.contains("afterany") && submit.contains("final.sbatch"), "{submit}");

    // Bad indices, before any work.
    let err = run_err(&["compare", "--dir", s, "--run-index", "6"], &dir);
    assert!(err.contains("out of range") && err.contains("has 6 runs"), "{err}");
    let err = run_err(&["compare", "--dir", s, "--run-index", "4"], &dir);
    assert!(err.contains("needs the learning-rate grid of dense to finish first"), "{err}");
    assert!(!split.join("runs/00-dense").exists(), "{err}");
    let other = dir.join("other");
    let err = run_err(&["compare", "--dir", &other.display().to_string(), "--run-index", "0"], &dir);
    assert!(err.contains("holds no comparison plan"), "{err}");
    let mut different = plan_into(&split, &["--run-index", "0"]);
    different[2] = "mamba".into();
    let different: Vec<&str> = different.iter().map(String::as_str).collect();
    assert!(run_err(&different, &dir).contains("holds a different comparison"));

    // dense's grid, then a report of what finished: mamba2 is still missing.
    for i in ["0", "1"] {
        run_ok(&["compare", "--dir", s, "--run-index", i].map(String::from), &dir);
    }
    run_ok(&["report", s].map(String::from), &dir);
    let md = std::fs::read_to_string(split.join("report.md")).unwrap();
    assert!(md.contains("## Incomplete") && md.contains("#2 mamba2 seed 0, lr 1e-3: not started"), "{md}");
    assert!(md.contains("#5 mamba2 seed 1, the grid's winning lr: waits for the grid"), "{md}");
    let err = run_err(&["compare", "--dir", s, "--finish"], &dir);
    assert!(err.contains("4 of 6 runs have not finished"), "{err}");

    for i in ["2", "3", "4", "5"] {
        run_ok(&["compare", "--dir", s, "--run-index", i].map(String::from), &dir);
    }
    // A finished run is kept, not trained again.
    let again = run_ok(&["compare", "--dir", s, "--run-index", "4"].map(String::from), &dir);
    assert!(again.contains("finished earlier, kept"), "{again}");
    run_ok(&["compare", "--dir", s, "--finish"].map(String::from), &dir);
    let split_results = results(&split);
    assert_eq!(losses(&split_results), losses(&reference));
    assert!(split_results.missing.is_empty());
    let how = setting(&split_results, "runs").unwrap();
    assert!(how.contains("--run-index"), "{how}");
}

/// Whether a Slurm cluster answers here; otherwise why not.
fn slurm_cluster() -> Result<(), String> {
    match Command::new("sinfo").args(["-h", "-o", "%T"]).output() {
        Err(e) => Err(format!("sinfo cannot run ({e}): install slurm-wlm and start tools/slurm_cluster.sh")),
        Ok(out) if !out.status.success() => Err(format!(
            "sinfo fails ({}): start a cluster with tools/slurm_cluster.sh and export its SLURM_CONF",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(out) if out.stdout.is_empty() => Err("the cluster has no nodes".into()),
        Ok(_) => Ok(()),
    }
}

/// The emitted job arrays, submitted to a real Slurm and chained by their dependencies, give the
/// losses of the comparison trained here in one go. Skips without a cluster, unless
/// `ARCHLAB_REQUIRE_SLURM` is set (CI sets it after starting one).
#[test]
fn slurm_job_arrays_reproduce_the_comparison_run_here() {
    if let Err(why) = slurm_cluster() {
        assert!(
            std::env::var_os("ARCHLAB_REQUIRE_SLURM").is_none(),
            "ARCHLAB_REQUIRE_SLURM is set but {why}"
        );
        eprintln!("skipping: {why}");
        return;
    }
    let dir = temp_dir("cluster-slurm");
    let local = dir.join("local");
    run_ok(&plan_into(&local, &[]), &dir);

    let jobs = dir.join("slurm");
    run_ok(&plan_into(&jobs, &["--emit", "slurm", "--slurm-cpus", "1", "--slurm-time", "20:00"]), &dir);
    let submit = Command::new("bash").arg(jobs.join("slurm/submit.sh")).output().unwrap();
    let said = String::from_utf8_lossy(&submit.stdout).into_owned();
    assert!(submit.status.success(), "{said}{}", String::from_utf8_lossy(&submit.stderr));
    let ids: Vec<String> =
        said.split_whitespace().filter_map(|w| w.split_once('=').map(|(_, id)| id.to_string())).collect();
    assert_eq!(ids.len(), 3, "{said}");

    let start = Instant::now();
    loop {
        let queue = Command::new("squeue").args(["-h", "-j", &ids.join(",")]).output().unwrap();
        if queue.status.success() && queue.stdout.is_empty() {
            break;
        }
        if start.elapsed() > Duration::from_secs(900) {
            let _ = Command::new("scancel").args(&ids).status();
            panic!("the jobs did not end within 15 minutes:\n{}", String::from_utf8_lossy(&queue.stdout));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    if !jobs.join("results.json").exists() {
        let mut logs = String::new();
        for f in std::fs::read_dir(jobs.join("slurm/logs")).unwrap() {
            let f = f.unwrap().path();
            logs += &format!("--- {}\n{}", f.display(), std::fs::read_to_string(&f).unwrap_or_default());
        }
        panic!("the final job wrote no results; the jobs' logs:\n{logs}");
    }
    assert_eq!(losses(&results(&jobs)), losses(&results(&local)));
}
