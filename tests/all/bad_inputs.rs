//! The table of bad inputs (docs/bad-inputs.md lists the same cases): configs, patterns,
//! flags, corrupt and truncated files of every kind archlab reads, wrong tokenizers, empty and
//! tiny corpora, paths that cannot be written, a full disk, a directory in use. Each must end
//! with a non-zero exit and one clear message that names the problem, never a panic (exit
//! 101, "panicked at"), and must leave the files it was pointed at as they were.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::temp_dir;

/// One bad input: the command line, what the message must say, and the files that must be
/// left untouched.
struct Case {
    name: &'static str,
    args: Vec<String>,
    says: &'static str,
    untouched: Vec<&'static str>,
    /// A file-size limit in bytes (RLIMIT_FSIZE), to run the command on a disk that fills.
    file_size_limit: Option<u64>,
}

fn case(name: &'static str, args: &[&str], says: &'static str) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        says,
        untouched: Vec::new(),
        file_size_limit: None,
    }
}

impl Case {
    fn keeps(mut self, files: &[&'static str]) -> Self {
        self.untouched.extend_from_slice(files);
        self
    }

    /// Runs the command with every file it writes limited to `bytes`: the disk fills.
    fn with_disk_full_after(mut self, bytes: u64) -> Self {
        self.file_size_limit = Some(bytes);
        self
    }
}

/// Training flags that keep a run to a few seconds.
const QUICK: [&str; 10] = [
    "--set",
    "data.builtin_bytes=200000",
    "--set",
    "model.d_model=32",
    "--set",
    "model.n_layers=2",
    "--set",
    "train.max_steps=2",
    "--device",
    "cpu",
];

fn train(extra: &[&str]) -> Vec<String> {
    ["train", "--quiet"].iter().chain(QUICK.iter()).chain(extra).map(|s| s.to_string()).collect()
}

fn archlab(args: &[String], cwd: &Path) -> std::process::Output {
    archlab_limited(args, cwd, None)
}

fn archlab_limited(args: &[String], cwd: &Path, file_size_limit: Option<u64>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_archlab"));
    cmd.args(args).current_dir(cwd);
    if let Some(bytes) = file_size_limit {
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit, async-signal-safe, runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let limit = libc::rlimit { rlim_cur: bytes as libc::rlim_t, rlim_max: bytes as libc::rlim_t };
                match libc::setrlimit(libc::RLIMIT_FSIZE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            });
        }
    }
    cmd.output().expect("binary runs")
}

/// Temporary files (`*.tmp`, `*.partial-*`) anywhere under `dir`: a failed command leaves none.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".tmp") || name.contains(".partial-") {
                found.push(path);
            } else if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

/// A copy of the run `from` as `to`, with `edit` applied to its file `file`.
fn damaged_copy(dir: &Path, from: &str, to: &str, file: &str, edit: impl Fn(Vec<u8>) -> Vec<u8>) {
    let target = dir.join(to);
    std::fs::create_dir_all(&target).unwrap();
    for entry in std::fs::read_dir(dir.join(from)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
    let path = target.join(file);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, edit(bytes)).unwrap();
}

/// The files the cases point at: a trained run and damaged copies of it, corrupt files of
/// every kind, odd corpora.
fn fixtures(dir: &Path) {
    let run = train(&["--run-dir", "run", "--set", "eval.every=2"]);
    let out = archlab(&run, dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A run stopped after its first step, to resume.
    let out = archlab(&train(&["--run-dir", "resume-full", "--stop-after", "1"]), dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let w = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    };
    w("broken.toml", b"[model\nd_model = ");
    w("unknown.toml", b"[model]\nd_modle = 64\n");
    w("typed.toml", b"[model]\nd_model = \"wide\"\n");
    w("empty.txt", b"");
    w("tiny.txt", b"hi");
    w("long.txt", "a long line of text ".repeat(100).as_bytes());
    w("binary.txt", &[0xff, 0xfe, 0x00, 0x80, 0x81]);
    w("garbage.json", b"{not json");
    w("a-file", b"I am a regular file");
    w("empty.jsonl", b"");
    w("nofield.jsonl", b"{\"body\": \"no text field here\"}\n");
    w("experiment.toml", b"title = \"x\"\narchitectures = [\"dense\", \"nonsense\"]\n");
    w("bad-experiment.toml", b"title = 3\n");
    // Import sources: a config without weights, weights without a config, garbage weights.
    w("hf-noweights/config.json", br#"{"model_type": "llama", "hidden_size": 32}"#);
    w("hf-noconfig/model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ");
    w("hf-garbage/config.json", br#"{"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64, "vocab_size": 256, "rms_norm_eps": 1e-5, "max_position_embeddings": 256, "rope_theta": 10000.0, "tie_word_embeddings": false}"#);
    w("hf-garbage/model.safetensors", b"\xff\xff\xff\xff\xff\xff\xff\xffgarbage");
    w("hf-unknown/config.json", br#"{"model_type": "bert"}"#);
    // Qwen3-Next configs (the dense fixture's, edited) that archlab cannot build.
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf/qwen3_next_dense");
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        w(&format!("hf-qwen/{name}"), &std::fs::read(fixture.join(name)).unwrap());
    }
    let qwen = std::fs::read_to_string(fixture.join("config.json")).unwrap();
    let edited = |from: &str, to: &str| {
        assert!(qwen.contains(from), "the fixture's config.json has no {from}");
        qwen.replacen(from, to, 1)
    };
    w("hf-qwen-layer/config.json", edited("\"linear_attention\"", "\"sliding_attention\"").as_bytes());
    w(
        "hf-qwen-heads/config.json",
        edited("\"linear_num_value_heads\": 2", "\"linear_num_value_heads\": 3").as_bytes(),
    );
    w(
        "hf-qwen-rope/config.json",
        edited("\"partial_rotary_factor\": 0.25", "\"partial_rotary_factor\": 0.1875").as_bytes(),
    );
    // Damaged runs.
    let flip = |mut b: Vec<u8>| {
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        b
    };
    damaged_copy(dir, "run", "flipped", "best.ckpt", flip);
    damaged_copy(dir, "run", "truncated", "last.ckpt", |b| b[..b.len() / 3].to_vec());
    damaged_copy(dir, "run", "empty-ckpt", "best.ckpt", |_| Vec::new());
    damaged_copy(dir, "run", "not-ckpt", "best.ckpt", |_| b"PK\x03\x04 a zip file".to_vec());
    damaged_copy(dir, "run", "widened", "config.toml", |b| {
        String::from_utf8(b).unwrap().replace("d_model = 32", "d_model = 48").into_bytes()
    });
    damaged_copy(dir, "run", "bad-config", "config.toml", |_| b"[model\n".to_vec());
    // A model no transformers architecture expresses (refused before its weights load).
    damaged_copy(dir, "run", "gelu-run", "config.toml", |b| {
        String::from_utf8(b).unwrap().replace("mlp = \"swiglu\"", "mlp = \"gelu\"").into_bytes()
    });
    damaged_copy(dir, "run", "bad-tokenizer", "tokenizer.json", |_| b"{\"model\": 3}".to_vec());
    damaged_copy(dir, "run", "no-best", "best.ckpt", |b| b);
    std::fs::remove_file(dir.join("no-best/best.ckpt")).unwrap();
    damaged_copy(dir, "run", "no-tokenizer", "tokenizer.json", |b| b);
    std::fs::remove_file(dir.join("no-tokenizer/tokenizer.json")).unwrap();
    damaged_copy(dir, "run", "bad-metrics", "metrics.jsonl", |b| {
        let mut text = String::from_utf8(b).unwrap();
        text.insert_str(0, "{\"kind\": \"train\", \"step\": \"zero\"}\n");
        text.into_bytes()
    });
    // Not finished: resuming it reads the log.
    std::fs::remove_file(dir.join("bad-metrics/summary.json")).unwrap();
    damaged_copy(dir, "run", "bad-summary", "summary.json", |_| b"{\"final_val_loss\": ".to_vec());
    // A run in use by a live process (PID 1 is always running).
    damaged_copy(dir, "run", "in-use", "config.toml", |b| b);
    let host = archlab::util::lock::host_name();
    let lock = format!("{{\"host\":\"{host}\",\"pid\":1,\"since\":0,\"what\":\"train\"}}");
    w("in-use/.archlab.lock", lock.as_bytes());
    // A comparison directory with damaged files.
    w("cmp-bad/compare.json", b"{\"title\": ");
    w("cmp-results/results.json", b"[1, 2");
    w("cmp-other/unrelated.txt", b"someone else's file");
    // A corrupt token shard where a prepared corpus is expected.
    let out = archlab(
        &["data", "prepare", "--set", "data.builtin_bytes=30000", "--out", "prepared"].map(String::from),
        dir,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    damaged_copy(dir, "prepared", "shard-bad", "train.bin", |mut b| {
        b[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        b
    });
    damaged_copy(dir, "prepared", "shard-short", "val.bin", |b| b[..40].to_vec());
}

fn cases() -> Vec<Case> {
    let set = |kv: &'static str| -> Vec<&'static str> { vec!["--set", kv] };
    let train_with = |extra: Vec<&str>| -> Vec<String> { train(&extra) };
    let mut c = vec![
        // -- the command line ---------------------------------------------------------------
        case("unknown command", &["fly"], "unrecognized subcommand"),
        case("unknown flag", &["train", "--fast"], "unexpected argument '--fast'"),
        case("missing flag value", &["train", "--preset"], "a value is required"),
        case("unknown device", &["train", "--device", "tpu"], "invalid value 'tpu'"),
        case("unknown precision", &["train", "--precision", "fp8"], "invalid value 'fp8'"),
        case("resume without a run dir", &["train", "--resume"], "--run-dir"),
        case(
            "negative temperature",
            &["generate", "--run", "run", "--temperature", "-1"],
            "--temperature must be ≥ 0",
        ),
        case("top-p of 0", &["generate", "--run", "run", "--top-p", "0"], "--top-p in (0, 1]"),
        case(
            "unknown checkpoint name",
            &["eval", "--run", "run", "--checkpoint", "middle"],
            "invalid value 'middle'",
        ),
        case(
            "bench-seq-lens of words",
            &["compare", "dense", "--bench-seq-lens", "long"],
            "is not a sequence length",
        ),
        case(
            "bench seq-lens zero",
            &["bench", "dense", "--seq-lens", "0", "--device", "cpu"],
            "all positive",
        ),
        case("gemm zero dimension", &["gemm", "--shapes", "8x0x2", "--out", "g"], "8x0x2"),
        case("unknown architecture", &["compare", "transformerxl", "--device", "cpu"], "transformerxl"),
        case("bad budget", &["compare", "dense", "--budget", "lots", "--device", "cpu"], "lots"),
        case("zero seeds", &["compare", "dense", "--seeds", "0", "--device", "cpu"], "seeds"),
        case("unknown size", &["compare", "dense", "--size", "galactic", "--device", "cpu"], "galactic"),
        case(
            "experiment with an unknown architecture",
            &["compare", "--experiment", "experiment.toml", "--device", "cpu"],
            "nonsense",
        ),
        case(
            "malformed experiment",
            &["compare", "--experiment", "bad-experiment.toml", "--device", "cpu"],
            "bad-experiment.toml",
        ),
        case(
            "missing experiment file",
            &["compare", "--experiment", "nowhere.toml", "--device", "cpu"],
            "nowhere.toml",
        ),
        // -- configs ------------------------------------------------------------------------
        case("unknown preset", &["train", "--preset", "huge"], "unknown preset `huge`"),
        case("missing config file", &["train", "--config", "nowhere.toml"], "nowhere.toml"),
        case("malformed TOML", &["train", "--config", "broken.toml"], "malformed TOML"),
        case("unknown key in a file", &["train", "--config", "unknown.toml"], "d_modle"),
        case("wrong type in a file", &["train", "--config", "typed.toml"], "invalid config value"),
    ];
    let sets: Vec<(&'static str, &'static str, &'static str)> = vec![
        ("misspelt key", "model.d_modle=64", "d_modle"),
        ("override without a value", "model.d_model", "must look like section.key=value"),
        ("value of the wrong type", "model.d_model=\"wide\"", "invalid config value"),
        ("zero width", "model.d_model=0", "model.d_model"),
        ("heads that do not divide the width", "model.n_heads=5", "divisible by model.n_heads"),
        ("kv heads that do not divide the heads", "model.n_kv_heads=3", "n_kv_heads"),
        ("huge width", "model.d_model=4294967296", "beyond what archlab can train"),
        ("dropout of 1", "model.dropout=1.0", "model.dropout"),
        ("negative learning rate", "train.lr=-0.1", "train.lr"),
        ("NaN learning rate", "train.lr=nan", "train.lr"),
        ("zero batch", "train.batch_size=0", "train.batch_size"),
        ("sequence longer than the context", "train.seq_len=100000", "max_seq_len"),
        ("billions of tokens per step", "train.batch_size=100000000", "tokens per step"),
        ("validation fraction of one half", "data.val_fraction=0.5", "data.val_fraction"),
        ("empty data source", "data.source=\"\"", "data.source is empty"),
        ("missing corpus", "data.source=\"no/such/corpus.txt\"", "no/such/corpus.txt"),
        ("empty corpus", "data.source=\"empty.txt\"", "empty.txt"),
        ("two-byte corpus", "data.source=\"tiny.txt\"", "the training split has 2 tokens"),
        ("empty JSONL corpus", "data.source=\"empty.jsonl\"", "empty.jsonl"),
        ("JSONL without a text field", "data.source=\"nofield.jsonl\"", "nofield.jsonl"),
        ("unknown task", "data.source=\"task:telepathy\"", "telepathy"),
        ("MAD selective copying in too short a row", "data.source=\"task:mad-selective-copy\"", "≥ 33"),
        ("noise in every pair slot", "data.task.noise_fraction=1.0", "data.task.noise_fraction"),
        ("unknown tokenizer file", "data.tokenizer=\"no-such-tokenizer.json\"", "no-such-tokenizer.json"),
        ("garbage tokenizer file", "data.tokenizer=\"garbage.json\"", "garbage.json"),
        ("BPE vocabulary too small", "data.tokenizer=\"bpe:10\"", "between 257"),
        ("unknown norm", "model.norm=\"batch\"", "norm"),
        ("unknown mixer", "model.mixer=\"lstm\"", "lstm"),
        ("bad pattern symbol", "model.pattern=\"AMXMA\"", "unexpected 'X'"),
        ("pattern repeat past the limit", "model.pattern=\"(A)999999\"", "at most 9999"),
        (
            "pattern nested too deep",
            "model.pattern=\"((((((((((((((((((((((((((((((((((A)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2)2\"",
            "nested groups",
        ),
        ("pattern beside a changed mixer", "model.mixer=\"mamba\"", "has no effect beside"),
        ("zero window for local attention", "model.window=0", "model.window"),
        ("MoE with more picks than experts", "model.moe.top_k=9", "top_k"),
        ("Mamba-2 head size that does not divide", "model.mamba2.head_dim=7", "head_dim"),
        ("meta tokens without Hymba layers", "model.hymba.meta_tokens=4", "meta_tokens"),
    ];
    for (name, kv, says) in sets {
        let mut extra = set(kv);
        // Some keys only matter for the layers that use them.
        match name {
            "pattern beside a changed mixer" => extra.extend(["--set", "model.pattern=\"AMMA\""]),
            "zero window for local attention" => extra.extend(["--set", "model.pattern=\"LL\""]),
            "MoE with more picks than experts" => extra.extend(["--set", "model.ffn=\"moe\""]),
            "Mamba-2 head size that does not divide" => extra.extend(["--set", "model.pattern=\"SS\""]),
            "MAD selective copying in too short a row" => extra.extend(["--set", "train.seq_len=20"]),
            "noise in every pair slot" => extra.extend(["--set", "data.source=\"task:noisy-recall\""]),
            _ => {}
        }
        c.push(Case { args: train_with(extra), ..case(name, &[], says) });
    }
    c.extend([
        // -- run directories and their files ------------------------------------------------
        case("no such run", &["eval", "--run", "nowhere", "--device", "cpu"], "not a run directory"),
        case("a file as a run", &["eval", "--run", "a-file", "--device", "cpu"], "a-file"),
        case(
            "checkpoint with a flipped byte",
            &["eval", "--run", "flipped", "--device", "cpu"],
            "checksum mismatch",
        )
        .keeps(&["flipped/best.ckpt"]),
        case(
            "truncated checkpoint",
            &["eval", "--run", "truncated", "--checkpoint", "last", "--device", "cpu"],
            "corrupt checkpoint",
        ),
        case(
            "empty checkpoint",
            &["generate", "--run", "empty-ckpt", "--device", "cpu"],
            "not an archlab checkpoint",
        ),
        case(
            "not a checkpoint",
            &["eval", "--run", "not-ckpt", "--device", "cpu"],
            "not an archlab checkpoint",
        ),
        case(
            "config edited after training",
            &["eval", "--run", "widened", "--device", "cpu"],
            "does not fit the model",
        ),
        case(
            "resume with an edited config",
            &["train", "--run-dir", "widened", "--resume", "--device", "cpu", "--quiet"],
            "does not fit the model",
        )
        .keeps(&["widened/last.ckpt", "widened/metrics.jsonl"]),
        case(
            "malformed run config",
            &["eval", "--run", "bad-config", "--device", "cpu"],
            "bad-config/config.toml",
        ),
        case(
            "malformed run tokenizer",
            &["generate", "--run", "bad-tokenizer", "--device", "cpu"],
            "tokenizer",
        ),
        case(
            "missing run tokenizer",
            &["generate", "--run", "no-tokenizer", "--device", "cpu"],
            "tokenizer.json",
        ),
        case(
            "damaged metrics log",
            &["train", "--run-dir", "bad-metrics", "--resume", "--device", "cpu", "--quiet"],
            "line 1 is not a metrics record",
        )
        .keeps(&["bad-metrics/last.ckpt"]),
        case(
            "training over a finished run",
            &["train", "--run-dir", "run", "--device", "cpu", "--quiet"],
            "already holds a run",
        )
        .keeps(&["run/last.ckpt", "run/best.ckpt", "run/metrics.jsonl", "run/summary.json"]),
        case(
            "run directory in use",
            &["train", "--run-dir", "in-use", "--resume", "--device", "cpu", "--quiet"],
            "in use by archlab train (PID 1",
        )
        .keeps(&["in-use/last.ckpt", "in-use/.archlab.lock"]),
        case(
            "run directory under a file",
            &["train", "--run-dir", "a-file/run", "--device", "cpu", "--quiet"],
            "a-file",
        ),
        // -- comparisons ----------------------------------------------------------------------
        case(
            "malformed compare.json",
            &["compare", "dense", "--dir", "cmp-bad", "--device", "cpu", "--quiet"],
            "cmp-bad/compare.json",
        )
        .keeps(&["cmp-bad/compare.json"]),
        case(
            "comparison into a foreign directory",
            &["compare", "dense", "--dir", "cmp-other", "--device", "cpu", "--quiet"],
            "not empty",
        )
        .keeps(&["cmp-other/unrelated.txt"]),
        case(
            "comparison under a file",
            &["compare", "dense", "--dir", "a-file/cmp", "--device", "cpu", "--quiet"],
            "a-file",
        ),
        case("report of no comparison", &["report", "nowhere"], "nowhere"),
        case("report of malformed results", &["report", "cmp-results"], "results.json")
            .keeps(&["cmp-results/results.json"]),
        // -- data and import ------------------------------------------------------------------
        case(
            "prepared corpus with an impossible count",
            &["train", "--quiet", "--device", "cpu", "--set", "data.source=\"shard-bad\""],
            "corrupt token shard",
        ),
        case(
            "prepared corpus cut short",
            &["train", "--quiet", "--device", "cpu", "--set", "data.source=\"shard-short\""],
            "corrupt token shard",
        ),
        case(
            "prepare into a path under a file",
            &["data", "prepare", "--set", "data.builtin_bytes=30000", "--out", "a-file/prepared"],
            "a-file",
        ),
        case(
            "import without weights",
            &["import", "hf-noweights", "--out", "imp1", "--tokenizer", "run/tokenizer.json"],
            "hf-noweights",
        ),
        case(
            "import without a config",
            &["import", "hf-noconfig", "--out", "imp2", "--tokenizer", "run/tokenizer.json"],
            "config.json",
        ),
        case(
            "import of garbage weights",
            &["import", "hf-garbage", "--out", "imp3", "--tokenizer", "run/tokenizer.json"],
            "not a safetensors file",
        ),
        case(
            "import of an unknown architecture",
            &["import", "hf-unknown", "--out", "imp4", "--tokenizer", "run/tokenizer.json"],
            "bert",
        ),
        case(
            "import of a Qwen3-Next with an unknown layer type",
            &["import", "hf-qwen-layer", "--out", "imp5", "--tokenizer", "run/tokenizer.json"],
            "`sliding_attention` is not a Qwen3-Next layer",
        ),
        case(
            "import of a Qwen3-Next whose key heads do not divide its value heads",
            &["import", "hf-qwen-heads", "--out", "imp6", "--tokenizer", "run/tokenizer.json"],
            "must be a positive multiple of linear_num_key_heads",
        ),
        case(
            "import of a Qwen3-Next whose partial RoPE rotates an odd width",
            &["import", "hf-qwen-rope", "--out", "imp7", "--tokenizer", "run/tokenizer.json"],
            "partial_rotary_factor 0.1875 of head_dim 16 gives 3 rotated channels",
        ),
        case(
            "import with a Gated DeltaNet chunk of 0",
            &["import", "hf-qwen", "--out", "imp8", "--set", "model.gdn.chunk_size=0"],
            "model.gdn.chunk_size",
        ),
        case(
            "import over a run",
            &["import", "hf-garbage", "--out", "run", "--tokenizer", "run/tokenizer.json"],
            "already holds a run",
        )
        .keeps(&["run/best.ckpt", "run/config.toml"]),
        case(
            "eval of an empty corpus",
            &["eval", "--run", "run", "--device", "cpu", "--data", "empty.txt"],
            "empty.txt",
        ),
        case(
            "eval of a missing corpus",
            &["eval", "--run", "run", "--device", "cpu", "--data", "missing.txt"],
            "missing.txt not found",
        ),
        case(
            "eval of zero tokens",
            &["eval", "--run", "run", "--data", "tiny.txt", "--max-tokens", "0"],
            "invalid value '0' for '--max-tokens",
        ),
        case("max-tokens without a corpus", &["eval", "--run", "run", "--max-tokens", "5"], "--data"),
        case(
            "score with no input",
            &["score", "--run", "run"],
            "the following required arguments were not provided",
        ),
        case(
            "score of a token outside the vocabulary",
            &["score", "--run", "run", "--tokens", "[1, 99999]"],
            "token id 99999 is outside the model's vocabulary of 256",
        ),
        case(
            "score of malformed token ids",
            &["score", "--run", "run", "--tokens", "[1, -2]"],
            "--tokens must be",
        ),
        case(
            "score of a text longer than the context",
            &["score", "--run", "run", "--file", "long.txt"],
            "more than the model's context of",
        ),
        case(
            "fine-tune from a missing run",
            &["train", "--init-from", "nowhere", "--run-dir", "ft1"],
            "--init-from nowhere: no such run directory or checkpoint",
        ),
        case(
            "fine-tune from a run without a best checkpoint",
            &["train", "--init-from", "no-best", "--run-dir", "ft2"],
            "there is no checkpoint no-best/best.ckpt",
        ),
        case(
            "fine-tune with another model",
            &["train", "--init-from", "run", "--run-dir", "ft3", "--set", "model.n_layers=3"],
            "--set model.n_layers=3 contradicts the model of run/best.ckpt",
        ),
        case(
            "fine-tune with another tokenizer",
            &["train", "--init-from", "run", "--run-dir", "ft4", "--set", "data.tokenizer=bpe:512"],
            "a fine-tune uses its parent's tokenizer",
        ),
        case(
            "fine-tune and resume at once",
            &["train", "--init-from", "run", "--resume", "--run-dir", "ft5"],
            "cannot be used with",
        ),
        case(
            "export to a folder that exists",
            &["export", "--run", "run", "--out", "run"],
            "run already exists; choose another --out or remove it",
        )
        .keeps(&["run/config.toml", "run/best.ckpt"]),
        case(
            "export of a model transformers cannot express",
            &["export", "--run", "gelu-run", "--out", "gelu-hf"],
            "this model cannot be exported: its MLPs are GELU (model.mlp = \"gelu\") (LlamaForCausalLM has none)",
        ),
        case("export of a folder that is not a run", &["export", "--run", "cmp-other", "--out", "x-hf"], "is not a run directory"),
        case("serve of a folder that is not a run", &["serve", "--run", "cmp-other", "--port", "0"], "is not a run directory"),
        case(
            "serve with batching set to nothing",
            &["serve", "--run", "run", "--port", "0", "--max-batch", "0"],
            "--max-batch and --max-batch-tokens must be at least 1",
        ),
        case(
            "serve on an address that is not this machine's",
            &["serve", "--run", "run", "--host", "203.0.113.7", "--port", "0"],
            "cannot listen on 203.0.113.7:0",
        ),
        // -- a disk that fills ---------------------------------------------------------------
        case(
            "a disk that fills while training",
            &train(&["--run-dir", "full-run"]).iter().map(String::as_str).collect::<Vec<_>>(),
            "the disk is full or a file-size limit was reached",
        )
        .with_disk_full_after(16 << 10),
        case(
            "a disk that fills while preparing data",
            &["data", "prepare", "--set", "data.builtin_bytes=30000", "--out", "full-prepared"],
            "the disk is full or a file-size limit was reached",
        )
        .with_disk_full_after(4 << 10),
        case(
            "a disk that fills while exporting",
            &["export", "--run", "run", "--out", "full-hf"],
            "the disk is full or a file-size limit was reached",
        )
        .with_disk_full_after(16 << 10),
        case(
            "a disk that fills while importing",
            &["import", "hf-qwen", "--out", "full-import"],
            "the disk is full or a file-size limit was reached",
        )
        .with_disk_full_after(16 << 10),
        case(
            "a disk that fills while resuming a run",
            &["train", "--quiet", "--resume", "--run-dir", "resume-full", "--device", "cpu"],
            "the disk is full or a file-size limit was reached",
        )
        .keeps(&["resume-full/last.ckpt", "resume-full/best.ckpt", "resume-full/config.toml"])
        .with_disk_full_after(16 << 10),
    ]);
    c
}

#[test]
fn every_bad_input_is_one_clear_error() {
    let dir = temp_dir("bad-inputs");
    fixtures(&dir);
    let cases = cases();
    assert!(cases.len() >= 60, "{} cases", cases.len());
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/bad-inputs.md");
    // ARCHLAB_WRITE_BAD_INPUTS=1 rewrites the table of docs/bad-inputs.md from this run.
    let write_doc = std::env::var_os("ARCHLAB_WRITE_BAD_INPUTS").is_some();
    let doc = std::fs::read_to_string(&doc_path).unwrap_or_default();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for case in &cases {
        let before: Vec<(PathBuf, Option<Vec<u8>>)> =
            case.untouched.iter().map(|f| (dir.join(f), std::fs::read(dir.join(f)).ok())).collect();
        let out = archlab_limited(&case.args, &dir, case.file_size_limit);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error_lines = stderr.lines().filter(|l| l.starts_with("error")).count();
        let mut wrong = Vec::new();
        if out.status.success() {
            wrong.push("it succeeded".to_string());
        }
        if out.status.code() == Some(101) || stderr.contains("panicked") {
            wrong.push("it panicked".into());
        }
        if !stderr.contains(case.says) {
            wrong.push(format!("the message lacks {:?}", case.says));
        }
        if error_lines != 1 {
            wrong.push(format!("{error_lines} error lines"));
        }
        for (path, bytes) in &before {
            if &std::fs::read(path).ok() != bytes {
                wrong.push(format!("{} changed", path.display()));
            }
        }
        for path in leftovers(&dir) {
            wrong.push(format!("it left {}", path.display()));
            let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
        }
        let message = stderr.lines().find(|l| l.starts_with("error")).unwrap_or("").replace('|', "\\|");
        let command = format!("`archlab {}`", case.args.join(" ").replace('|', "\\|"));
        rows.push(format!(
            "| {} | {command} | {} | {message} |",
            case.name,
            out.status.code().map_or("signal".into(), |c| c.to_string())
        ));
        if !write_doc && !doc.contains(&format!("| {} |", case.name)) {
            wrong.push("docs/bad-inputs.md does not list it".into());
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {} (args {:?}; stderr: {})",
                case.name,
                wrong.join(", "),
                case.args,
                stderr.trim()
            ));
        }
    }
    if write_doc {
        let head = doc.split("\n| case |").next().unwrap_or_default().trim_end().to_string();
        let table = format!("| case | command | exit | message |\n|---|---|---|---|\n{}\n", rows.join("\n"));
        std::fs::write(&doc_path, format!("{head}\n\n{table}")).unwrap();
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases wrong:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
