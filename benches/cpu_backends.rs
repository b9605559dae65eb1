//! Which CPU backend trains faster: NdArray or Flex? Full training steps (forward, backward,
//! AdamW) of the `tiny` preset's model on the built-in corpus.
//!
//! Run: `cargo bench --profile dev --bench cpu_backends` (add `-- --preset 27m-256` for the
//! seeds' shape at T=256). Prints tokens/s per backend, median of timed steps after warm-up.

use std::time::Instant;

use archlab::config::RunConfig;
use archlab::data::batcher::Batcher;
use archlab::data::prepare::ensure_prepared;
use archlab::kernels::AutodiffBackend;
use archlab::model::LanguageModel;
use archlab::model::lm::batch_tensors;
use archlab::train::optim::Optimizers;
use archlab::train::resolve_vocab;
use burn::backend::{Autodiff, Flex, NdArray};
use burn::optim::GradientsParams;
use burn::tensor::ElementConversion;

const WARMUP: usize = 3;
const STEPS: usize = 15;

fn bench<B: AutodiffBackend>(cfg: &RunConfig, batcher: &mut Batcher) -> (f64, f64) {
    let device = Default::default();
    let mut model = LanguageModel::<B>::new(&cfg.model, 0, false, &device);
    let mut optim = Optimizers::<B>::new(&cfg.train);
    let mut times = Vec::new();
    let mut last = 0.0;
    for step in 0..WARMUP + STEPS {
        let t0 = Instant::now();
        let (x, y) = batch_tensors::<B>(&batcher.batch(step as u64), &device);
        let loss = model.loss(x, y);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        last = loss.into_scalar().elem::<f64>(); // the read-back waits for the step to finish
        if step >= WARMUP {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tokens = (cfg.train.batch_size * cfg.train.seq_len) as f64;
    (tokens / median, last)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let preset =
        args.iter().position(|a| a == "--preset").map(|i| args[i + 1].clone()).unwrap_or("tiny".into());
    let mut cfg = RunConfig::resolve(&preset, None, &["data.tokenizer=\"byte\"".into()]).unwrap();
    let data = ensure_prepared(&cfg.data).unwrap();
    resolve_vocab(&mut cfg, data.tokenizer.vocab_size()).unwrap();
    let mut batcher = Batcher::new(&data.train, cfg.train.batch_size, cfg.train.seq_len, 0).unwrap();
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    println!(
        "preset {preset}: {} params, batch {} × T {}, {threads} CPU threads, median of {STEPS} steps after {WARMUP} warm-up",
        cfg.model.param_counts().total,
        cfg.train.batch_size,
        cfg.train.seq_len
    );
    println!("| backend | train tokens/s | loss after {} steps |", WARMUP + STEPS);
    println!("|---|---|---|");
    let (tps, loss) = bench::<Autodiff<NdArray<f32>>>(&cfg, &mut batcher);
    println!("| NdArray<f32> | {tps:.0} | {loss:.4} |");
    let (tps, loss) = bench::<Autodiff<Flex<f32>>>(&cfg, &mut batcher);
    println!("| Flex<f32> | {tps:.0} | {loss:.4} |");
}
