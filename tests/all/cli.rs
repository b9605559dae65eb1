//! Bad input through the real binary: a clear error naming the problem, exit code 1, no panic,
//! and no work started.

use std::path::Path;
use std::process::{Command, Output};

use crate::common::temp_dir;

fn archlab(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_archlab")).args(args).current_dir(cwd).output().expect("binary runs")
}

/// Runs a command that must fail, and returns its stderr.
fn fails(args: &[&str], cwd: &Path) -> String {
    let out = archlab(args, cwd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{args:?} should exit 1; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
    assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    stderr
}

const SMALL: &[&str] =
    &["--set", "data.builtin_bytes=30000", "--set", "train.max_steps=1", "--device", "cpu", "--quiet"];

fn train_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["train"];
    v.extend_from_slice(SMALL);
    v.extend_from_slice(extra);
    v
}

#[test]
fn unknown_config_key() {
    let dir = temp_dir("cli-unknown-key");
    let err = fails(&train_args(&["--set", "model.d_modle=512"]), &dir);
    assert!(err.contains("unknown config key `model.d_modle`"), "{err}");
    assert!(err.contains("did you mean `model.d_model`"), "{err}");
    assert!(err.contains("valid keys here:") && err.contains("n_layers"), "{err}");
    assert!(!dir.join("runs").exists(), "no work may start on a bad config");
}

#[test]
fn unknown_key_in_a_config_file_and_malformed_toml() {
    let dir = temp_dir("cli-toml");
    std::fs::write(dir.join("bad.toml"), "[model]\nd_model = 64\n[trian]\nlr = 1e-3\n").unwrap();
    let err = fails(&train_args(&["--config", "bad.toml"]), &dir);
    assert!(err.contains("unknown config key `trian`") && err.contains("bad.toml"), "{err}");

    std::fs::write(dir.join("broken.toml"), "[model\nd_model = = 64\n").unwrap();
    let err = fails(&train_args(&["--config", "broken.toml"]), &dir);
    assert!(err.contains("malformed TOML in broken.toml"), "{err}");
    assert!(err.contains("line 1"), "the error should point at the line: {err}");
}

#[test]
fn missing_data_file() {
    let dir = temp_dir("cli-missing");
    let err = fails(&train_args(&["--set", "data.source=\"no/such/corpus.txt\""]), &dir);
    assert!(err.contains("data source no/such/corpus.txt not found"), "{err}");
}

#[test]
fn empty_corpus() {
    let dir = temp_dir("cli-empty");
    std::fs::write(dir.join("empty.txt"), "  \n\n").unwrap();
    let err = fails(&train_args(&["--set", "data.source=\"empty.txt\""]), &dir);
    assert!(err.contains("is empty"), "{err}");
}

#[test]
fn vocabulary_mismatch_between_tokenizer_and_shards() {
    let dir = temp_dir("cli-vocab");
    let ok = archlab(&["data", "prepare", "--set", "data.builtin_bytes=30000", "--out", "prepared"], &dir);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let ok = archlab(
        &["data", "tokenizer", "--vocab", "300", "--builtin-bytes", "30000", "--out", "bpe.json"],
        &dir,
    );
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    // Shards written with the byte tokenizer, read with a BPE.
    let err = fails(
        &train_args(&["--set", "data.source=\"prepared\"", "--set", "data.tokenizer=\"bpe.json\""]),
        &dir,
    );
    assert!(err.contains("vocabulary mismatch"), "{err}");

    // A model vocabulary smaller than the tokenizer's.
    let err =
        fails(&train_args(&["--set", "data.source=\"prepared\"", "--set", "model.vocab_size=100"]), &dir);
    assert!(err.contains("vocabulary mismatch") && err.contains("model.vocab_size"), "{err}");

    // The prepared folder's tokenizer swapped behind its shards' back.
    std::fs::copy(dir.join("bpe.json"), dir.join("prepared/tokenizer.json")).unwrap();
    let err = fails(
        &train_args(&["--set", "data.source=\"prepared\"", "--set", "data.tokenizer=\"bpe.json\""]),
        &dir,
    );
    assert!(err.contains("vocabulary mismatch") && err.contains("train.bin"), "{err}");
}

#[test]
fn corrupt_shard_header() {
    let dir = temp_dir("cli-corrupt");
    let ok = archlab(&["data", "prepare", "--set", "data.builtin_bytes=30000", "--out", "prepared"], &dir);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let shard = dir.join("prepared/val.bin");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[0..8].copy_from_slice(b"GARBAGE!");
    std::fs::write(&shard, &bytes).unwrap();
    let err = fails(&train_args(&["--set", "data.source=\"prepared\""]), &dir);
    assert!(
        err.contains("corrupt token shard")
            && err.contains("val.bin")
            && err.contains("archlab data prepare"),
        "{err}"
    );
}

#[test]
fn invalid_values_and_devices() {
    let dir = temp_dir("cli-values");
    let err = fails(&train_args(&["--set", "model.n_heads=5"]), &dir);
    assert!(err.contains("divisible by model.n_heads"), "{err}");
    let err = fails(&train_args(&["--set", "train.seq_len=100000"]), &dir);
    assert!(err.contains("max_seq_len"), "{err}");
    let err = fails(&train_args(&["--set", "model.norm=batch"]), &dir);
    assert!(err.contains("norm"), "{err}");
    let err = fails(&["train", "--preset", "huge"], &dir);
    assert!(err.contains("unknown preset `huge`") && err.contains("tiny"), "{err}");
    let err = fails(&["generate", "--run", "nowhere"], &dir);
    assert!(err.contains("not a run directory"), "{err}");
    // A negative number is a value, not a flag: refused for what it is.
    let err = fails(&["generate", "--run", "nowhere", "--temperature", "-1"], &dir);
    assert!(err.contains("temperature"), "{err}");
    // Limits are stated; no heads is fine for a model without attention.
    let err = fails(&["describe", "(A)999999"], &dir);
    assert!(err.contains("at most 9999"), "{err}");
    let out = archlab(&["describe", "MMMM", "--set", "model.n_heads=0"], &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("panicked"), "{stderr}");
}

/// With no CUDA driver on this machine, `--device cuda` is a clear error and `auto` falls back.
#[test]
fn cuda_without_a_driver() {
    let has_driver =
        ["/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib/libcuda.so.1", "/usr/lib64/libcuda.so.1"]
            .iter()
            .any(|p| Path::new(p).exists());
    if has_driver {
        eprintln!("skipping: a CUDA driver is installed here");
        return;
    }
    let dir = temp_dir("cli-cuda");
    let err = fails(&["train", "--device", "cuda", "--set", "train.max_steps=1"], &dir);
    assert!(err.contains("cuda") || err.contains("CUDA"), "{err}");
}

/// On the CPU, `precision = "auto"` trains in fp32 (bf16 is emulated there and slower).
#[test]
fn auto_precision_is_f32_on_the_cpu() {
    let dir = temp_dir("cli-auto-precision");
    let small =
        ["--set", "data.builtin_bytes=200000", "--set", "train.batch_size=4", "--set", "train.seq_len=32"];
    let mut args = train_args(&["--run-dir", "run"]);
    args.extend_from_slice(&small);
    let out = archlab(&args, &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary = std::fs::read_to_string(dir.join("run/summary.json")).unwrap();
    assert!(summary.contains("\"precision\": \"f32\""), "{summary}");
}

/// A bad layer pattern is refused before any work, naming the position, the symbol and the
/// valid symbols; `describe` prints the layer table of a good one.
#[test]
fn layer_patterns_are_checked_and_described() {
    let dir = temp_dir("cli-pattern");
    let err = fails(&train_args(&["--set", "model.pattern=\"AMXMA\""]), &dir);
    assert!(err.contains("position 2") && err.contains("'X'") && err.contains("A/L/M/S/H"), "{err}");
    assert!(!dir.join("runs").exists(), "work started before the pattern was checked");
    let err = fails(&["describe", "AMM", "--set", "model.n_layers=5"], &dir);
    assert!(err.contains("has 3 layers but model.n_layers is 5"), "{err}");
    let err = fails(&["describe", "AL", "--set", "model.window=0"], &dir);
    assert!(err.contains("model.window"), "{err}");

    let out = archlab(&["describe", "AMMMMMMA", "--set", "model.ffn=\"none\""], &dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("pattern AnMnMnMnMnMnMnAn: 8 layers"), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("| ") && l.contains("| mamba |")).count(),
        6,
        "{stdout}"
    );
    assert!(stdout.contains("bytes per token of context"), "{stdout}");
}

#[test]
fn gemm_rejects_bad_problems_and_the_cpu_before_measuring() {
    let dir = temp_dir("cli-gemm");
    let err = fails(&["gemm", "--shapes", "64x64x64,8x0x2", "--out", "g"], &dir);
    assert!(err.contains("8x0x2") && err.contains("positive integers"), "{err}");
    let err = fails(&["gemm", "--shapes", "64x64x64:tt", "--out", "g"], &dir);
    assert!(err.contains("layout \"tt\" is not nn, nt or tn"), "{err}");
    let err = fails(&["gemm", "--device", "cpu", "--out", "g"], &dir);
    assert!(err.contains("use --device cuda, or --device wgpu"), "{err}");
    let err = fails(&["gemm", "--device", "wgpu", "--out", "g"], &dir);
    assert!(err.contains("no bf16; use --dtype f32"), "{err}");
    let err = fails(&["gemm", "--min-time-s", "0", "--out", "g"], &dir);
    assert!(err.contains("--min-time-s 0 must be a positive number"), "{err}");
    assert!(!dir.join("g").exists(), "no results may be written for bad input");
}

#[test]
fn an_unknown_matmul_strategy_is_refused_before_any_work() {
    let dir = temp_dir("cli-matmul");
    let run_dir = ["--run-dir", "r"];
    let err = fails(&[&["--matmul", "fastest"][..], &train_args(&run_dir)].concat(), &dir);
    let strategy_build = cfg!(any(feature = "cuda", feature = "wgpu"));
    if strategy_build {
        assert!(err.contains("--matmul fastest: no such CubeCL matmul strategy"), "{err}");
        assert!(err.contains("autotune") && err.contains("matmul_simple_unit_max_tile_size"), "{err}");
    } else {
        assert!(err.contains("--matmul fastest") && err.contains("--features cuda"), "{err}");
    }
    // The environment variable (how bench hands the choice to its child processes) is checked
    // the same way.
    let out = Command::new(env!("CARGO_BIN_EXE_archlab"))
        .args(train_args(&run_dir))
        .env("ARCHLAB_MATMUL", "fastest")
        .current_dir(&dir)
        .output()
        .expect("binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.starts_with("error: --matmul fastest"), "{stderr}");
    assert!(!dir.join("r").exists(), "no run may start for a bad --matmul");
}

/// The help text names every preset (the list in `--preset`'s doc is written by hand).
#[test]
fn the_help_names_every_preset() {
    let out = archlab(&["train", "--help"], &temp_dir("cli-help"));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let words: Vec<&str> = help.split(|c: char| !c.is_ascii_alphanumeric() && c != '-').collect();
    for name in archlab::config::presets::NAMES {
        assert!(words.contains(name), "`archlab train --help` does not name the preset `{name}`:\n{help}");
    }
}
