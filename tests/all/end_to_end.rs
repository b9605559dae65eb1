//! The commands a user types, end to end on the CPU: train → eval → generate.

use std::process::Command;

use crate::common::temp_dir;

fn archlab<S: AsRef<std::ffi::OsStr>>(args: &[S], cwd: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_archlab")).args(args).current_dir(cwd).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// `command` followed by `--set KEY=VALUE` for each override.
fn with_sets(command: &[&str], sets: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = command.iter().map(|a| a.to_string()).collect();
    for set in sets {
        args.extend(["--set".to_string(), set.to_string()]);
    }
    args
}

#[test]
fn train_eval_generate() {
    let dir = temp_dir("e2e");
    let small = [
        "data.builtin_bytes=200000",
        "model.d_model=64",
        "model.n_layers=2",
        "model.d_ff=128",
        "train.max_steps=30",
        "train.seq_len=64",
        "train.batch_size=8",
        "eval.every=15",
        "eval.batches=2",
    ];
    let args = with_sets(&["train", "--device", "auto", "--quiet", "--run-dir", "run"], &small);
    let (ok, stdout, stderr) = archlab(&args, &dir);
    assert!(ok, "train failed:\n{stderr}");
    assert!(stdout.contains("| run | params") && stdout.contains("| run |"), "no result table:\n{stdout}");
    for f in ["config.toml", "metrics.jsonl", "summary.json", "best.ckpt", "last.ckpt", "tokenizer.json"] {
        assert!(dir.join("run").join(f).exists(), "missing {f}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/summary.json")).unwrap()).unwrap();
    for key in [
        "final_val_loss",
        "best_val_loss",
        "final_val_ppl",
        "final_val_bpb",
        "params_total",
        "params_non_embedding",
        "tokens_seen",
        "wall_time_s",
        "steady_tokens_per_s",
        "peak_memory_bytes",
        "nan_skips",
    ] {
        assert!(summary.get(key).is_some(), "summary.json lacks {key}");
    }

    let (ok, stdout, stderr) = archlab(&["eval", "--run", "run", "--device", "cpu"], &dir);
    assert!(ok, "eval failed:\n{stderr}");
    let best = summary["best_val_loss"].as_f64().unwrap();
    assert!(
        stdout.contains(&format!("{best:.4}")),
        "eval of best.ckpt should reproduce the best val loss {best:.4}:\n{stdout}"
    );

    // Another corpus, whole: every token but the first is scored (the byte tokenizer: one
    // token per byte and an end-of-text token after the document), and bits per byte is the
    // summed loss over ln 2 times the bytes those targets stand for.
    let text = "Once upon a time a small fox ran to the river. The water was cold and clear.\n";
    std::fs::write(dir.join("other.txt"), text).unwrap();
    let (ok, stdout, stderr) =
        archlab(&["eval", "--run", "run", "--device", "cpu", "--data", "other.txt"].map(String::from), &dir);
    assert!(ok, "eval --data failed:\n{stderr}");
    let row = stdout.lines().find(|l| l.contains("other.txt")).unwrap_or_else(|| panic!("no row:\n{stdout}"));
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let n = text.len();
    assert_eq!((cells[4], cells[5]), ("1", format!("{n} of {n}").as_str()), "{row}");
    let bytes: f64 = cells[6].parse().unwrap();
    assert!(bytes >= (n - 1) as f64 && bytes <= n as f64, "{row}");
    let (loss, bpb): (f64, f64) = (cells[7].parse().unwrap(), cells[9].parse().unwrap());
    let expected = loss * n as f64 / (std::f64::consts::LN_2 * bytes);
    assert!((bpb - expected).abs() < 1e-3, "{row}: bits per byte {bpb}, expected {expected}");
    let (ok, stdout, _) = archlab(
        &["eval", "--run", "run", "--device", "cpu", "--data", "other.txt", "--max-tokens", "10"]
            .map(String::from),
        &dir,
    );
    assert!(ok && stdout.contains(&format!("| 10 of {n} |")), "{stdout}");

    // Per-token log-probabilities as JSON lines: one per token, the first without one.
    let (ok, stdout, stderr) = archlab(
        &["score", "--run", "run", "--device", "cpu", "--text", "Once upon a time", "--top-k", "2"]
            .map(String::from),
        &dir,
    );
    assert!(ok, "score failed:\n{stderr}");
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), "Once upon a time".len());
    assert!(lines[0]["logprob"].is_null());
    assert!(
        lines[1..]
            .iter()
            .all(|l| l["logprob"].as_f64().unwrap() < 0.0 && l["top"].as_array().unwrap().len() == 2)
    );

    // A fine-tune starts from the parent's weights: with a learning rate too small to move
    // them, its validation loss is the parent's; from scratch it would be near ln 256 = 5.5.
    let finetune = |run_dir: &str, extra: &[&str]| {
        let mut sets: Vec<&str> = small.to_vec();
        sets.retain(|s| !s.starts_with("model."));
        sets.extend_from_slice(&["train.max_steps=2", "train.lr=1e-12", "train.warmup_steps=0"]);
        sets.extend_from_slice(extra);
        let head = ["train", "--device", "cpu", "--quiet", "--init-from", "run", "--run-dir", run_dir];
        archlab(&with_sets(&head, &sets), &dir)
    };
    let (ok, stdout, stderr) = finetune("tuned", &[]);
    assert!(ok, "fine-tune failed:\n{stderr}");
    assert!(stdout.contains("fine-tuned from") && stdout.contains("run/best.ckpt"), "{stdout}");
    let tuned: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tuned/summary.json")).unwrap()).unwrap();
    let tuned_loss = tuned["final_val_loss"].as_f64().unwrap();
    assert!((tuned_loss - best).abs() < 1e-3, "fine-tune starts at {tuned_loss}, the parent ended at {best}");
    assert!(tuned["init_from"].as_str().unwrap().ends_with("run/best.ckpt"));
    let parent_cfg = std::fs::read_to_string(dir.join("run/config.toml")).unwrap();
    let tuned_cfg = std::fs::read_to_string(dir.join("tuned/config.toml")).unwrap();
    let model_section = |t: &str| t.split("[model]").nth(1).unwrap().split("\n[").next().unwrap().to_string();
    assert_eq!(model_section(&parent_cfg), model_section(&tuned_cfg));
    // A --set that would change the parent's model is refused before any work.
    let (ok, _, stderr) = finetune("tuned-wider", &["model.d_model=48"]);
    assert!(!ok && stderr.contains("contradicts the model of"), "{stderr}");
    assert!(!dir.join("tuned-wider").exists());

    let generate_args = [
        "generate",
        "--run",
        "run",
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "40",
        "--seed",
        "3",
        "--device",
        "cpu",
    ];
    let (ok, stdout, stderr) = archlab(&generate_args, &dir);
    assert!(ok, "generate failed:\n{stderr}");
    assert!(stdout.starts_with("Once upon a time") && stdout.len() > "Once upon a time".len(), "{stdout}");
    let (_, again, _) = archlab(&generate_args, &dir);
    assert_eq!(stdout, again, "the same seed samples the same text");

    // Stop and resume through the CLI.
    let args = with_sets(
        &["train", "--device", "cpu", "--quiet", "--run-dir", "run2", "--stop-after", "10"],
        &small,
    );
    let (ok, stdout, stderr) = archlab(&args, &dir);
    assert!(ok && stdout.contains("--resume"), "{stdout}\n{stderr}");
    let (ok, stdout, stderr) =
        archlab(&["train", "--device", "cpu", "--quiet", "--run-dir", "run2", "--resume"], &dir);
    assert!(ok, "resume failed:\n{stderr}");
    assert!(stdout.contains("| run |"), "{stdout}");
}

/// SIGKILL in the middle of training, then `--resume`: the run finishes, and its log holds
/// every step once with exactly the losses of an uninterrupted run (the resumed process
/// restarts from the last complete checkpoint and redoes the steps after it), with dropout and
/// MoE router jitter on.
#[test]
fn a_killed_run_resumes_on_the_same_trajectory() {
    let dir = temp_dir("e2e-kill");
    let args = |run: &str| -> Vec<String> {
        let sets = [
            "data.builtin_bytes=200000",
            "model.d_model=32",
            "model.n_layers=2",
            "model.n_heads=2",
            "model.d_ff=64",
            "train.max_steps=150",
            "train.seq_len=32",
            "train.batch_size=4",
            "train.checkpoint_every=10",
            "train.log_every=1",
            "eval.every=50",
            "eval.batches=1",
            // Random draws in every step: resuming must redraw them as the full run did.
            "model.dropout=0.1",
            "model.ffn=\"moe\"",
            "model.moe.n_experts=4",
            "model.moe.jitter=0.2",
        ];
        with_sets(&["train", "--device", "cpu", "--quiet", "--run-dir", run], &sets)
    };
    let (ok, _, stderr) = archlab(&args("full"), &dir);
    assert!(ok, "{stderr}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_archlab"))
        .args(args("killed"))
        .current_dir(&dir)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let metrics = dir.join("killed/metrics.jsonl");
    let start = std::time::Instant::now();
    // Kill once a checkpoint exists and some steps after it have been logged.
    while start.elapsed() < std::time::Duration::from_secs(120) {
        let logged = std::fs::read_to_string(&metrics).map(|s| s.lines().count()).unwrap_or(0);
        if dir.join("killed/last.ckpt").exists() && logged > 25 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!dir.join("killed/summary.json").exists(), "the run finished before it could be killed");
    let logged_before_resume = std::fs::read_to_string(&metrics).unwrap().lines().count();
    let (ok, _, stderr) =
        archlab(&["train", "--device", "cpu", "--quiet", "--run-dir", "killed", "--resume"], &dir);
    assert!(ok, "resume after kill failed:\n{stderr}");

    let read = |run: &str| -> Vec<String> {
        std::fs::read_to_string(dir.join(run).join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {} {} {}", v["kind"], v["step"], v["loss"], v["val_loss"])
            })
            .collect()
    };
    assert_eq!(read("killed"), read("full"));
    eprintln!("killed after {logged_before_resume} log lines; resumed to {}", read("killed").len());
}

/// A few steps of a d=32, 2-layer model: enough to exercise a command end to end.
const TINY_RUN: [&str; 7] = [
    "data.builtin_bytes=200000",
    "model.d_model=32",
    "model.n_layers=2",
    "train.max_steps=4",
    "train.seq_len=32",
    "train.batch_size=4",
    "eval.every=4",
];

/// A damaged checkpoint, and a run whose `config.toml` no longer fits its checkpoints, are
/// errors that name the file and what is wrong: no panic, no silent load of damaged weights.
#[test]
fn a_damaged_or_misfitting_checkpoint_is_a_clear_error() {
    let dir = temp_dir("e2e-damaged");
    let args = with_sets(&["train", "--device", "cpu", "--quiet", "--run-dir", "run"], &TINY_RUN);
    let (ok, _, stderr) = archlab(&args, &dir);
    assert!(ok, "train failed:\n{stderr}");
    let copy = |to: &str| {
        std::fs::create_dir_all(dir.join(to)).unwrap();
        for entry in std::fs::read_dir(dir.join("run")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(to).join(entry.file_name())).unwrap();
        }
    };
    let refused = |args: &[&str], why: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_archlab")).args(args).current_dir(&dir).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(why) && !stderr.contains("panicked"), "{args:?}:\n{stderr}");
    };

    // Four bytes flipped in the middle of best.ckpt.
    copy("damaged");
    let ckpt = dir.join("damaged/best.ckpt");
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 4] {
        *b ^= 0xa5;
    }
    std::fs::write(&ckpt, bytes).unwrap();
    refused(&["eval", "--run", "damaged", "--device", "cpu"], "checksum mismatch");
    refused(&["generate", "--run", "damaged", "--device", "cpu", "--prompt", "Once"], "damaged/best.ckpt");

    // config.toml edited after training: wider, then deeper.
    for (name, from, to, why) in [
        ("wider", "d_model = 32", "d_model = 48", " in the checkpoint, ["),
        ("deeper", "n_layers = 2", "n_layers = 3", "layers.2."),
    ] {
        copy(name);
        let path = dir.join(name).join("config.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        assert!(config.contains(from), "{config}");
        std::fs::write(&path, config.replace(from, to)).unwrap();
        refused(&["eval", "--run", name, "--device", "cpu"], "does not fit the model");
        refused(&["eval", "--run", name, "--device", "cpu"], why);
        refused(
            &["train", "--device", "cpu", "--quiet", "--run-dir", name, "--resume"],
            "does not fit the model",
        );
    }
}

/// A pure Mamba model through the same commands; generation decodes with the recurrent state.
#[test]
fn mamba_train_then_generate() {
    let dir = temp_dir("e2e-mamba");
    let args = with_sets(
        &["train", "--preset", "mamba-tiny", "--device", "cpu", "--quiet", "--run-dir", "run"],
        &TINY_RUN,
    );
    let (ok, stdout, stderr) = archlab(&args, &dir);
    assert!(ok, "train failed:\n{stderr}");
    assert!(stdout.contains("| run | params"), "no result table:\n{stdout}");
    let config = std::fs::read_to_string(dir.join("run/config.toml")).unwrap();
    assert!(config.contains("mixer = \"mamba\"") && config.contains("ffn = \"none\""), "{config}");
    // Longer than the (unused) max_seq_len: a recurrent model has no context limit.
    let generate = [
        "generate",
        "--run",
        "run",
        "--device",
        "cpu",
        "--prompt",
        "Once",
        "--max-tokens",
        "600",
        "--temperature",
        "1",
    ];
    let (ok, stdout, stderr) = archlab(&generate, &dir);
    assert!(ok, "generate failed:\n{stderr}");
    assert!(stdout.starts_with("Once") && stdout.len() > 300, "too little text:\n{stdout}");
}

/// `archlab import` on a transformers checkpoint, then `generate` (greedy) and `eval` on it.
#[test]
fn import_hf_checkpoint_then_generate_and_eval() {
    let dir = temp_dir("e2e-import");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/mamba2");
    let cache = dir.join("cache").display().to_string();
    let cache_dir = format!("data.cache_dir={cache:?}");
    let import = with_sets(
        &["import", fixture.to_str().unwrap(), "--out", "imported"],
        &["data.builtin_bytes=20000", &cache_dir, "eval.batches=1", "train.seq_len=16", "train.batch_size=2"],
    );
    let (ok, stdout, stderr) = archlab(&import, &dir);
    assert!(ok, "import failed:\n{stderr}");
    assert!(stdout.contains("2 layers of mamba2"), "{stdout}");
    let generate = [
        "generate",
        "--run",
        "imported",
        "--device",
        "cpu",
        "--prompt",
        "the girl saw a dog",
        "--max-tokens",
        "6",
        "--temperature",
        "0",
    ];
    let (ok, first, stderr) = archlab(&generate, &dir);
    assert!(ok, "generate failed:\n{stderr}");
    assert!(first.trim().split(' ').count() > 5, "no continuation: {first}");
    let (_, second, _) = archlab(&generate, &dir);
    assert_eq!(first, second, "greedy decoding must be deterministic");
    let (ok, stdout, stderr) = archlab(&["eval", "--run", "imported", "--device", "cpu"], &dir);
    assert!(ok, "eval failed:\n{stderr}");
    assert!(stdout.contains("| imported | best |"), "{stdout}");
    // Importing over an existing run is refused.
    let (ok, _, stderr) = archlab(&import, &dir);
    assert!(!ok && stderr.contains("already holds a run"), "{stderr}");
}

/// The seeds' MoE preset through the CLI: the result table reports active parameters and each
/// layer's expert load, summary.json and metrics.jsonl carry them, and the model generates.
#[test]
fn moe_train_report_and_generate() {
    let dir = temp_dir("e2e-moe");
    let args = with_sets(
        &["train", "--preset", "moe-tiny", "--device", "cpu", "--quiet", "--run-dir", "run"],
        &[&TINY_RUN[..], &["model.n_heads=2", "eval.batches=1"]].concat(),
    );
    let (ok, stdout, stderr) = archlab(&args, &dir);
    assert!(ok, "train failed:\n{stderr}");
    assert!(stdout.contains("params (non-emb, active)"), "{stdout}");
    assert!(
        stdout.contains("layer 0 (moe): load of expert 0 ") && stdout.contains("layer 1 (moe):"),
        "{stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run/summary.json")).unwrap()).unwrap();
    let (total, active) =
        (summary["params_total"].as_u64().unwrap(), summary["params_active"].as_u64().unwrap());
    assert!(active < total / 2, "8 experts, top-2: active {active} of {total}");
    // Each layer's expert loads travel as diagnostics: 8 shares that sum to 1, each against 1/8.
    assert!(summary.get("moe").is_none(), "expert loads are diagnostics now");
    for layer in 0..2 {
        let loads: Vec<&serde_json::Value> = summary["diagnostics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["layer"] == layer
                    && d["mixer"] == "moe"
                    && d["name"].as_str().unwrap().starts_with("load of expert")
            })
            .collect();
        assert_eq!(loads.len(), 8, "layer {layer}");
        let sum: f64 = loads.iter().map(|d| d["value"].as_f64().unwrap()).sum();
        assert!((sum - 1.0).abs() < 1e-9, "layer {layer}: loads sum to {sum}");
        assert!(loads.iter().all(|d| d["reference"].as_f64() == Some(0.125)));
    }
    let log = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let train_lines: Vec<&str> = log.lines().filter(|l| l.contains("\"kind\":\"train\"")).collect();
    assert!(!train_lines.is_empty() && train_lines.iter().all(|l| l.contains("\"aux_loss\"")), "{log}");
    assert!(train_lines.iter().all(|l| l.contains("\"load of expert 7\"")), "{log}");
    let generate = ["generate", "--run", "run", "--device", "cpu", "--prompt", "Once", "--max-tokens", "20"];
    let (ok, stdout, stderr) = archlab(&generate, &dir);
    assert!(ok && stdout.starts_with("Once"), "generate failed:\n{stdout}\n{stderr}");
}
