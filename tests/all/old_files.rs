//! Files an earlier archlab wrote still work (`tests/fixtures/OLD-FILES.md` says which version
//! and how): a run directory of every sequence mixer evaluates to the loss it recorded,
//! generates, and resumes to exactly the losses that version reached; a comparison directory's
//! report is redrawn, its Hymba branch scales shown through the generic diagnostics.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::temp_dir;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A fresh copy of a fixture directory, so that the test may write into it.
fn copy_of(name: &str, into: &Path) -> PathBuf {
    let to = into.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to
}

fn archlab(args: &[&str], cwd: &Path) -> String {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_archlab"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("binary runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "archlab {args:?} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}

/// `(kind, step, loss)` of every record of a `metrics.jsonl` (`val_loss` for evaluations).
fn losses(path: &Path) -> Vec<(String, u64, f64)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            let loss = r.get("loss").or(r.get("val_loss")).and_then(|v| v.as_f64()).unwrap();
            (r["kind"].as_str().unwrap().to_string(), r["step"].as_u64().unwrap(), loss)
        })
        .collect()
}

#[test]
fn an_old_run_directory_evaluates_generates_and_resumes_exactly() {
    let dir = temp_dir("old-run");
    let run = copy_of("old-run", &dir);
    let run_arg = run.to_str().unwrap();

    // The best checkpoint (step 2) loads into today's modules and gives the loss it was saved at.
    let saved = losses(&run.join("metrics.jsonl"));
    let (_, _, best) = saved.iter().rfind(|(kind, _, _)| kind == "eval").unwrap().clone();
    let eval = archlab(&["eval", "--run", run_arg, "--device", "cpu"], &dir);
    assert!(eval.contains(&format!("| {best:.4} |")), "eval should give {best:.4}:\n{eval}");

    let text = archlab(&["generate", "--run", run_arg, "--max-tokens", "8", "--device", "cpu"], &dir);
    assert!(!text.trim().is_empty());

    // Resuming from `last.ckpt` (weights and optimizer state) reproduces the older version's
    // run bit for bit.
    archlab(&["train", "--run-dir", run_arg, "--resume", "--device", "cpu", "--quiet"], &dir);
    let expected = losses(&fixture("old-run-resumed/metrics.jsonl"));
    assert_eq!(losses(&run.join("metrics.jsonl")), expected);
    let summary = |path: PathBuf| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let (now, then) = (summary(run.join("summary.json")), summary(fixture("old-run-resumed/summary.json")));
    for key in ["final_val_loss", "best_val_loss", "steps", "tokens_seen", "params_total"] {
        assert_eq!(now[key], then[key], "{key}");
    }
}

#[test]
fn an_old_comparison_is_redrawn_with_its_hymba_scales_as_diagnostics() {
    let dir = temp_dir("old-compare");
    let compare = copy_of("old-compare", &dir);
    archlab(&["report", compare.to_str().unwrap()], &dir);
    let report = std::fs::read_to_string(compare.join("report.md")).unwrap();
    assert!(report.contains("## Mixer diagnostics"), "{report}");
    assert!(report.contains("| hymba | attention β |"), "{report}");
    assert!(compare.join("plots/diagnostics-hymba.svg").exists());
}
