//! Architectures side by side on the CPU: training tokens/s (forward, backward, AdamW) of the
//! `tiny`-sized dense Transformer, pure Mamba-1 and Mamba-2 stacks, and the MoE Transformer
//! (8 experts, top-2, active parameters matched to dense) at T = 256 and 1024, the same number
//! of tokens per step (4096) at both lengths, on the built-in corpus.
//!
//! Run: `cargo bench --profile dev --bench arch_cpu`. Prints a Markdown table: median step time
//! after warm-up, tokens/s, the ratio to dense at the same T, and the process's peak RSS so far
//! (monotone over the run, so read it as an upper bound for the later rows).
//! `ARCHLAB_BENCH_ONLY=dense,moe` keeps the rows whose name contains one of the words,
//! `ARCHLAB_BENCH_SEQ_LENS=256` the lengths.

use std::time::Instant;

use archlab::config::RunConfig;
use archlab::data::batcher::Batcher;
use archlab::data::prepare::ensure_prepared;
use archlab::model::LanguageModel;
use archlab::model::lm::batch_tensors;
use archlab::train::optim::Optimizers;
use archlab::train::resolve_vocab;
use burn::optim::GradientsParams;
use burn::tensor::ElementConversion;

type B = burn::backend::Autodiff<archlab::device::CpuBackend>;

const WARMUP: usize = 1;
const STEPS: usize = 4;
const TOKENS_PER_STEP: usize = 4096;

/// Median seconds per training step.
fn step_time(cfg: &RunConfig, batcher: &mut Batcher) -> f64 {
    let device = Default::default();
    let mut model = LanguageModel::<B>::new(&cfg.model, 0, false, &device);
    let mut optim = Optimizers::<B>::new(&cfg.train);
    let mut times = Vec::new();
    for step in 0..WARMUP + STEPS {
        let t0 = Instant::now();
        let (x, y) = batch_tensors::<B>(&batcher.batch(step as u64), &device);
        let loss = model.objective(x, y).loss;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        let _ = loss.into_scalar().elem::<f64>(); // the read-back waits for the step to finish
        if step >= WARMUP {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "CPU training throughput, {threads} threads, {TOKENS_PER_STEP} tokens per step, median of {STEPS} steps after {WARMUP} warm-up\n"
    );
    println!("| model | params (active) | T | batch | step (s) | tokens/s | vs dense | peak RSS |");
    println!("|---|---|---|---|---|---|---|---|");
    let seq_lens: Vec<usize> = match std::env::var("ARCHLAB_BENCH_SEQ_LENS") {
        Ok(list) => list
            .split(',')
            .map(|t| t.trim().parse().expect("ARCHLAB_BENCH_SEQ_LENS: comma-separated integers"))
            .collect(),
        Err(_) => vec![256, 1024],
    };
    for t in seq_lens {
        let mut dense_tps = None;
        let rows = [
            ("dense (tiny)", "tiny"),
            ("mamba (chunked scan, chunk √T)", "mamba-tiny"),
            ("mamba2 (SSD, chunk 64)", "mamba2-tiny"),
            ("moe (8 experts, top-2, grouped dispatch)", "moe-tiny"),
        ];
        let only = std::env::var("ARCHLAB_BENCH_ONLY").unwrap_or_default();
        let wanted = |name: &str| only.is_empty() || only.split(',').any(|w| name.contains(w.trim()));
        for (name, preset) in rows.into_iter().filter(|r| wanted(r.0)) {
            let batch = TOKENS_PER_STEP / t;
            let sets = [
                format!("train.seq_len={t}"),
                format!("train.batch_size={batch}"),
                format!("model.max_seq_len={t}"),
                "data.tokenizer=\"byte\"".to_string(),
            ];
            let mut cfg = RunConfig::resolve(preset, None, &sets).unwrap();
            let data = ensure_prepared(&cfg.data).unwrap();
            resolve_vocab(&mut cfg, data.tokenizer.vocab_size()).unwrap();
            let mut batcher = Batcher::new(&data.train, batch, t, 0).unwrap();
            let secs = step_time(&cfg, &mut batcher);
            let tps = TOKENS_PER_STEP as f64 / secs;
            let ratio = match dense_tps {
                None => {
                    dense_tps = Some(tps);
                    "1.00".to_string()
                }
                Some(d) => format!("{:.2}", tps / d),
            };
            let rss = archlab::train::metrics::peak_rss_bytes().unwrap_or(0) as f64 / (1u64 << 20) as f64;
            println!(
                "| {name} | {:.2}M ({:.2}M) | {t} | {batch} | {secs:.3} | {tps:.0} | {ratio} | {rss:.0} MiB |",
                cfg.model.param_counts().total as f64 / 1e6,
                cfg.model.param_counts().active as f64 / 1e6
            );
        }
    }
}
