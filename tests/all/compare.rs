//! `archlab compare` end to end through the binary: sizing to a budget, a small comparison's
//! report, and resuming an interrupted comparison without redoing finished runs.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::temp_dir;
use archlab::compare::arch::{NAMES, SIZES};
use archlab::compare::plan::{default_budget, plan_one};
use archlab::compare::results::ComparisonResults;
use archlab::compare::sizing::{MatchBy, TOLERANCE};

#[test]
fn every_architecture_is_sized_within_two_percent() {
    for (size, _) in SIZES {
        for by in [MatchBy::Params, MatchBy::Active, MatchBy::Flops] {
            let dense = default_budget(size, &[], by).unwrap();
            for budget in [dense, 0.6 * dense, 1.7 * dense] {
                for name in NAMES {
                    let a = plan_one(name, name, size, &[], by, budget)
                        .unwrap_or_else(|e| panic!("{name} at {size}, {budget} {by:?}: {e:#}"));
                    let measured = by.measure(&a.cfg.model, a.cfg.train.seq_len);
                    assert_eq!(measured, a.sizing.achieved, "{name}: the reported value is the model's");
                    let err = (measured - budget) / budget;
                    assert!(err.abs() <= TOLERANCE, "{name} at {size} {by:?}: {err:+.4} ({})", a.sizing.knob);
                    assert!((a.sizing.error - err).abs() < 1e-12);
                }
            }
        }
    }
}

/// Iso-state sizing (`--match state`): every named architecture at the tiny size, at the dense
/// model's decoding state at T = 128 and at twice it, is sized within 5% (its reported state
/// being the model's own count) or refused with an error naming the budget and the fix. The
/// architectures of an iso-state study (attention, Mamba-1, Mamba-2, Gated DeltaNet) all fit,
/// though their widths differ widely at the same state.
#[test]
fn architectures_are_sized_to_the_same_decoding_state() {
    let sets = ["train.seq_len=128".to_string()];
    let dense = default_budget("tiny", &sets, MatchBy::State).unwrap();
    for budget in [dense, 2.0 * dense] {
        let mut widths = Vec::new();
        for name in NAMES {
            match plan_one(name, name, "tiny", &sets, MatchBy::State, budget) {
                Ok(a) => {
                    let measured = a.cfg.model.state_bytes(128) as f64;
                    assert_eq!(measured, a.sizing.achieved, "{name}: the reported state is the model's");
                    let err = (measured - budget) / budget;
                    assert!(err.abs() <= 0.05, "{name}: {err:+.4} ({})", a.sizing.knob);
                    widths.push((*name, a.cfg.model.d_model));
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains("cannot size") && msg.contains("state within 5%"), "{name}: {msg}");
                    assert!(!["dense", "mamba", "mamba2", "gdn"].contains(name), "{name}: {msg}");
                }
            }
        }
        let width = |n: &str| widths.iter().find(|(w, _)| *w == n).unwrap().1;
        // Mamba-1 holds d_state = 16 numbers per channel, attention 2·T keys and values per
        // channel of its 4 layers: at the same state it is several times wider.
        assert!(width("mamba") > 2 * width("dense"), "{widths:?}");
    }
}

/// A stack of few wide heads (Gated DeltaNet without MLPs: its state moves in steps of whole
/// heads as the width grows) over budgets spread 1.25× apart: the width alone misses some of
/// them by more than 5%, and turning the key head width (the mixer's state knob) reaches every
/// one, reporting the moved knob; the same for Mamba-1's `d_state` on a narrow Mamba stack.
#[test]
fn the_mixers_own_state_sizes_reach_what_the_width_cannot() {
    let sets = ["train.seq_len=128".to_string()];
    for (pattern, key) in [("GnGnGnGn", "model.gdn.head_dim"), ("MnMn", "model.mamba.d_state")] {
        let mut turned = 0;
        for i in 0..24 {
            let budget = 40e3 * 1.25f64.powi(i);
            let a = plan_one(pattern, pattern, "tiny", &sets, MatchBy::State, budget)
                .unwrap_or_else(|e| panic!("{pattern} at {budget}: {e:#}"));
            let measured = a.cfg.model.state_bytes(128) as f64;
            assert_eq!(measured, a.sizing.achieved);
            let err = (measured - budget) / budget;
            assert!(err.abs() <= 0.05, "{pattern} at {budget}: {err:+.4} ({})", a.sizing.knob);
            if a.sizing.knob.contains(key) {
                turned += 1;
            }
        }
        assert!(
            turned > 0,
            "{pattern}: every budget was reached by the width alone; the test needs one it misses"
        );
    }
}

fn archlab(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archlab")).args(args).current_dir(cwd).output().expect("binary runs")
}

/// A comparison small enough for a test: 2 architectures × 2 seeds of a few steps.
const SMALL: &[&str] = &[
    "compare",
    "dense",
    "mamba2",
    "--seeds",
    "2",
    "--steps",
    "6",
    "--budget",
    "60k",
    "--set",
    "data.builtin_bytes=300000",
    "--set",
    "train.batch_size=4",
    "--set",
    "train.seq_len=32",
    "--set",
    "eval.every=3",
    "--set",
    "eval.batches=2",
    "--set",
    "train.checkpoint_every=2",
    "--bench-seq-lens",
    "16,32",
    "--device",
    "cpu",
    "--quiet",
];

fn small_compare(extra: &[&str]) -> Vec<String> {
    SMALL.iter().chain(extra).map(|s| s.to_string()).collect()
}

fn results(dir: &Path) -> ComparisonResults {
    serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
}

/// The report's table: header, then one row per architecture, every cell filled.
fn check_report(dir: &Path, archs: &[&str]) {
    let md = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let header = "| Architecture | Params (active) | Val loss ± 95% CI | PPL | bits/byte | Tokens/s | Peak memory | Wall time | NaN skips | Notes |";
    let at = md.find(header).unwrap_or_else(|| panic!("no comparison table in report.md:\n{md}"));
    let rows: Vec<&str> = md[at..].lines().skip(2).take_while(|l| l.starts_with('|')).collect();
    assert_eq!(rows.len(), archs.len(), "{md}");
    for (row, arch) in rows.iter().zip(archs) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 10, "{row}");
        assert!(cells.iter().all(|c| !c.is_empty()), "empty cell in {row}");
        assert!(row.contains(arch), "{row}");
    }
    assert!(md.contains("beats") || md.contains("within noise"), "no verdict line:\n{md}");

    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("<svg") && !html.contains("src=\"http"), "the HTML is self-contained");
    let plots: Vec<_> = std::fs::read_dir(dir.join("plots")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(plots.len() >= 3, "{plots:?}");
    for plot in plots {
        let svg = std::fs::read_to_string(&plot).unwrap();
        let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{}: {e}", plot.display()));
        assert_eq!(doc.root_element().tag_name().name(), "svg", "{}", plot.display());
    }
}

#[test]
fn a_small_comparison_writes_a_complete_report() {
    let dir = temp_dir("compare-small");
    let out_dir = dir.join("cmp");
    let mut args = small_compare(&[]);
    args.extend(["--dir".into(), out_dir.display().to_string()]);
    let out = Command::new(env!("CARGO_BIN_EXE_archlab")).args(&args).current_dir(&dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let r = results(&out_dir);
    assert_eq!(r.archs.len(), 2);
    for a in &r.archs {
        assert_eq!(a.runs.len(), 2, "{}", a.name);
        assert!(a.budget_error.abs() <= TOLERANCE);
        assert!(a.sample.as_deref().is_some_and(|s| s.starts_with("Once upon a time")));
        let seeds: Vec<u64> = a.runs.iter().map(|r| r.seed).collect();
        assert_eq!(seeds, [0, 1]);
        for run in &a.runs {
            assert_eq!(run.summary.steps, 6);
            assert_eq!(run.curve.len(), 3, "evaluations at steps 0, 3, 6");
            assert!(run.summary.health.iter().all(|h| h.causal && h.mixes), "{:?}", run.summary.health);
        }
    }
    // Same data for every architecture: seed k's runs saw the same number of tokens.
    assert_eq!(r.archs[0].runs[1].summary.tokens_seen, r.archs[1].runs[1].summary.tokens_seen);
    let bench = r.bench.expect("scaling measured");
    assert_eq!(bench.points.len(), 4);
    check_report(&out_dir, &["dense", "mamba2"]);

    // `archlab report` redraws the report from results.json alone.
    std::fs::remove_file(out_dir.join("report.md")).unwrap();
    let out = archlab(&["report", &out_dir.display().to_string()], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_report(&out_dir, &["dense", "mamba2"]);
}

#[test]
fn an_interrupted_comparison_continues_without_redoing_finished_runs() {
    let dir = temp_dir("compare-resume");
    let out_dir = dir.join("cmp");
    let mut args = small_compare(&[]);
    args.extend(["--dir".into(), out_dir.display().to_string()]);
    let first_summary = out_dir.join("runs/00-dense/lr3e-3-seed0/summary.json");

    // Kill the comparison as soon as its first run has finished.
    let mut child = Command::new(env!("CARGO_BIN_EXE_archlab"))
        .args(&args)
        .current_dir(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !first_summary.exists() {
        assert!(start.elapsed() < Duration::from_secs(300), "the first run never finished");
        assert!(child.try_wait().unwrap().is_none(), "the comparison ended before its first run did");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The run it had started, in a process of its own, stops too; a rerun that comes first
    // waits for it (no sleep here: that is the case under test).
    assert!(!out_dir.join("results.json").exists(), "killed before the end");
    let kept = std::fs::read(&first_summary).unwrap();

    // A different comparison in the same directory is refused.
    let mut other = small_compare(&["--set", "train.lr=1e-3"]);
    other.extend(["--dir".into(), out_dir.display().to_string()]);
    let out = Command::new(env!("CARGO_BIN_EXE_archlab")).args(&other).current_dir(&dir).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("holds a different comparison"), "{err}");

    // The same one continues: the finished run is kept byte for byte, the rest are done.
    let out = Command::new(env!("CARGO_BIN_EXE_archlab")).args(&args).current_dir(&dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("dense seed 0: finished earlier, kept"), "{stderr}");
    assert_eq!(std::fs::read(&first_summary).unwrap(), kept);
    let r = results(&out_dir);
    assert!(r.archs.iter().all(|a| a.runs.len() == 2 && a.runs.iter().all(|r| r.summary.steps == 6)));
    check_report(&out_dir, &["dense", "mamba2"]);
}

/// A run process whose comparison was killed before the run looked for it (between the spawn
/// and its first instruction) stops at once instead of training on under init: it is told its
/// parent's PID and checks it.
#[test]
fn a_run_whose_comparison_is_already_gone_does_not_start() {
    let dir = temp_dir("compare-orphan-run");
    let run_dir = dir.join("run");
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let run = run_dir.display().to_string();
    let out = archlab(
        &["train-run", "--run-dir", &run, "--device", "cpu", "--parent", &gone_pid.to_string()],
        &dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("the comparison that started this run has ended"),
        "{stderr}"
    );
    assert!(!run_dir.join(archlab::util::lock::LOCK_FILE).exists());
}

/// The learning-rate grid is decided on the held-out selection set, not on the reported
/// validation loss: each trial records its selection loss (cached beside its run), and the
/// chosen rate is the one with the lowest.
#[test]
fn the_learning_rate_is_chosen_on_held_out_data() {
    let dir = temp_dir("compare-lr");
    let out_dir = dir.join("cmp");
    let args = [
        "compare",
        "dense",
        "--seeds",
        "1",
        "--steps",
        "4",
        "--budget",
        "60k",
        "--lr-grid",
        "1e-4,3e-3",
        "--set",
        "data.builtin_bytes=300000",
        "--set",
        "train.batch_size=4",
        "--set",
        "train.seq_len=32",
        "--set",
        "eval.every=4",
        "--set",
        "eval.batches=2",
        "--device",
        "cpu",
        "--quiet",
        "--dir",
    ];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(out_dir.display().to_string());
    let out = Command::new(env!("CARGO_BIN_EXE_archlab")).args(&args).current_dir(&dir).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("wins the grid on the held-out selection set"), "{stderr}");
    let a = &results(&out_dir).archs[0];
    assert_eq!(a.lr_trials.len(), 2);
    let selection: Vec<f64> =
        a.lr_trials.iter().map(|t| t.selection_loss.expect("a selection loss")).collect();
    // Scored on other windows than the reported validation loss.
    assert!(a.lr_trials.iter().zip(&selection).all(|(t, s)| *s != t.val_loss), "{:?}", a.lr_trials);
    let best = if selection[0] < selection[1] { 0 } else { 1 };
    assert_eq!(a.lr, a.lr_trials[best].lr);
    for trial in &a.lr_trials {
        let run = out_dir.join(format!("runs/00-dense/lr{:e}-seed0/selection.json", trial.lr));
        assert!(run.exists(), "{}", run.display());
    }
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("| Architecture | Learning rate | Selection loss |"), "{md}");
}

/// Each run of a comparison trains in a process of its own, so the peak memory it reports is
/// its own: Mamba-2 after a dense model at T=512 (whose attention holds T×T scores on the CPU)
/// reports what Mamba-2 alone does, within 10%.
#[test]
fn each_run_reports_its_own_peak_memory() {
    let dir = temp_dir("compare-memory");
    let compare = |archs: &[&str], out: &str| -> ComparisonResults {
        let mut args: Vec<String> = ["compare"].iter().chain(archs).map(|s| s.to_string()).collect();
        for a in [
            "--seeds",
            "1",
            "--steps",
            "2",
            "--budget",
            "60k",
            "--set",
            "data.builtin_bytes=300000",
            "--set",
            "train.batch_size=8",
            "--set",
            "train.seq_len=512",
            "--set",
            "model.max_seq_len=512",
            "--set",
            "eval.batches=1",
            "--device",
            "cpu",
            "--quiet",
            "--dir",
            out,
        ] {
            args.push(a.to_string());
        }
        let out_dir = dir.join(out);
        let run = Command::new(env!("CARGO_BIN_EXE_archlab")).args(&args).current_dir(&dir).output().unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        results(&out_dir)
    };
    let peak = |r: &ComparisonResults, name: &str| -> f64 {
        let a = r.archs.iter().find(|a| a.name == name).unwrap();
        a.runs[0].summary.peak_memory_bytes as f64
    };
    let both = compare(&["dense", "mamba2"], "both");
    let alone = compare(&["mamba2"], "alone");
    let (after_dense, by_itself) = (peak(&both, "mamba2"), peak(&alone, "mamba2"));
    eprintln!(
        "dense {:.0} MiB; mamba2 after it {:.0} MiB, alone {:.0} MiB",
        peak(&both, "dense") / 1048576.0,
        after_dense / 1048576.0,
        by_itself / 1048576.0
    );
    assert!(
        (after_dense / by_itself - 1.0).abs() <= 0.10,
        "mamba2: {after_dense} after dense, {by_itself} alone"
    );
}

/// `--tasks` runs one comparison per task, each in a directory of its own with its own
/// results, and writes one overview of every architecture's accuracy on every task; a task
/// name archlab does not know stops it before any run, naming the known ones.
#[test]
fn a_task_suite_runs_each_task_and_reports_them_together() {
    let dir = temp_dir("compare-tasks");
    let out_dir = dir.join("suite");
    let suite = |tasks: &str| {
        let mut args: Vec<String> = [
            "compare",
            "dense",
            "mamba2",
            "--tasks",
            tasks,
            "--seeds",
            "2",
            "--steps",
            "4",
            "--budget",
            "60k",
            "--set",
            "data.task.vocab=16",
            "--set",
            "data.task.n_pairs=2",
            "--set",
            "data.task.val_sequences=8",
            "--set",
            "train.batch_size=4",
            "--set",
            "train.seq_len=16",
            "--set",
            "eval.every=4",
            "--set",
            "eval.batches=2",
            "--device",
            "cpu",
            "--quiet",
        ]
        .map(String::from)
        .to_vec();
        args.extend(["--dir".into(), out_dir.display().to_string()]);
        Command::new(env!("CARGO_BIN_EXE_archlab")).args(&args).current_dir(&dir).output().unwrap()
    };

    let out = suite("mqar,no-such-task");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-task") && stderr.contains("parity"), "{stderr}");
    assert!(!out_dir.exists(), "nothing is started before every task is planned");

    let out = suite("mqar,task:parity");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for task in ["mqar", "parity"] {
        let r = results(&out_dir.join(task));
        assert_eq!(r.task.as_deref(), Some(task));
        let names: Vec<&str> = r.archs.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["dense", "mamba2"]);
        assert!(r.archs.iter().all(|a| a.runs.len() == 2 && a.runs.iter().all(|s| s.summary.steps == 4)));
    }
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    let header = "| Architecture | task:mqar | task:parity |";
    for text in [&md[..], &stdout[..]] {
        let at = text.find(header).unwrap_or_else(|| panic!("no suite table in:\n{text}"));
        let rows: Vec<&str> = text[at..].lines().skip(2).take_while(|l| l.starts_with('|')).collect();
        assert_eq!(rows.len(), 2, "{text}");
        for (row, arch) in rows.iter().zip(["dense", "mamba2"]) {
            assert!(row.contains(arch) && row.matches('%').count() >= 4, "{row}");
        }
    }
    assert!(md.contains("mqar/report.md") && md.contains("parity/report.md"), "{md}");

    // `archlab report` redraws the overview and every task's report from the results alone.
    std::fs::remove_file(out_dir.join("report.md")).unwrap();
    std::fs::remove_file(out_dir.join("parity").join("report.md")).unwrap();
    let out = archlab(&["report", &out_dir.display().to_string()], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(out_dir.join("report.md")).unwrap(), md);
    assert!(out_dir.join("parity").join("report.md").exists());

    // Rerun with the same arguments: every run is finished, nothing is trained again.
    let out = suite("mqar,task:parity");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("continuing the comparison"), "{stderr}");
}
