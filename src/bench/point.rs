//! `archlab bench-point`: one measurement, alone in its own process.
//!
//! The parent (`bench::measure`) starts one of these per (architecture, sequence length), so
//! that the peak memory read here is this measurement's alone, and an out-of-memory crash ends
//! only this process. Nothing runs here but the measurement: no data preparation, no logging,
//! one JSON file written at the end.
//!
//! What is measured, in order:
//! 1. training: one warm-up step (kernel compilation, allocator growth), then `steps` timed
//!    steps of forward + backward + global-norm clip + AdamW, each synchronised by reading the
//!    loss to the host as `train` does; throughput = batch · T · steps / time;
//! 2. peak memory of the training: device memory held by the allocator on a GPU (sampled
//!    after every step), the process's peak resident set (VmHWM) on the CPU;
//! 3. with `--inference`, on the inner (non-autodiff) backend: prefill (one `forward` of
//!    `[1, T]`, timed after one untimed run) and decoding (`forward_step` of T prompt tokens,
//!    one untimed token, then `decode_tokens` timed single-token steps, each token read back
//!    to the host as greedy generation does).

use std::time::Instant;

use crate::kernels::{AutodiffBackend, Backend};
use anyhow::{Result, anyhow, bail};
use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::ElementConversion;

use crate::cli::BenchPointArgs;
use crate::compare::results::{BenchPoint, BenchStatus};
use crate::config::RunConfig;
use crate::device::{self, Resolved};
use crate::model::LanguageModel;
use crate::model::lm::ids_tensor;
use crate::rng::Rng;
use crate::train::{metrics, optim, use_bf16};
use crate::util::atomic;
use crate::with_backend;

/// The `bench-point` command: measure, then write one `BenchPoint` to `--out`.
pub fn run_point(args: BenchPointArgs) -> Result<()> {
    check_args(&args)?;
    let mut cfg = RunConfig::load(&args.config)?;
    // The command line's shape wins over the config's (the parent writes both the same).
    cfg.train.seq_len = args.seq_len;
    cfg.train.batch_size = args.batch;
    cfg.train.grad_accum = 1;
    check_config(&cfg, &args)?;
    let resolved = device::resolve(args.device)?;
    let point = with_backend!(resolved, |B, dev| measure_point::<B>(&cfg, &args, &dev, resolved))?;
    atomic::write_json(&args.out, &point)
}

fn check_args(a: &BenchPointArgs) -> Result<()> {
    if a.seq_len == 0 || a.batch == 0 || a.steps == 0 {
        bail!("bench-point needs --seq-len, --batch and --steps of at least 1");
    }
    if a.inference && a.decode_tokens == 0 {
        bail!("--decode-tokens must be at least 1 with --inference");
    }
    Ok(())
}

/// What the model needs before it can be built: a vocabulary and room for the positions.
fn check_config(cfg: &RunConfig, a: &BenchPointArgs) -> Result<()> {
    if cfg.model.vocab_size == 0 {
        bail!(
            "{}: model.vocab_size is 0; bench-point builds no tokenizer, so the config must give it",
            a.config.display()
        );
    }
    let longest = a.seq_len + if a.inference { a.decode_tokens + 1 } else { 0 };
    if let Some(limit) = cfg.model.context_limit()
        && longest > limit
    {
        bail!(
            "{}: {longest} positions needed but model.max_seq_len allows {limit}; raise model.max_seq_len",
            a.config.display()
        );
    }
    Ok(())
}

/// The whole measurement on backend `B` (autodiff); inference runs on its inner backend.
fn measure_point<B: AutodiffBackend>(
    cfg: &RunConfig,
    a: &BenchPointArgs,
    dev: &B::Device,
    resolved: Resolved,
) -> Result<BenchPoint> {
    let on_gpu = resolved != Resolved::Cpu;
    let bf16 = use_bf16::<B>(cfg.train.precision, dev, on_gpu)?;
    let seed = cfg.train.seed;
    B::seed(dev, seed); // only dropout draws from the backend RNG
    let model = LanguageModel::<B>::new(&cfg.model, seed, bf16, dev);
    let mut tokens = Rng::fork(seed, "bench/tokens");

    let train = time_training(model, cfg, a, dev, resolved, &mut tokens)?;
    let (prefill, decode) = if a.inference {
        let (p, d) = time_inference(&train.model.valid(), a, dev, &mut tokens)?;
        (Some(p), Some(d))
    } else {
        (None, None)
    };
    Ok(BenchPoint {
        arch: cfg.model.pattern.clone(), // the parent replaces it with the architecture's name
        seq_len: a.seq_len,
        batch: a.batch,
        status: BenchStatus::Ok,
        train_tokens_per_s: Some(train.tokens_per_s),
        step_time_s: Some(train.step_time_s),
        peak_memory_bytes: Some(train.peak_memory_bytes),
        prefill_tokens_per_s: prefill,
        decode_tokens_per_s: decode,
    })
}

/// What the training part measured, and the model it leaves (for inference).
struct Training<B: AutodiffBackend> {
    model: LanguageModel<B>,
    tokens_per_s: f64,
    step_time_s: f64,
    peak_memory_bytes: u64,
}

fn time_training<B: AutodiffBackend>(
    mut model: LanguageModel<B>,
    cfg: &RunConfig,
    a: &BenchPointArgs,
    dev: &B::Device,
    resolved: Resolved,
    tokens: &mut Rng,
) -> Result<Training<B>> {
    let mut optim = optim::Optimizers::<B>::new(&cfg.train);
    let vocab = cfg.model.vocab_size;
    // Batches are drawn before the clock starts: the host's random numbers are not the model's cost.
    let batches: Vec<(Vec<u32>, Vec<u32>)> = (0..=a.steps)
        .map(|_| {
            (random_ids(tokens, a.batch * a.seq_len, vocab), random_ids(tokens, a.batch * a.seq_len, vocab))
        })
        .collect();
    let mut peak_device = 0u64;
    let mut started = Instant::now();
    for (i, (x, y)) in batches.iter().enumerate() {
        if i == 1 {
            // Step 0 was the warm-up: wait for it to finish, then start the clock.
            sync::<B>(dev)?;
            started = Instant::now();
        }
        let shape = [a.batch, a.seq_len];
        model = train_step(model, &mut optim, cfg, ids_tensor(x, shape, dev), ids_tensor(y, shape, dev));
        if let Some(bytes) = device::device_memory_bytes(resolved) {
            peak_device = peak_device.max(bytes);
        }
    }
    sync::<B>(dev)?; // the last optimizer update may still be queued on a GPU
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let peak_memory_bytes =
        if resolved == Resolved::Cpu { metrics::peak_rss_bytes().unwrap_or(0) } else { peak_device };
    Ok(Training {
        model,
        tokens_per_s: (a.batch * a.seq_len * a.steps) as f64 / elapsed,
        step_time_s: elapsed / a.steps as f64,
        peak_memory_bytes,
    })
}

/// One optimizer step as `train` takes it (grad_accum = 1, no NaN bookkeeping): objective,
/// backward, the loss read to the host (the sync point), global-norm clip, AdamW.
fn train_step<B: AutodiffBackend>(
    model: LanguageModel<B>,
    optim: &mut optim::Optimizers<B>,
    cfg: &RunConfig,
    x: burn::tensor::Tensor<B, 2, burn::tensor::Int>,
    y: burn::tensor::Tensor<B, 2, burn::tensor::Int>,
) -> LanguageModel<B> {
    let objective = model.objective(x, y);
    let mut grads = GradientsParams::from_grads(objective.loss.backward(), &model);
    let _loss: f64 = objective.ce.detach().into_scalar().elem(); // sync point, as in train
    let clip = cfg.train.grad_clip;
    let norm = optim::global_grad_norm(&model, &grads);
    if clip > 0.0 && norm.is_finite() && norm > clip {
        optim::scale_grads(&model, &mut grads, clip / norm);
    }
    optim.step(cfg.train.lr, model, grads)
}

/// Prefill and decoding throughput (tokens/s) of one sequence on the inference backend.
fn time_inference<B: Backend>(
    model: &LanguageModel<B>,
    a: &BenchPointArgs,
    dev: &B::Device,
    tokens: &mut Rng,
) -> Result<(f64, f64)> {
    let t = a.seq_len;
    let prompt = random_ids(tokens, t, model.vocab_size());
    let prefill = || -> Result<u32> {
        let logits = model.forward(ids_tensor(&prompt, [1, t], dev));
        let next = last_token(logits);
        sync::<B>(dev)?;
        Ok(next)
    };
    prefill()?; // warm-up: kernels, allocator
    let started = Instant::now();
    prefill()?;
    let prefill_tokens_per_s = t as f64 / started.elapsed().as_secs_f64().max(1e-9);

    // Decoding continues a prompt that went through the cached path, as `generate` does.
    let mut state = model.decode_state();
    let mut next = last_token(model.forward_step(ids_tensor(&prompt, [1, t], dev), &mut state));
    next = last_token(model.forward_step(ids_tensor(&[next], [1, 1], dev), &mut state)); // warm-up
    let started = Instant::now();
    for _ in 0..a.decode_tokens {
        next = last_token(model.forward_step(ids_tensor(&[next], [1, 1], dev), &mut state));
    }
    let decode_tokens_per_s = a.decode_tokens as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok((prefill_tokens_per_s, decode_tokens_per_s))
}

/// The greedy next token after the last position, read to the host (a sync point, as the
/// sampling step of generation is).
fn last_token<B: Backend>(logits: burn::tensor::Tensor<B, 3>) -> u32 {
    let t = logits.dims()[1];
    let id: i64 = logits.narrow(1, t - 1, 1).argmax(2).into_scalar().elem();
    id as u32
}

/// `n` token ids drawn uniformly from the vocabulary with archlab's deterministic generator.
fn random_ids(rng: &mut Rng, n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(vocab) as u32).collect()
}

/// Waits until every queued operation on the device has finished.
fn sync<B: Backend>(dev: &B::Device) -> Result<()> {
    B::sync(dev).map_err(|e| anyhow!("the device failed while running the measurement: {e:?}"))
}
