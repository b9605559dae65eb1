//! `archlab bench` through the real binary: every point measured in its own process, failures
//! classified, an out-of-memory point reported without ending the bench, warm-up apart from
//! the steady state, MFU only against a known peak, and training batches from a token file.

use std::path::Path;
use std::process::{Command, ExitStatus, Output};

use crate::common::temp_dir;
use archlab::bench::{MEMORY_LIMIT_ENV, classify};
use archlab::compare::results::{BenchResults, BenchStatus};

fn bench(args: &[&str], out: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_archlab"));
    cmd.arg("bench").args(args).arg("--out").arg(out).args(["--device", "cpu"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("binary runs")
}

fn results(out: &Path) -> BenchResults {
    let text = std::fs::read_to_string(out.join("bench.json")).expect("bench.json written");
    serde_json::from_str(&text).expect("bench.json parses")
}

#[test]
fn bench_measures_every_point() {
    let out = temp_dir("bench-ok");
    let args = [
        "dense",
        "mamba2",
        "--seq-lens",
        "32,64",
        "--tokens-per-step",
        "128",
        "--steps",
        "1",
        "--inference",
        "--decode-tokens",
        "4",
        "--set",
        "train.max_steps=10",
    ];
    let o = bench(&args, &out, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "bench failed:\n{stderr}");
    let r = results(&out);
    assert_eq!(r.device, "cpu");
    assert_eq!(r.points.len(), 4, "{:?}", r.points);
    let shapes: Vec<(&str, usize, usize)> =
        r.points.iter().map(|p| (p.arch.as_str(), p.seq_len, p.batch)).collect();
    assert_eq!(shapes, [("dense", 32, 4), ("dense", 64, 2), ("mamba2", 32, 4), ("mamba2", 64, 2)]);
    for p in &r.points {
        assert_eq!(p.status, BenchStatus::Ok, "{p:?}");
        let positive = |x: Option<f64>| x.is_some_and(|v| v > 0.0 && v.is_finite());
        assert!(positive(p.train_tokens_per_s) && positive(p.step_time_s), "{p:?}");
        assert!(positive(p.prefill_tokens_per_s) && positive(p.decode_tokens_per_s), "{p:?}");
        assert!(p.peak_memory_bytes.is_some_and(|b| b > 0), "{p:?}");
        // The warm-up step is reported apart; with one timed step the median is that step.
        assert!(positive(p.warmup_s) && positive(p.median_step_s), "{p:?}");
        assert!((p.median_step_s.unwrap() - p.step_time_s.unwrap()).abs() < 1e-12, "{p:?}");
        // FLOPs and the achieved rate always; MFU not on a CPU, whose peak archlab does not know.
        let flops = p.train_flops_per_token.expect("FLOPs per token");
        let achieved = p.achieved_tflops.expect("achieved TFLOP/s");
        assert!((achieved - flops * p.train_tokens_per_s.unwrap() / 1e12).abs() <= 1e-12 * achieved.max(1.0));
        assert_eq!(p.mfu, None, "{p:?}");
        assert!(p.params_total.is_some_and(|n| n > 0) && p.params_active == p.params_total, "{p:?}");
        let config = p.config_path.as_ref().expect("the point's config");
        assert!(Path::new(config).exists(), "{config}");
    }
    assert_eq!(r.peak_tflops, None);
    assert!(r.peak_source.contains("CPU"), "{}", r.peak_source);
    assert!(r.flops_formula.contains("6·N_matmul"), "{}", r.flops_formula);
    assert_eq!(r.tokens, None);
    assert!(out.join("bench.md").exists());
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("| dense | 32 | 4 |") && table.contains("| mamba2 | 64 | 2 |"), "{table}");
    assert!(table.contains("Warm-up") && table.contains("n/a (no peak)"), "{table}");
    assert!(table.contains("MFU not computed: CPU"), "{table}");
}

/// Writes `ids` as raw little-endian u32, the format of `--tokens`.
fn write_tokens(path: &Path, ids: &[u32]) {
    let bytes: Vec<u8> = ids.iter().flat_map(|id| id.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

/// `--tokens`: a file holding one step's batch feeds the warm-up and the timed steps (it
/// cycles), and `--peak-tflops` gives the MFU its denominator, even on a CPU.
#[test]
fn token_file_feeds_training_and_peak_gives_mfu() {
    let out = temp_dir("bench-tokens");
    let tokens = out.join("tokens.u32");
    // batch 4 × (T 32 + 1) = 132 tokens per step; 140 hold one step and an unused tail.
    write_tokens(&tokens, &(0..140).map(|i| (i * 7 % 256) as u32).collect::<Vec<_>>());
    let t = tokens.to_str().unwrap();
    let args = ["dense", "--seq-lens", "32", "--tokens-per-step", "128", "--steps", "2", "--tokens", t];
    let o = bench(&[&args[..], &["--peak-tflops", "0.5"]].concat(), &out, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "bench failed:\n{stderr}");
    let r = results(&out);
    assert_eq!(r.tokens.as_deref(), Some(t));
    assert_eq!(r.peak_tflops, Some(0.5));
    let p = &r.points[0];
    assert_eq!(p.status, BenchStatus::Ok, "{p:?}");
    let mfu = p.mfu.expect("MFU with a peak");
    assert!((mfu - p.achieved_tflops.unwrap() / 0.5).abs() < 1e-12, "{p:?}");
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains(&format!("tokens from {t}")) && table.contains('%'), "{table}");
}

/// A token file that is too short for one step, or holds an id outside the vocabulary (256
/// byte tokens at `tiny`), stops the bench before any point with the file's name.
#[test]
fn bad_token_files_are_errors_naming_the_file() {
    let out = temp_dir("bench-bad-tokens");
    let cases = [
        ("short.u32", vec![1u32; 100], "fewer than one training step"),
        ("vocab.u32", (0..200).map(|i| if i == 150 { 300 } else { 1 }).collect(), "token 150 is id 300"),
    ];
    for (name, ids, expected) in cases {
        let path = out.join(name);
        write_tokens(&path, &ids);
        let dir = out.join(format!("out-{name}"));
        let args =
            ["dense", "--seq-lens", "32", "--tokens-per-step", "128", "--tokens", path.to_str().unwrap()];
        let o = bench(&args, &dir, &[]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(name) && stderr.contains(expected), "{stderr}");
        assert!(!dir.join("bench.json").exists());
        assert!(!dir.join("points").exists(), "no point may run");
    }
    // The point itself reads the file too (the parent's check is not all that stands
    // between a bad file and training): run one directly on the out-of-vocabulary file.
    let config = out.join("point.toml");
    let cfg = Command::new(env!("CARGO_BIN_EXE_archlab"))
        .args(["config", "--preset", "tiny", "--set", "model.vocab_size=256"])
        .output()
        .unwrap();
    assert!(cfg.status.success());
    std::fs::write(&config, &cfg.stdout).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_archlab"))
        .args(["bench-point", "--config", config.to_str().unwrap(), "--seq-len", "32", "--batch", "4"])
        .args(["--steps", "1", "--decode-tokens", "1", "--device", "cpu"])
        .args(["--tokens", out.join("vocab.u32").to_str().unwrap(), "--out"])
        .arg(out.join("point.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("vocab.u32") && stderr.contains("token 150 is id 300"), "{stderr}");
}

/// A tiny address-space limit: T=32 fits, T=16384 cannot (the tiny model keeps ~50 KiB of
/// activations a token for its backward, ~800 MiB at this length; the attention's scores are
/// never stored whole on the CPU), so it is reported out of memory, T=32768 is skipped, and the
/// bench still finishes with its files.
#[test]
fn out_of_memory_point_is_reported_and_bench_finishes() {
    let out = temp_dir("bench-oom");
    let args = ["dense", "--seq-lens", "32,16384,32768", "--tokens-per-step", "32", "--steps", "1"];
    // Few threads and malloc arenas: each reserves address space, which the limit counts.
    let env = [(MEMORY_LIMIT_ENV, "600"), ("RAYON_NUM_THREADS", "2"), ("MALLOC_ARENA_MAX", "2")];
    let o = bench(&args, &out, &env);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "bench failed:\n{stderr}");
    let r = results(&out);
    let statuses: Vec<&BenchStatus> = r.points.iter().map(|p| &p.status).collect();
    assert_eq!(statuses[0], &BenchStatus::Ok, "{stderr}");
    assert_eq!(statuses[1], &BenchStatus::OutOfMemory, "{stderr}");
    assert_eq!(statuses[2], &BenchStatus::Failed("skipped: out of memory at T=16384".into()));
    assert!(r.points[1].train_tokens_per_s.is_none());
    assert!(out.join("bench.md").exists());
}

#[test]
fn bad_options_are_errors_before_any_point() {
    let out = temp_dir("bench-bad");
    let o = bench(&["dense", "--seq-lens", "0"], &out, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--seq-lens"), "{stderr}");
    assert!(!out.join("bench.json").exists());
}

/// A wait status as the kernel reports it: `code << 8` for an exit, the signal number for a kill.
#[cfg(unix)]
fn wait_status(raw: i32) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(raw)
}

#[cfg(unix)]
#[test]
fn failing_points_are_classified() {
    let exit = |code: i32| wait_status(code << 8);
    let (sigkill, sigabrt) = (wait_status(9), wait_status(6));
    assert_eq!(classify(&exit(0), "", Some(0)), BenchStatus::Ok);
    // Linux's OOM killer sends SIGKILL: an OOM when the kernel counted a kill meanwhile (or
    // cannot say), any other SIGKILL (a user, a scheduler) is not called one.
    assert_eq!(classify(&sigkill, "", Some(1)), BenchStatus::OutOfMemory);
    assert_eq!(classify(&sigkill, "", None), BenchStatus::OutOfMemory);
    match classify(&sigkill, "", Some(0)) {
        BenchStatus::Failed(why) => assert!(why.contains("not by the out-of-memory killer"), "{why}"),
        other => panic!("a SIGKILL without an OOM kill is {other:?}"),
    }
    // Rust's allocation failure aborts with a message.
    assert_eq!(
        classify(&sigabrt, "memory allocation of 268435456 bytes failed\n", Some(0)),
        BenchStatus::OutOfMemory
    );
    for text in [
        "error: CUDA_ERROR_OUT_OF_MEMORY",
        "thread 'main' panicked: OutOfMemory { size: 1 }",
        "error: the device ran out of memory",
        "failed to spawn thread: Cannot allocate memory (os error 12)",
    ] {
        assert_eq!(classify(&exit(1), text, Some(0)), BenchStatus::OutOfMemory, "{text}");
    }
    // Anything else: the last line of stderr, or what the exit status says.
    assert_eq!(
        classify(&exit(1), "archlab: loading\nerror: model.vocab_size is 0\n\n", None),
        BenchStatus::Failed("error: model.vocab_size is 0".into())
    );
    assert_eq!(classify(&exit(3), "", None), BenchStatus::Failed("exited with code 3".into()));
    assert_eq!(classify(&sigabrt, "", None), BenchStatus::Failed("killed by signal 6".into()));
}
