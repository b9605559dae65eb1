//! `archlab bench` through the real binary: every point measured in its own process, failures
//! classified, and an out-of-memory point reported without ending the bench.

mod common;

use std::path::Path;
use std::process::{Command, ExitStatus, Output};

use archlab::bench::{MEMORY_LIMIT_ENV, classify};
use archlab::compare::results::{BenchResults, BenchStatus};
use common::temp_dir;

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
    }
    assert!(out.join("bench.md").exists());
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(table.contains("| dense | 32 | 4 |") && table.contains("| mamba2 | 64 | 2 |"), "{table}");
}

/// A tiny address-space limit: T=32 fits, T=4096 cannot (its attention scores alone are
/// 4 heads · 4096² · 4 bytes = 256 MiB per layer), so it is reported out of memory, T=8192 is
/// skipped, and the bench still finishes with its files.
#[test]
fn out_of_memory_point_is_reported_and_bench_finishes() {
    let out = temp_dir("bench-oom");
    let args = ["dense", "--seq-lens", "32,4096,8192", "--tokens-per-step", "32", "--steps", "1"];
    // Few threads and malloc arenas: each reserves address space, which the limit counts.
    let env = [(MEMORY_LIMIT_ENV, "600"), ("RAYON_NUM_THREADS", "2"), ("MALLOC_ARENA_MAX", "2")];
    let o = bench(&args, &out, &env);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "bench failed:\n{stderr}");
    let r = results(&out);
    let statuses: Vec<&BenchStatus> = r.points.iter().map(|p| &p.status).collect();
    assert_eq!(statuses[0], &BenchStatus::Ok, "{stderr}");
    assert_eq!(statuses[1], &BenchStatus::OutOfMemory, "{stderr}");
    assert_eq!(statuses[2], &BenchStatus::Failed("skipped: out of memory at T=4096".into()));
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
    assert_eq!(classify(&exit(0), ""), BenchStatus::Ok);
    // Linux's OOM killer sends SIGKILL; Rust's allocation failure aborts with a message.
    assert_eq!(classify(&sigkill, ""), BenchStatus::OutOfMemory);
    assert_eq!(classify(&sigabrt, "memory allocation of 268435456 bytes failed\n"), BenchStatus::OutOfMemory);
    for text in [
        "error: CUDA_ERROR_OUT_OF_MEMORY",
        "thread 'main' panicked: OutOfMemory { size: 1 }",
        "error: the device ran out of memory",
        "failed to spawn thread: Cannot allocate memory (os error 12)",
    ] {
        assert_eq!(classify(&exit(1), text), BenchStatus::OutOfMemory, "{text}");
    }
    // Anything else: the last line of stderr, or what the exit status says.
    assert_eq!(
        classify(&exit(1), "archlab: loading\nerror: model.vocab_size is 0\n\n"),
        BenchStatus::Failed("error: model.vocab_size is 0".into())
    );
    assert_eq!(classify(&exit(3), ""), BenchStatus::Failed("exited with code 3".into()));
    assert_eq!(classify(&sigabrt, ""), BenchStatus::Failed("killed by signal 6".into()));
}
