//! Data parallel (`train --devices N`): two peers sharing the CPU follow the one-device run with
//! the same global batch (attention, Mamba-2, MoE with its balancing loss over the whole batch,
//! activation checkpointing, answer masks, gradient accumulation), and repeat themselves
//! exactly; what they cannot train is refused before any work.

use std::path::Path;
use std::process::Command;

use crate::common::{CpuAd, small_config, temp_dir, train_options};
use archlab::config::{FfnKind, MixerKind, RunConfig};
use archlab::train::metrics::{Record, read_records};
use archlab::train::{TrainOptions, train};

/// Each step's loss, gradient norm (before clipping) and auxiliary (MoE) loss (0 without one).
fn curves(cfg: &RunConfig, devices: usize, name: &str) -> [Vec<f64>; 3] {
    let opts = TrainOptions { devices, ..train_options(name) };
    let out = train::<CpuAd>(cfg, &Default::default(), &opts).unwrap();
    let (norms, aux) = read_records(&opts.run_dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Train { grad_norm, aux_loss, .. } => Some((grad_norm, aux_loss.unwrap_or(0.0))),
            _ => None,
        })
        .unzip();
    [out.losses.into_iter().map(|(_, l)| l).collect(), norms, aux]
}

/// The largest relative difference between two loss curves.
fn worst(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / x.abs().max(1e-12)).fold(0.0, f64::max)
}

/// The sum of two half-batch gradients differs from the whole batch's gradient only in the
/// order of float32 additions: through 8 AdamW steps the losses and gradient norms stay within
/// 1e-5 of the one-device run's (seen: 1.7e-7). Gradients off by a constant factor (a mean
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
    // Mixture-of-Experts: the balancing loss takes the whole batch's expert load. 32 experts,
    // top-1, 64 tokens a step: some experts get no token from one peer's shard (a zero there),
    // some from the whole step (no gradient, as on one device: AdamW leaves them alone).
    let mut moe = dense.clone();
    moe.model.ffn = FfnKind::Moe;
    moe.model.moe.n_experts = 32;
    moe.model.moe.top_k = 1;
    moe.model.moe.expert_d_ff = 32;
    moe.train.seq_len = 8;
    moe.validate().unwrap();
    // With activation checkpointing each block runs twice, its MoE layers' all-reduces too.
    let mut recomputed = moe.clone();
    recomputed.train.activation_checkpointing = true;
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
    let cases = [
        ("dense", &dense),
        ("mamba2", &mamba2),
        ("moe", &moe),
        ("moe-recomputed", &recomputed),
        ("mqar", &task),
    ];
    for (name, cfg) in cases {
        let one = curves(cfg, 1, &format!("dp-{name}-1"));
        let two = curves(cfg, 2, &format!("dp-{name}-2"));
        eprintln!("{name}: one device {:?}\n{name}: two peers  {:?}", one[0], two[0]);
        for (what, a, b) in [
            ("losses", &one[0], &two[0]),
            ("gradient norms", &one[1], &two[1]),
            ("aux losses", &one[2], &two[2]),
        ] {
            let diff = worst(a, b);
            eprintln!("{name}: {what}: worst relative difference {diff:e}");
            assert!(diff < 1e-5, "{name}: two peers' {what} drift from one device's by {diff:e}");
        }
        assert_eq!(curves(cfg, 2, &format!("dp-{name}-2-again")), two, "{name}: two peers must repeat");
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
    let moe =
        ["--set", "model.pattern=\"AeAe\"", "--set", "model.moe.capacity_factor=1.25", "--devices", "2"];
    let err = archlab_err(&with(&moe), &dir);
    assert!(err.contains("data parallel trains dropless MoE"), "{err}");
    let err = archlab_err(&with(&["--set", "model.dropout=0.1", "--devices", "2"]), &dir);
    assert!(err.contains("not be reproducible"), "{err}");
    assert!(!run.join("config.toml").exists(), "refused before the run directory was written");

    // A comparison passes it on to its runs, and its report says so.
    let ok = dir.join("ok");
    let out = Command::new(env!("CARGO_BIN_EXE_archlab"))
        .args(["compare", "dense", "--seeds", "1", "--steps", "2", "--bench-seq-lens", "--devices", "2"])
        .args(["--set", "train.batch_size=4", "--set", "train.seq_len=32", "--set", "eval.batches=1"])
        .args(["--budget", "60k", "--device", "cpu", "--quiet", "--dir", &ok.display().to_string()])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(ok.join("report.md")).unwrap();
    assert!(md.contains("| devices per run | 2 in data parallel"), "{md}");

    // A comparison refuses what cannot split before its first run.
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
