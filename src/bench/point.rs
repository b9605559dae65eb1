//! `archlab bench-point`: one measurement, alone in its own process.
//!
//! The parent (`bench::measure`) starts one of these per (architecture, sequence length), so
//! that the peak memory read here is this measurement's alone, and an out-of-memory crash ends
//! only this process. Nothing runs here but the measurement: no data preparation, no logging,
//! one JSON file written at the end.
//!
//! What is measured, in order:
//! 1. training: one warm-up step (kernel compilation and autotuning, allocator growth,
//!    optimizer state), timed on its own, then `steps` timed steps of forward + backward +
//!    global-norm clip + AdamW, each ended by a device sync so that every step's time is its
//!    own; throughput = batch · T · steps / their total time, and their median time. The
//!    batches are random ids, or the `--tokens` file's (see `tokens`);
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

use super::tokens::TokenFile;
use crate::compare::results::{BenchPoint, BenchStatus};
use crate::config::RunConfig;
use crate::device::DeviceArg;
use crate::device::{self, Resolved};
use crate::model::LanguageModel;
use crate::model::lm::ids_tensor;
use crate::rng::Rng;
use crate::train::{metrics, optim, use_bf16};
use crate::util::atomic;
use crate::with_backend;

/// One point to measure: what the parent `bench` passes to `archlab bench-point`.
#[derive(Clone, Debug)]
pub struct PointRequest {
    /// The resolved config (TOML) of the architecture to measure.
    pub config: std::path::PathBuf,
    pub seq_len: usize,
    pub batch: usize,
    pub steps: usize,
    pub inference: bool,
    pub decode_tokens: usize,
    pub device: DeviceArg,
    /// Train on this token file's batches instead of random ids.
    pub tokens: Option<std::path::PathBuf>,
    /// Where to write the point's JSON.
    pub out: std::path::PathBuf,
}

/// The `bench-point` command: measure, then write one `BenchPoint` to `--out`.
pub fn run_point(args: PointRequest) -> Result<()> {
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

fn check_args(a: &PointRequest) -> Result<()> {
    if a.seq_len == 0 || a.batch == 0 || a.steps == 0 {
        bail!("bench-point needs --seq-len, --batch and --steps of at least 1");
    }
    if a.inference && a.decode_tokens == 0 {
        bail!("--decode-tokens must be at least 1 with --inference");
    }
    Ok(())
}

/// What the model needs before it can be built: a vocabulary and room for the positions.
fn check_config(cfg: &RunConfig, a: &PointRequest) -> Result<()> {
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
    a: &PointRequest,
    dev: &B::Device,
    resolved: Resolved,
) -> Result<BenchPoint> {
    let on_gpu = resolved != Resolved::Cpu;
    let bf16 = use_bf16::<B>(cfg.train.precision, dev, on_gpu)?;
    let seed = cfg.train.seed;
    B::seed(dev, seed); // only dropout draws from the backend RNG
    let model = LanguageModel::<B>::new(&cfg.model, seed, bf16, dev);
    let mut tokens = Rng::fork(seed, "bench/tokens");
    // Batches are made before the clock starts: the host's work on them is not the model's cost.
    let batches = match &a.tokens {
        Some(path) => file_batches(path, a, cfg.model.vocab_size)?,
        None => random_batches(&mut tokens, a, cfg.model.vocab_size),
    };

    let train = time_training(model, cfg, a, dev, resolved, &batches)?;
    let (prefill, decode) = if a.inference {
        let (p, d) = time_inference(&train.model.valid(), a, dev, &mut tokens)?;
        (Some(p), Some(d))
    } else {
        (None, None)
    };
    // The parent replaces the name with the architecture's and adds the FLOPs and MFU.
    Ok(BenchPoint {
        train_tokens_per_s: Some(train.tokens_per_s),
        step_time_s: Some(train.step_time_s),
        median_step_s: Some(train.median_step_s),
        warmup_s: Some(train.warmup_s),
        peak_memory_bytes: Some(train.peak_memory_bytes),
        prefill_tokens_per_s: prefill,
        decode_tokens_per_s: decode,
        ..BenchPoint::new(&cfg.model.pattern, a.seq_len, a.batch, BenchStatus::Ok)
    })
}

/// One training step's inputs and targets, `batch · T` ids each.
type Batch = (Vec<u32>, Vec<u32>);

/// The warm-up batch and the timed steps' batches (`steps + 1` in all) from the token file.
fn file_batches(path: &std::path::Path, a: &PointRequest, vocab: usize) -> Result<Vec<Batch>> {
    let file = TokenFile::open(path)?;
    file.check(a.batch, a.seq_len, vocab)?;
    Ok((0..=a.steps).map(|step| file.batch(step, a.batch, a.seq_len)).collect())
}

/// Uniformly random inputs and targets, as the bench has always drawn them.
fn random_batches(rng: &mut Rng, a: &PointRequest, vocab: usize) -> Vec<Batch> {
    let n = a.batch * a.seq_len;
    (0..=a.steps).map(|_| (random_ids(rng, n, vocab), random_ids(rng, n, vocab))).collect()
}

/// What the training part measured, and the model it leaves (for inference).
struct Training<B: AutodiffBackend> {
    model: LanguageModel<B>,
    tokens_per_s: f64,
    step_time_s: f64,
    median_step_s: f64,
    warmup_s: f64,
    peak_memory_bytes: u64,
}

fn time_training<B: AutodiffBackend>(
    mut model: LanguageModel<B>,
    cfg: &RunConfig,
    a: &PointRequest,
    dev: &B::Device,
    resolved: Resolved,
    batches: &[Batch],
) -> Result<Training<B>> {
    let mut optim = optim::Optimizers::<B>::new(&cfg.train);
    let mut peak_device = 0u64;
    // Step 0 is the warm-up; every step ends with a device sync (the optimizer update would
    // otherwise still be queued on a GPU and land in the next step's time).
    let mut step_times = Vec::with_capacity(batches.len());
    for (x, y) in batches {
        let started = Instant::now();
        let shape = [a.batch, a.seq_len];
        model = train_step(model, &mut optim, cfg, ids_tensor(x, shape, dev), ids_tensor(y, shape, dev));
        sync::<B>(dev)?;
        step_times.push(started.elapsed().as_secs_f64().max(1e-9));
        if let Some(bytes) = device::device_memory_bytes(resolved) {
            peak_device = peak_device.max(bytes);
        }
    }
    let (warmup_s, timed) = step_times.split_first().expect("at least the warm-up step ran");
    let elapsed: f64 = timed.iter().sum();
    let peak_memory_bytes =
        if resolved == Resolved::Cpu { metrics::peak_rss_bytes().unwrap_or(0) } else { peak_device };
    Ok(Training {
        model,
        tokens_per_s: (a.batch * a.seq_len * timed.len()) as f64 / elapsed,
        step_time_s: elapsed / timed.len() as f64,
        median_step_s: median(timed),
        warmup_s: *warmup_s,
        peak_memory_bytes,
    })
}

/// The median of a non-empty list (the mean of the middle two for an even length).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] }
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
    a: &PointRequest,
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

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_lengths() {
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(median(&[5.0, 1.0, 100.0]), 5.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 100.0]), 3.0);
    }
}
