//! Shared helpers for the integration tests: backends and small configs.
#![allow(dead_code)]

use std::path::PathBuf;

use archlab::config::{Precision, RunConfig};

pub type Cpu = burn::backend::NdArray<f32>;
pub type CpuAd = burn::backend::Autodiff<Cpu>;
pub type Cpu64 = burn::backend::NdArray<f64>;
pub type Cpu64Ad = burn::backend::Autodiff<Cpu64>;

/// A fresh, empty temporary directory unique to this test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("archlab-test-{}-{name}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config small enough for CI: a 2-layer d=64 model on a 400 kB built-in corpus. The data
/// cache is shared by all tests (same key → same folder) so the corpus is prepared once.
pub fn small_config() -> RunConfig {
    let mut cfg = RunConfig::resolve("tiny", None, &[]).unwrap();
    cfg.data.builtin_bytes = 400_000;
    cfg.data.cache_dir = std::env::temp_dir().join("archlab-test-data-cache").display().to_string();
    cfg.model.d_model = 64;
    cfg.model.n_layers = 2;
    cfg.model.n_heads = 4;
    cfg.model.d_ff = 192;
    cfg.model.max_seq_len = 128;
    cfg.train.batch_size = 8;
    cfg.train.seq_len = 64;
    cfg.train.max_steps = 40;
    cfg.train.warmup_steps = 5;
    cfg.train.lr = 3e-3;
    cfg.train.precision = Precision::F32;
    cfg.train.checkpoint_every = 0;
    cfg.train.log_every = 1;
    cfg.eval.every = 20;
    cfg.eval.batches = 2;
    cfg.validate().unwrap();
    cfg
}

/// Whether the shared data folder beside the project is present.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent", p.display());
        None
    }
}
