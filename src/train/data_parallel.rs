//! Data parallel: one model trained on N devices ("peers") of one backend, with burn's own
//! collective all-reduce (`burn-collective`).
//!
//! Each optimizer step, every micro-batch is split row-wise into N equal shards. Peer i runs
//! the forward and backward of its shard on a replica of the model (the weights forked onto
//! its device as fresh autodiff leaves), with its loss weighted by its share of the
//! micro-batch's scored tokens: the sum over the peers is then the loss of the whole
//! micro-batch, with or without an answer mask, and so is the sum of their gradients, which
//! the all-reduce forms. One optimizer steps the model on the first device with that sum; the
//! replicas take the new weights at the next step. So the run follows the one-device run with
//! the same global batch, up to the order of floating-point additions (the tests bound it).
//!
//! Statistics of the whole batch: the loss is the weighted sum of the peers' losses, and the
//! NaN skip and clipping decide on the reduced gradients, once, for every peer. Mixture-of-
//! Experts models are refused for now: their balancing loss needs the router's load over the
//! whole batch inside the forward pass, which would take an all-reduce in the MoE layer.
//!
//! On the CPU the peers share the cores (one device, N replicas: what the tests run); on CUDA
//! peer i is GPU i.

use std::sync::Mutex;

use anyhow::{Result, anyhow, bail};
use burn::collective::{self, CollectiveConfig, PeerId, ReduceOperation};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::ElementConversion;
use burn::tensor::backend::{Device, DeviceOps};

use crate::config::RunConfig;
use crate::data::batcher::TokenBatch;
use crate::data::stream::Batch;
use crate::kernels::AutodiffBackend;
use crate::model::LanguageModel;
use crate::model::lm::{batch_tensors, mask_tensor};
use crate::rng::Rng;

/// burn's collective keeps one set of peers per backend per process: one data-parallel run
/// at a time in a process (a second waits).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Refuses, before any work, what data parallel cannot train exactly (or at all) yet.
/// `on_gpu`: the devices are GPUs (each peer its own); on the CPU the peers share one device.
pub fn check(cfg: &RunConfig, devices: usize, on_gpu: bool) -> Result<()> {
    let b = cfg.train.batch_size;
    if devices == 0 {
        bail!("--devices 0: give the number of devices to train on, 1 or more");
    }
    if devices == 1 {
        return Ok(());
    }
    if b % devices != 0 {
        bail!(
            "train.batch_size = {b} does not split across {devices} devices: choose a batch size divisible \
             by {devices} (each device takes {} rows of every micro-batch)",
            b.div_ceil(devices)
        );
    }
    if cfg.model.layers()?.iter().any(|l| l.ffn == crate::model::registry::FfnKind::Moe) {
        bail!(
            "data parallel does not train Mixture-of-Experts models yet: their balancing loss needs the \
             router's load over the whole batch; train them on one device (--devices 1)"
        );
    }
    if cfg.train.activation_checkpointing {
        bail!(
            "data parallel and train.activation_checkpointing do not go together yet; turn one off \
             (--set train.activation_checkpointing=false)"
        );
    }
    if !on_gpu && cfg.model.dropout > 0.0 {
        bail!(
            "model.dropout = {} with --devices {devices} on the CPU: the peers would draw their masks \
             from one shared generator in no fixed order, so the run would not be reproducible; use \
             dropout 0 or one device",
            cfg.model.dropout
        );
    }
    Ok(())
}

/// N registered peers.
pub struct Peers<B: AutodiffBackend> {
    devices: Vec<B::Device>,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl<B: AutodiffBackend> Peers<B> {
    /// Registers `n` peers: on a GPU, `device` and the next n − 1 devices of its kind; on the
    /// CPU, `device` n times.
    pub fn start(device: &B::Device, n: usize, on_gpu: bool) -> Result<Self> {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let devices: Vec<B::Device> = (0..n)
            .map(|i| match on_gpu {
                true => {
                    let mut id = device.id();
                    id.index_id += i as u16;
                    B::Device::from_id(id)
                }
                false => device.clone(),
            })
            .collect();
        collective::reset_collective::<B::InnerBackend>();
        let config = CollectiveConfig::default().with_num_devices(n);
        // Registering waits for every peer: one thread each.
        std::thread::scope(|s| {
            let handles: Vec<_> = devices
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let (d, config) = (d.inner().clone(), config.clone());
                    s.spawn(move || collective::register::<B::InnerBackend>(PeerId::from(i), d, config))
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| anyhow!("a data-parallel peer panicked while registering"))?.map_err(
                    |e| anyhow!("cannot register the data-parallel peers with burn's collective: {e:?}"),
                )?;
            }
            Ok::<(), anyhow::Error>(())
        })?;
        Ok(Self { devices, _turn: turn })
    }

    /// The gradients of one optimizer step over `micro` (its micro-batches) and its loss (the
    /// mean cross-entropy of the whole step, as one device computes it). `seed` seeds each
    /// peer's generator (dropout on GPUs) per peer.
    pub fn gradients(
        &self,
        model: &LanguageModel<B>,
        micro: &[Batch],
        seed: impl Fn(usize) -> u64 + Sync,
    ) -> Result<(GradientsParams, f64)> {
        let n = self.devices.len();
        let accum = micro.len() as f64;
        let results: Vec<Result<(GradientsParams, f64)>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .devices
                .iter()
                .enumerate()
                .map(|(i, device)| {
                    let replica = model.clone().fork(device);
                    let seed = &seed;
                    s.spawn(move || -> Result<(GradientsParams, f64)> {
                        B::seed(device, seed(i));
                        let mut acc = GradientsAccumulator::<LanguageModel<B>>::new();
                        let mut loss = 0.0;
                        for batch in micro {
                            let (shard, weight) = shard(batch, i, n);
                            let (x, y) = batch_tensors::<B>(&shard.tokens, device);
                            let mask = shard.answer.as_ref().map(|a| {
                                mask_tensor::<B>(a, [shard.tokens.batch, shard.tokens.seq_len], device)
                            });
                            let o = replica.objective_masked(x, y, mask);
                            let scale = weight / accum;
                            let grads =
                                GradientsParams::from_grads(o.loss.mul_scalar(scale).backward(), &replica);
                            acc.accumulate(&replica, grads);
                            let ce: f64 = o.ce.into_scalar().elem();
                            loss += scale * ce;
                        }
                        let grads = acc
                            .grads()
                            .all_reduce::<B::InnerBackend>(PeerId::from(i), ReduceOperation::Sum)
                            .map_err(|e| anyhow!("the gradients' all-reduce failed on peer {i}: {e:?}"))?;
                        Ok((grads, loss))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a data-parallel peer panicked"))))
                .collect()
        });
        let mut total = 0.0;
        let mut first = None;
        for (i, r) in results.into_iter().enumerate() {
            let (grads, loss) = r?;
            total += loss;
            if i == 0 {
                first = Some(grads);
            }
        }
        // Every peer holds the same sum; the first's lives on the model's device.
        Ok((first.expect("at least one peer"), total))
    }

    /// Leaves the collective (every peer, each from a thread: leaving waits for all).
    pub fn finish(self) -> Result<()> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..self.devices.len())
                .map(|i| s.spawn(move || collective::finish_collective::<B::InnerBackend>(PeerId::from(i))))
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow!("a data-parallel peer panicked while leaving"))?
                    .map_err(|e| anyhow!("leaving burn's collective failed: {e:?}"))?;
            }
            Ok(())
        })
    }
}

/// Peer `i`'s rows of `batch` (of `n` equal shares), and its share of the batch's scored
/// tokens (every target without an answer mask, the answers with one).
fn shard(batch: &Batch, i: usize, n: usize) -> (Batch, f64) {
    let TokenBatch { batch: b, seq_len: t, .. } = batch.tokens;
    let rows = b / n;
    let span = i * rows * t..(i + 1) * rows * t;
    let scored = |mask: &[bool]| mask.iter().filter(|&&a| a).count();
    let weight = match &batch.answer {
        Some(a) => match scored(a) {
            0 => 0.0,
            all => scored(&a[span.clone()]) as f64 / all as f64,
        },
        None => 1.0 / n as f64,
    };
    let tokens = TokenBatch {
        batch: rows,
        seq_len: t,
        inputs: batch.tokens.inputs[span.clone()].to_vec(),
        targets: batch.tokens.targets[span.clone()].to_vec(),
    };
    (Batch { tokens, answer: batch.answer.as_ref().map(|a| a[span].to_vec()) }, weight)
}

/// The seed of peer `peer`'s generator at `step`.
pub fn peer_seed(seed: u64, step: usize, peer: usize) -> u64 {
    Rng::fork(seed, &format!("step{step}/peer{peer}")).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lm::masked_cross_entropy;
    use burn::tensor::{Distribution, Int, Tensor, TensorData};

    type B = crate::device::CpuBackend;

    /// The peers' losses, each weighted by its share of the scored tokens, add up to the loss
    /// of the whole batch, also when the peers score different numbers of tokens.
    #[test]
    fn weighted_shard_losses_add_up_to_the_whole_batch() {
        let device = Default::default();
        let (b, t, v, n) = (4, 6, 7, 2);
        let inputs: Vec<u32> = (0..b * t).map(|i| (i % v) as u32).collect();
        let targets: Vec<u32> = (0..b * t).map(|i| ((i * 5 + 3) % v) as u32).collect();
        // Rows 0-1 (peer 0) score 2 tokens, rows 2-3 (peer 1) score 7.
        let mut answer = vec![false; b * t];
        for i in [1, 8, 12, 13, 15, 17, 19, 20, 23] {
            answer[i] = true;
        }
        let batch =
            Batch { tokens: TokenBatch { batch: b, seq_len: t, inputs, targets }, answer: Some(answer) };
        let logits = Tensor::<B, 3>::random([b, t, v], Distribution::Normal(0.0, 2.0), &device);
        let ce = |logits: Tensor<B, 3>, batch: &Batch| -> f64 {
            let [rows, t, _] = logits.dims();
            let ids: Vec<i64> = batch.tokens.targets.iter().map(|&x| x as i64).collect();
            let y = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows, t]), &device);
            let mask = mask_tensor::<B>(batch.answer.as_ref().unwrap(), [rows, t], &device);
            masked_cross_entropy(logits, y, mask).into_scalar().elem()
        };
        let whole = ce(logits.clone(), &batch);
        let mut weights = 0.0;
        let mut sum = 0.0;
        for i in 0..n {
            let (part, w) = shard(&batch, i, n);
            let rows = b / n;
            sum += w * ce(logits.clone().slice([i * rows..(i + 1) * rows]), &part);
            weights += w;
        }
        let w0 = shard(&batch, 0, n).1;
        assert!((w0 - 2.0 / 9.0).abs() < 1e-12, "{w0}");
        assert!((weights - 1.0).abs() < 1e-12);
        assert!((sum - whole).abs() <= 1e-6 * whole.abs(), "{sum} vs {whole}");
    }
}
