//! Data parallel (`train --devices N`): two peers sharing the CPU follow the one-device run with
//! the same global batch, with and without answer masks and gradient accumulation, and repeat
//! themselves exactly; what they cannot train is refused before any work.

use std::path::Path;
use std::process::Command;

use crate::common::{CpuAd, small_config, temp_dir, train_options};
use archlab::config::{MixerKind, RunConfig};
use archlab::train::metrics::{Record, read_records};
use archlab::train::{TrainOptions, train};

/// Each step's loss, then each step's gradient norm (before clipping).
fn curves(cfg: &RunConfig, devices: usize, name: &str) -> (Vec<f64>, Vec<f64>) {
    let opts = TrainOptions { devices, ..train_options(name) };
    let out = train::<CpuAd>(cfg, &Default::default(), &opts).unwrap();
    let norms = read_records(&opts.run_dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Train { grad_norm, .. } => Some(grad_norm),
            _ => None,
        })
        .collect();
    (out.losses.into_iter().map(|(_, l)| l).collect(), norms)
}

/// The largest relative difference between two loss curves.
fn worst(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / x.abs().max(1e-12)).fold(0.0, f64::max)
}

/// The sum of two half-batch gradients differs from the whole batch's gradient only in the
/// order of float32 additions: through 8 AdamW steps the losses and gradient norms stay within
/// 1e-5 of the one-device run's (seen: 1.1e-7). Gradients off by a constant factor (a mean
/// where a sum belongs) move the gradient norm by that factor and the losses by 2e-4; a wrong
/// batch moves them by percents. Two peers add in one fixed order, so they repeat bit for bit.
#[test]
fn two_peers_follow_one_device_with_the_same_batch() {
    let mut dense = small_config();
    dense.train.max_steps = 8;
    dense.train.grad_accum = 2;
    dense.train.batch_size = 4;
    let mut mamba2 = dense.clone();
    mamba2.model.mixer = MixerKind::Mamba2;
    // A task: only the answers are scored (the loss is masked).
    let sets: Vec<String> = [
        "data.source=\"task:mqar\"",
        "data.task.n_pairs=4",
        "data.task.vocab=32",
        "train.seq_len=32",
        "train.batch_size=4",
        "train.grad_accum=2",
        "train.max_steps=8",
        "model.n_layers=2",
        "model.d_model=32",
        "model.n_heads=2",
        "model.d_ff=64",
        "train.precision=\"f32\"",
    ]
    .map(String::from)
    .to_vec();
    let task = RunConfig::resolve("tiny", None, &sets).unwrap();
    for (name, cfg) in [("dense", &dense), ("mamba2", &mamba2), ("mqar", &task)] {
        let (one, one_norms) = curves(cfg, 1, &format!("dp-{name}-1"));
        let (two, two_norms) = curves(cfg, 2, &format!("dp-{name}-2"));
        let (diff, norm_diff) = (worst(&one, &two), worst(&one_norms, &two_norms));
        eprintln!("{name}: one device {one:?}\n{name}: two peers  {two:?}");
        eprintln!("{name}: worst relative difference: losses {diff:e}, gradient norms {norm_diff:e}");
        assert!(diff < 1e-5, "{name}: two peers' losses drift from one device's by {diff:e}");
        assert!(
            norm_diff < 1e-5,
            "{name}: two peers' gradient norms drift from one device's by {norm_diff:e}"
        );
        assert_eq!(
            curves(cfg, 2, &format!("dp-{name}-2-again")),
            (two, two_norms),
            "{name}: two peers must repeat"
        );
    }
}

fn archlab_err(args: &[impl AsRef<std::ffi::OsStr>], cwd: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_archlab")).args(args).current_dir(cwd).output().unwrap();
    let line: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
    assert!(!out.status.success(), "archlab {} should have failed", line.join(" "));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn what_data_parallel_cannot_train_is_refused_before_any_work() {
    let dir = temp_dir("dp-refusals");
    let run = dir.join("run");
    let r = run.display().to_string();
    let base = ["train", "--preset", "tiny", "--device", "cpu", "--quiet", "--run-dir", &r];
    let with =
        |extra: &[&'static str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };

    let err = archlab_err(&with(&["--set", "train.batch_size=6", "--devices", "4"]), &dir);
    assert!(err.contains("train.batch_size = 6 does not split across 4 devices"), "{err}");
    let err = archlab_err(&with(&["--devices", "0"]), &dir);
    assert!(err.contains("--devices 0"), "{err}");
    let err = archlab_err(&with(&["--set", "model.pattern=\"AeAe\"", "--devices", "2"]), &dir);
    assert!(err.contains("Mixture-of-Experts"), "{err}");
    let err = archlab_err(&with(&["--set", "model.dropout=0.1", "--devices", "2"]), &dir);
    assert!(err.contains("not be reproducible"), "{err}");
    assert!(!run.join("config.toml").exists(), "refused before the run directory was written");

    // A comparison refuses it before its first run.
    let cmp = dir.join("cmp").display().to_string();
    let err = archlab_err(
        &[
            "compare",
            "dense",
            "--steps",
            "2",
            "--set",
            "train.batch_size=6",
            "--devices",
            "4",
            "--device",
            "cpu",
            "--dir",
            &cmp,
        ],
        &dir,
    );
    assert!(err.contains("architecture dense") && err.contains("does not split across 4 devices"), "{err}");
}
