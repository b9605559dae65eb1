//! The training loop: one function, read top to bottom (nanoGPT's `train.py`, burn's
//! custom-training-loop example). Helpers live beside it: `schedule` (lr), `optim` (AdamW
//! groups, clipping), `checkpoint` (atomic save/resume), `metrics` (JSONL, summary),
//! `recompute` (activation checkpointing).

pub mod checkpoint;
pub mod data_parallel;
pub mod finetune;
pub mod metrics;
pub mod optim;
pub mod recompute;
pub mod schedule;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::kernels::AutodiffBackend;
use anyhow::{Context, Result, bail};
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::ElementConversion;
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::{Precision, RunConfig};
use crate::data::stream::TrainData;
use crate::eval::{ValMetrics, evaluate};
use crate::model::LanguageModel;
use crate::model::lm::{batch_tensors, mask_tensor};
use crate::rng::Rng;
use crate::util::atomic;
use checkpoint::TrainState;
use metrics::{MetricsLog, Record, Summary, read_records};

/// Steps whose time is reported apart as warm-up (kernel compilation, autotuning, caches).
const WARMUP_STEPS: usize = 5;

/// How to run `train`, beyond the config.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub run_dir: PathBuf,
    /// Continue from `run_dir/last.ckpt` instead of starting fresh.
    pub resume: bool,
    /// Stop (with a checkpoint) after this many steps, as if killed there; `None` runs to the end.
    pub stop_after: Option<usize>,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress: bool,
    /// Device name for the records.
    pub device_name: String,
    /// Whether the device is a GPU (decides what `precision = "auto"` means).
    pub on_gpu: bool,
    /// Reads the device memory in use (GPU backends); `None` reports the process's peak RSS.
    pub device_memory: Option<fn() -> Option<u64>>,
    /// Devices to train on in data parallel (`data_parallel`); 1: the device alone.
    pub devices: usize,
}

/// What a finished (or stopped) `train` call returns.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Training losses of the steps this call ran, `(step, loss)`.
    pub losses: Vec<(usize, f64)>,
    pub summary: Option<Summary>,
}

/// Fills in what the config leaves to the data (`model.vocab_size = 0` → the tokenizer's).
pub fn resolve_vocab(cfg: &mut RunConfig, tok_vocab: usize) -> Result<()> {
    if cfg.model.vocab_size == 0 {
        cfg.model.vocab_size = tok_vocab;
    } else if cfg.model.vocab_size < tok_vocab {
        bail!(
            "vocabulary mismatch: model.vocab_size is {} but the tokenizer has {tok_vocab} entries; \
             set model.vocab_size = 0 (take it from the tokenizer) or at least {tok_vocab}",
            cfg.model.vocab_size
        );
    }
    Ok(())
}

/// Whether bf16 matmuls are used for this config on this backend. `auto` means bf16 on a GPU
/// that supports it; on the CPU bf16 is emulated and slower than fp32, so auto keeps fp32 there.
pub fn use_bf16<B: burn::tensor::backend::Backend>(
    precision: Precision,
    device: &B::Device,
    on_gpu: bool,
) -> Result<bool> {
    let supported = B::supports_dtype(device, burn::tensor::DType::BF16);
    match precision {
        Precision::F32 => Ok(false),
        Precision::Auto => Ok(supported && on_gpu),
        Precision::Bf16 => {
            if !supported {
                bail!("train.precision = bf16 is not supported on {}; use --precision f32", B::name(device));
            }
            Ok(true)
        }
    }
}

pub fn train<B: AutodiffBackend>(
    cfg: &RunConfig,
    device: &B::Device,
    opts: &TrainOptions,
) -> Result<TrainOutcome> {
    let wall = Instant::now();
    let run = &opts.run_dir;

    // -- data ------------------------------------------------------------------------------
    let bf16 = use_bf16::<B>(cfg.train.precision, device, opts.on_gpu)?; // fail before any work
    data_parallel::check(cfg, opts.devices, opts.on_gpu)?;
    let data = TrainData::open(&cfg.data, cfg.train.seq_len)?;
    let mut cfg = cfg.clone();
    resolve_vocab(&mut cfg, data.vocab_size())?;
    let (t, b, accum) = (cfg.train.seq_len, cfg.train.batch_size, cfg.train.grad_accum);
    let mut batcher = data.batches(b, t, cfg.train.seed)?;
    // The held-out set depends on the corpus seed, not the training seed: every seed and
    // every architecture is scored on the same sequences.
    let val_batches = data.validation(cfg.eval.batches, b, t, cfg.data.corpus_seed)?;
    let token_bytes = data.token_bytes();

    // -- run directory ---------------------------------------------------------------------
    std::fs::create_dir_all(run).with_context(|| format!("creating run directory {}", run.display()))?;
    let _lock = crate::util::lock::DirLock::acquire(run, "train")?;
    let last_ckpt = run.join("last.ckpt");
    if opts.resume {
        if !last_ckpt.exists() {
            bail!(
                "cannot resume: {} has no checkpoint (last.ckpt); start it without --resume",
                run.display()
            );
        }
    } else if last_ckpt.exists() {
        bail!(
            "run directory {} already holds a run; resume it with --resume or choose another --run-dir",
            run.display()
        );
    }
    atomic::write(&run.join("config.toml"), cfg.to_toml().as_bytes())?;
    if let Some(json) = data.tokenizer_json()? {
        atomic::write(&run.join("tokenizer.json"), json.as_bytes())?;
    }

    // -- model & optimizer -----------------------------------------------------------------
    let mut model = LanguageModel::<B>::new(&cfg.model, cfg.train.seed, bf16, device);
    if !opts.resume && !cfg.train.init_from.is_empty() {
        // A fine-tune: the parent's weights; step, optimizer and schedule start fresh.
        model = checkpoint::load_weights(Path::new(&cfg.train.init_from), model, device)?;
        eprintln!("archlab: fine-tuning from {} (its weights only)", cfg.train.init_from);
    }
    let mut optim = optim::Optimizers::new(&cfg.train);
    let peers = match opts.devices {
        1 => None,
        n => Some(data_parallel::Peers::<B>::start(
            device,
            n,
            opts.on_gpu,
            cfg.train.activation_checkpointing,
        )?),
    };
    let mut state = TrainState::default();
    if opts.resume {
        let (s, m) = checkpoint::load(&last_ckpt, model, Some(&mut optim), device)?;
        state = s;
        model = m;
        // A finished run keeps its summary: resuming it again must not rewrite its numbers
        // with those of a process that trained nothing.
        let finished = std::fs::read_to_string(run.join("summary.json")).ok();
        if let Some(summary) = finished.and_then(|text| serde_json::from_str::<Summary>(&text).ok()) {
            if state.step >= cfg.train.max_steps {
                eprintln!(
                    "{} has finished training (step {} of {}); its summary is kept as it is",
                    run.display(),
                    state.step,
                    cfg.train.max_steps
                );
                return Ok(TrainOutcome { losses: Vec::new(), summary: Some(summary) });
            }
        }
    }
    let counts = cfg.model.param_counts();
    let flops_per_token = cfg.model.train_flops_per_token(t);
    // A fresh start drops the records of an earlier try killed before its first checkpoint.
    let mut log =
        MetricsLog::open(&run.join("metrics.jsonl"), Some(if opts.resume { state.step } else { 0 }))?;

    // A bar on a terminal; on a pipe or log file, one plain line per evaluation instead.
    let interactive = opts.progress && std::io::stderr().is_terminal();
    let bar = progress_bar(interactive, cfg.train.max_steps, state.step);
    let active = if counts.active < counts.total {
        format!(", {} active", human(counts.active as f64))
    } else {
        String::new()
    };
    eprintln!(
        "archlab: {} params ({} non-embedding{active}), {} layers, d_model {}, on {}{}",
        human(counts.total as f64),
        human(counts.non_embedding as f64),
        cfg.model.n_layers,
        cfg.model.d_model,
        opts.device_name,
        if opts.resume { format!(", resuming at step {}", state.step) } else { String::new() }
    );

    // -- loop ------------------------------------------------------------------------------
    let tokens_per_step = (b * t * accum) as u64;
    let mut losses = Vec::new();
    let mut last_eval: Option<ValMetrics> = None;
    let (mut steady_time, mut steady_tokens, mut warmup_time) = (0.0f64, 0u64, 0.0f64);
    let start_step = state.step;
    let elapsed_before = state.elapsed_s;
    let stop = opts.stop_after.unwrap_or(cfg.train.max_steps).min(cfg.train.max_steps);
    let mut step = state.step;
    let mut peak_device_memory = 0u64;
    loop {
        // Evaluate on the fixed validation batches every `eval.every` steps and at the end.
        if step % cfg.eval.every == 0 || step == cfg.train.max_steps {
            let m = evaluate(&model.valid(), &val_batches, token_bytes.as_deref(), device);
            log.write(&Record::Eval {
                step,
                val_loss: m.loss,
                val_ppl: m.ppl,
                val_bpb: m.bpb,
                val_accuracy: m.accuracy,
                tokens: state.tokens_seen,
                elapsed_s: elapsed_before + wall.elapsed().as_secs_f64(),
            })?;
            if state.best_val_loss.is_none_or(|best| m.loss < best) {
                state.best_val_loss = Some(m.loss);
                state.best_step = Some(step);
                checkpoint::save(&run.join("best.ckpt"), &state, &model, None)?;
            }
            if opts.progress && !interactive {
                match m.accuracy {
                    Some(acc) => eprintln!(
                        "step {step:>6} | val loss {:.4} | answer accuracy {:.1}%",
                        m.loss,
                        100.0 * acc
                    ),
                    None => eprintln!(
                        "step {step:>6} | val loss {:.4} | ppl {:.2} | {:.4} bits/byte",
                        m.loss, m.ppl, m.bpb
                    ),
                }
            }
            last_eval = Some(m);
        }
        if step >= stop {
            break;
        }

        // One optimizer step over `grad_accum` micro-batches.
        let t0 = Instant::now();
        // Dropout masks and MoE router jitter draw from the backend's generator. Seeding it
        // from (seed, step) makes each step's draws independent of the steps before it, so a
        // resumed run draws exactly what an uninterrupted one does (burn cannot save the
        // generator's state into the checkpoint). The data order needs no state: batch i is a
        // pure function of (seed, i), and the checkpoint's step says where it is.
        B::seed(device, Rng::fork(cfg.train.seed, &format!("step{step}")).next_u64());
        let lr = schedule::lr(step, &cfg.train);
        let (mut grads, loss, aux_loss, step_routing) = if let Some(peers) = &peers {
            // The same micro-batches as on one device, each split across the peers.
            let micro: Vec<_> = (0..accum).map(|m| batcher.batch((step * accum + m) as u64)).collect();
            let s = peers
                .gradients(&model, &micro, |peer| data_parallel::peer_seed(cfg.train.seed, step, peer))?;
            (s.grads, s.loss, s.aux_loss, s.routing)
        } else {
            let mut accumulator = GradientsAccumulator::<LanguageModel<B>>::new();
            let (mut ce_sum, mut aux_sum) = (None, None);
            let mut micro_routing = Vec::with_capacity(accum);
            for micro in 0..accum {
                let batch = batcher.batch((step * accum + micro) as u64);
                let (x, y) = batch_tensors::<B>(&batch.tokens, device);
                let mask = batch.answer.as_ref().map(|a| mask_tensor::<B>(a, [b, t], device));
                let (ce, aux, routing) = if cfg.train.activation_checkpointing {
                    let seed = Rng::fork(cfg.train.seed, &format!("step{step}/micro{micro}")).next_u64();
                    let o = recompute::backward_recomputed(
                        &model,
                        x,
                        y,
                        mask,
                        recompute::LossScale::mean_of(accum),
                        seed,
                        &mut accumulator,
                    );
                    (o.ce, o.aux, o.routing)
                } else {
                    let o = model.objective_masked(x, y, mask);
                    let grads =
                        GradientsParams::from_grads(o.loss.div_scalar(accum as f64).backward(), &model);
                    accumulator.accumulate(&model, grads);
                    (o.ce, o.aux, o.routing)
                };
                add_detached(&mut ce_sum, ce, accum);
                if let Some(aux) = aux {
                    add_detached(&mut aux_sum, aux, accum);
                }
                micro_routing.push(routing);
            }
            let grads = accumulator.grads();
            let loss: f64 = ce_sum.expect("grad_accum ≥ 1").into_scalar().elem(); // sync point
            let aux_loss: Option<f64> = aux_sum.map(|a| a.into_scalar().elem());
            // Routing decided on the device is read only now, after the sync, so that no MoE
            // layer's forward waited for the host.
            let mut step_routing = Vec::new();
            for routing in &micro_routing {
                let stats: Vec<_> = routing.iter().map(|(layer, r)| (*layer, r.stats())).collect();
                metrics::merge_routing(&mut step_routing, &stats);
            }
            (grads, loss, aux_loss, step_routing)
        };
        let grad_norm = optim::global_grad_norm(&model, &grads);

        // A non-finite loss or gradient would poison the weights and the Adam moments: skip.
        let skipped = !loss.is_finite() || !aux_loss.unwrap_or(0.0).is_finite() || !grad_norm.is_finite();
        if skipped {
            state.nan_skips += 1;
        } else {
            if cfg.train.grad_clip > 0.0 && grad_norm > cfg.train.grad_clip {
                optim::scale_grads(&model, &mut grads, cfg.train.grad_clip / grad_norm);
            }
            model = optim.step(lr, model, grads);
            metrics::merge_routing(&mut state.routing, &step_routing);
        }
        let dt = t0.elapsed().as_secs_f64();
        step += 1;
        state.step = step;
        state.tokens_seen += tokens_per_step;
        if step - start_step > WARMUP_STEPS {
            steady_time += dt;
            steady_tokens += tokens_per_step;
        } else {
            warmup_time += dt;
        }
        losses.push((step - 1, loss));

        if let Some(bytes) = opts.device_memory.and_then(|probe| probe()) {
            peak_device_memory = peak_device_memory.max(bytes);
        }
        if (step - 1) % cfg.train.log_every == 0 || step == stop {
            log.write(&Record::Train {
                step: step - 1,
                loss,
                lr,
                grad_norm,
                tokens_per_s: tokens_per_step as f64 / dt,
                tokens: state.tokens_seen,
                elapsed_s: elapsed_before + wall.elapsed().as_secs_f64(),
                skipped,
                aux_loss,
                diagnostics: diagnostics(&model, &step_routing),
                legacy_moe: Vec::new(),
            })?;
        }
        bar.set_position(step as u64);
        bar.set_message(format!(
            "loss {loss:.3} | {}/s{}",
            human(tokens_per_step as f64 / dt),
            last_eval.map(|m| format!(" | val {:.3}", m.loss)).unwrap_or_default()
        ));
        if cfg.train.checkpoint_every > 0 && step % cfg.train.checkpoint_every == 0 && step < stop {
            state.elapsed_s = elapsed_before + wall.elapsed().as_secs_f64();
            checkpoint::save(&last_ckpt, &state, &model, Some(&optim))?;
        }
    }
    bar.finish_and_clear();
    if let Some(peers) = peers {
        peers.finish()?;
    }
    state.elapsed_s = elapsed_before + wall.elapsed().as_secs_f64();
    checkpoint::save(&last_ckpt, &state, &model, Some(&optim))?;

    if step < cfg.train.max_steps {
        return Ok(TrainOutcome { losses, summary: None });
    }
    let m = last_eval.expect("the final step is always evaluated");
    let steady = if steady_time > 0.0 {
        steady_tokens as f64 / steady_time
    } else {
        // No step of this process was past warm-up (a short run, or one resumed near its end):
        // the run's logged steps say how fast it trained.
        logged_throughput(&read_records(&run.join("metrics.jsonl"))?)
    };
    let summary = Summary {
        final_val_loss: m.loss,
        final_val_ppl: m.ppl,
        final_val_bpb: m.bpb,
        best_val_loss: state.best_val_loss.unwrap_or(m.loss),
        best_step: state.best_step.unwrap_or(step),
        steps: step,
        tokens_seen: state.tokens_seen,
        params_total: counts.total,
        params_non_embedding: counts.non_embedding,
        params_embedding: counts.embedding,
        params_active: counts.active,
        train_flops_per_token: flops_per_token,
        wall_time_s: state.elapsed_s,
        steady_tokens_per_s: steady,
        warmup_time_s: warmup_time,
        peak_memory_bytes: match opts.device_memory {
            Some(_) => peak_device_memory,
            None => metrics::peak_rss_bytes().unwrap_or(0),
        },
        peak_memory_kind: match opts.device_memory {
            Some(_) => "device memory reserved by the allocator (sampled after each step)".into(),
            None => "process peak resident set size (VmHWM)".into(),
        },
        nan_skips: state.nan_skips,
        device: opts.device_name.clone(),
        precision: if bf16 { "bf16".into() } else { "f32".into() },
        diagnostics: diagnostics(&model, &state.routing),
        legacy_hymba: Vec::new(),
        legacy_moe: Vec::new(),
        final_val_accuracy: m.accuracy,
        length_accuracy: match data.task() {
            Some(task) => length_accuracy(&model.valid(), task, &cfg, device),
            None => Vec::new(),
        },
        health: crate::eval::health::probe_layers(&model.valid(), t, device),
        init_from: (!cfg.train.init_from.is_empty()).then(|| cfg.train.init_from.clone()),
    };
    atomic::write_json(&run.join("summary.json"), &summary)?;
    Ok(TrainOutcome { losses, summary: Some(summary) })
}

/// Held-out accuracy of a task at the training length and the longer `data.task` lengths
/// (batches shrink with the length to keep the tokens per forward pass about constant).
pub fn length_accuracy<B: crate::kernels::Backend>(
    model: &LanguageModel<B>,
    task: &crate::data::tasks::Task,
    cfg: &RunConfig,
    device: &B::Device,
) -> Vec<metrics::LengthAccuracy> {
    let (t, b) = (cfg.train.seq_len, cfg.train.batch_size);
    std::iter::once(t)
        .chain(task.cfg.eval_lengths(t))
        .map(|len| {
            let batch = (b * t / len).max(1);
            let batches = task.validation_batches(cfg.data.corpus_seed, batch, len);
            let acc = crate::eval::task_accuracy(model, &batches, device);
            metrics::LengthAccuracy {
                seq_len: len,
                token_accuracy: acc.token_accuracy(),
                sequence_accuracy: acc.sequence_accuracy(),
                chance: Some(task.chance_accuracy()),
                trained: len == t,
            }
        })
        .collect()
}

/// Mean tokens/s of the logged training steps past warm-up (all of them if none is), as total
/// tokens over total time: the harmonic mean of the per-step rates, every step having the same
/// tokens. NaN without a logged step.
fn logged_throughput(records: &[Record]) -> f64 {
    let rates: Vec<(usize, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Train { step, tokens_per_s, skipped: false, .. } if *tokens_per_s > 0.0 => {
                Some((*step, *tokens_per_s))
            }
            _ => None,
        })
        .collect();
    let steady: Vec<f64> = rates.iter().filter(|(s, _)| *s >= WARMUP_STEPS).map(|(_, r)| *r).collect();
    let used = if steady.is_empty() { rates.iter().map(|(_, r)| *r).collect() } else { steady };
    used.len() as f64 / used.iter().map(|r| 1.0 / r).sum::<f64>()
}

/// What every layer's mixers report ([`crate::model::mixer::Diagnostic`]), layer by layer:
/// the sequence mixers' from the weights, the MoE layers' from their routing counts `routing`.
fn diagnostics<B: crate::kernels::Backend>(
    model: &LanguageModel<B>,
    routing: &[(usize, crate::model::moe::RoutingStats)],
) -> Vec<crate::model::mixer::Diagnostic> {
    let mut all = model.diagnostics();
    all.extend(metrics::routing_diagnostics_all(routing));
    all.sort_by_key(|d| d.layer); // stable: a layer's sequence mixer, then its channel mixer
    all
}

/// `sum += x / n`, detached from the graph (for reporting a micro-batched step's loss).
fn add_detached<B: AutodiffBackend>(
    sum: &mut Option<burn::tensor::Tensor<B, 1>>,
    x: burn::tensor::Tensor<B, 1>,
    n: usize,
) {
    let x = x.detach().div_scalar(n as f64);
    *sum = Some(match sum.take() {
        Some(s) => s + x,
        None => x,
    });
}

fn progress_bar(enabled: bool, total: usize, at: usize) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps | {msg} | ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_position(at as u64);
    bar
}

/// 1234567 → "1.23M".
pub fn human(x: f64) -> String {
    let (v, unit) = match x.abs() {
        a if a >= 1e9 => (x / 1e9, "G"),
        a if a >= 1e6 => (x / 1e6, "M"),
        a if a >= 1e3 => (x / 1e3, "k"),
        _ => (x, ""),
    };
    format!("{v:.2}{unit}")
}

/// 1536 MiB → "1.50 GiB", 300 MiB → "300 MiB", 60 000 → "59 KiB"; 0 (unknown) → "n/a".
pub fn human_bytes(b: u64) -> String {
    match b {
        0 => "n/a".into(),
        b if b >= 1 << 30 => format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64),
        // A small model's decoding state: "0 MiB" would say it holds nothing.
        b if b >= 1 << 10 => format!("{:.0} KiB", b as f64 / (1u64 << 10) as f64),
        b => format!("{b} B"),
    }
}

/// The run directory used when none is given: `runs/<preset>-<unix time>-<pid>`, unique
/// among the processes of one machine even when they start in the same second.
pub fn default_run_dir(label: &str) -> PathBuf {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Path::new("runs").join(format!("{label}-{secs}-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn byte_counts_read_in_a_unit_that_shows_them() {
        let cases = [
            (0, "n/a"),
            (512, "512 B"),
            (60_000, "59 KiB"),
            (300 << 20, "300 MiB"),
            (1536 << 20, "1.50 GiB"),
        ];
        for (bytes, text) in cases {
            assert_eq!(super::human_bytes(bytes), text);
        }
    }
}
