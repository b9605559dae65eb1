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
//! Statistics of the whole batch are reduced too. The loss is the weighted sum of the peers'
//! losses; the NaN skip and clipping decide on the reduced gradients, once. A Mixture-of-Experts
//! layer's balancing loss (Switch: E · Σₑ fₑ · Pₑ) needs fₑ, the fraction of the whole batch's
//! tokens routed to expert e, inside the forward pass: each MoE layer of a peer averages its
//! shard's fractions over the peers ([`mean_over_peers`], a small all-reduce of E values),
//! and each peer's auxiliary loss is weighted by its share of the batch's tokens, so the sum
//! over the peers is the whole batch's balancing and z-losses. The router's counts for the
//! metrics are summed over the peers.
//!
//! On the CPU the peers share the cores (one device, N replicas: what the tests run); on CUDA
//! peer i is GPU i.

use std::marker::PhantomData;
use std::sync::Mutex;

use anyhow::{Result, anyhow, bail};
use burn::collective::{self, CollectiveConfig, PeerId, ReduceOperation};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{Device, DeviceOps};
use burn::tensor::{ElementConversion, Tensor, TensorPrimitive};

use crate::config::RunConfig;
use crate::data::batcher::TokenBatch;
use crate::data::stream::Batch;
use crate::kernels::AutodiffBackend;
use crate::model::LanguageModel;
use crate::model::lm::{batch_tensors, mask_tensor};
use crate::model::routing::RoutingStats;
use crate::rng::Rng;
use crate::train::recompute::{self, LossScale};

/// burn's collective keeps one set of peers per backend per process: one data-parallel run
/// at a time in a process (a second waits).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A peer's all-reduce of a few host values (the model's layers are generic over any backend
/// and cannot name the training one's inner backend; this closure does).
type Reducer = Box<dyn Fn(Vec<f32>) -> Vec<f32>>;

thread_local! {
    /// Set in a peer's thread while it runs its share of a step.
    static PEER: std::cell::RefCell<Option<Reducer>> = const { std::cell::RefCell::new(None) };
}

/// Whether this thread runs a peer's share of a data-parallel step.
pub fn in_peer() -> bool {
    PEER.with_borrow(Option::is_some)
}

/// The mean over the peers of a statistic of each peer's shard (`values`, as many on every
/// peer, e.g. the fraction of tokens routed to each expert) when called within a peer's share
/// of a data-parallel step; `values` unchanged otherwise (one device, evaluation). Every peer
/// must make the same calls in the same order: the model's layers do, in layer order.
pub fn mean_over_peers(values: Vec<f32>) -> Vec<f32> {
    PEER.with_borrow(|reducer| match reducer {
        Some(reduce) => reduce(values),
        None => values,
    })
}

/// Peer `peer`'s reducer: the values as a tensor on its device, averaged by burn's all-reduce.
fn reducer<B: AutodiffBackend>(peer: usize, device: &B::Device) -> Reducer {
    let device = device.inner().clone();
    Box::new(move |values: Vec<f32>| {
        let t = Tensor::<B::InnerBackend, 1>::from_floats(values.as_slice(), &device);
        let reduced = collective::all_reduce::<B::InnerBackend>(
            PeerId::from(peer),
            t.into_primitive().tensor(),
            ReduceOperation::Mean,
        )
        .unwrap_or_else(|e| panic!("peer {peer}: the all-reduce of a batch statistic failed: {e:?}"));
        let t = Tensor::<B::InnerBackend, 1>::from_primitive(TensorPrimitive::Float(reduced));
        t.into_data().convert::<f32>().into_vec().expect("f32 values")
    })
}

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
    let moe = cfg.model.layers()?.iter().any(|l| l.ffn == crate::model::registry::FfnKind::Moe);
    if moe && cfg.model.moe.capacity_factor > 0.0 {
        bail!(
            "model.moe.capacity_factor = {} with --devices {devices}: which tokens an expert drops depends on \
             the whole batch's order, so the peers' shards would drop others than one device does; data \
             parallel trains dropless MoE (capacity_factor = 0)",
            cfg.model.moe.capacity_factor
        );
    }
    if moe && !on_gpu && cfg.model.moe.jitter > 0.0 {
        bail!(
            "model.moe.jitter = {} with --devices {devices} on the CPU: the peers would draw their noise from \
             one shared generator in no fixed order, so the run would not be reproducible; use jitter 0 or \
             one device",
            cfg.model.moe.jitter
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
    /// Activation checkpointing (`train.activation_checkpointing`): each block recomputed.
    recompute: bool,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl<B: AutodiffBackend> Peers<B> {
    /// Registers `n` peers: on a GPU, `device` and the next n − 1 devices of its kind; on the
    /// CPU, `device` n times.
    pub fn start(device: &B::Device, n: usize, on_gpu: bool, recompute: bool) -> Result<Self> {
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
        Ok(Self { devices, recompute, _turn: turn })
    }

    /// The gradients of one optimizer step over `micro` (its micro-batches), with the step's
    /// loss, auxiliary loss and routing as one device computes them. `seed` seeds each peer's
    /// generator (dropout and router jitter on GPUs).
    pub fn gradients(
        &self,
        model: &LanguageModel<B>,
        micro: &[Batch],
        seed: impl Fn(usize) -> u64 + Sync,
    ) -> Result<Step> {
        let n = self.devices.len();
        let results: Vec<Result<Step>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .devices
                .iter()
                .enumerate()
                .map(|(i, device)| {
                    let replica = model.clone().fork(device);
                    let seed = &seed;
                    let recompute = self.recompute;
                    s.spawn(move || {
                        PEER.set(Some(reducer::<B>(i, device)));
                        let seed = seed(i);
                        B::seed(device, seed);
                        peer_step(&replica, micro, (i, n), device, recompute, seed)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a data-parallel peer panicked"))))
                .collect()
        });
        let mut total: Option<Step> = None;
        for r in results {
            let peer = r?;
            total = Some(match total {
                // Every peer holds the same gradient sum; the first's lives on the model's device.
                None => peer,
                Some(mut t) => {
                    t.unreached.retain(|id| peer.unreached.contains(id));
                    t.loss += peer.loss;
                    t.aux_loss = t.aux_loss.zip(peer.aux_loss).map(|(a, b)| a + b);
                    crate::train::metrics::merge_routing(&mut t.routing, &peer.routing);
                    t
                }
            });
        }
        let mut step = total.expect("at least one peer");
        if !step.unreached.is_empty() {
            let ids = std::mem::take(&mut step.unreached);
            model.visit(&mut RemoveUnreached::<B> { grads: &mut step.grads, ids, backend: PhantomData });
        }
        Ok(step)
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

/// One optimizer step's gradients (summed over the peers) and its statistics.
pub struct Step {
    pub grads: GradientsParams,
    /// The mean cross-entropy of the step's tokens.
    pub loss: f64,
    /// The auxiliary (MoE) loss; `None` without MoE layers.
    pub aux_loss: Option<f64>,
    /// Each MoE layer's routing over the whole step, `(layer, stats)`.
    pub routing: Vec<(usize, RoutingStats)>,
    /// The parameters without a gradient (on the peers: their own shard's; summed: no peer's).
    unreached: Vec<ParamId>,
}

/// Peer `i`'s share of a step: its shard of every micro-batch, forward and backward (each block
/// recomputed with `recompute`, its generator seeded from `seed` per micro-batch), its loss
/// weighted (the cross-entropy by its share of the scored tokens, the auxiliary loss by its
/// share of all tokens), then the all-reduce of the gradients.
fn peer_step<B: AutodiffBackend>(
    replica: &LanguageModel<B>,
    micro: &[Batch],
    (i, n): (usize, usize),
    device: &B::Device,
    recompute: bool,
    seed: u64,
) -> Result<Step> {
    let accum = micro.len() as f64;
    let mut acc = GradientsAccumulator::<LanguageModel<B>>::new();
    let (mut loss, mut aux_loss) = (0.0, None::<f64>);
    let mut routing = Vec::new();
    for (m, batch) in micro.iter().enumerate() {
        let (shard, weight) = shard(batch, i, n);
        let (x, y) = batch_tensors::<B>(&shard.tokens, device);
        let mask = shard
            .answer
            .as_ref()
            .map(|a| mask_tensor::<B>(a, [shard.tokens.batch, shard.tokens.seq_len], device));
        let scale = LossScale { accum: micro.len(), ce_weight: weight, aux_weight: 1.0 / n as f64 };
        let (ce, aux, layer_routing) = if recompute {
            let seed = Rng::fork(seed, &format!("micro{m}")).next_u64();
            let o = recompute::backward_recomputed(replica, x, y, mask, scale, seed, &mut acc);
            (o.ce, o.aux, o.routing)
        } else {
            let o = replica.objective_masked(x, y, mask);
            let mut objective = scale.ce(o.ce.clone());
            if let Some(aux) = &o.aux {
                objective = objective + scale.aux(aux.clone(), 1);
            }
            acc.accumulate(replica, GradientsParams::from_grads(objective.backward(), replica));
            (o.ce, o.aux, o.routing)
        };
        let ce: f64 = ce.into_scalar().elem();
        loss += weight / accum * ce;
        if let Some(aux) = aux {
            let aux: f64 = aux.into_scalar().elem();
            *aux_loss.get_or_insert(0.0) += aux / (n as f64 * accum);
        }
        let stats: Vec<_> = layer_routing.iter().map(|(layer, r)| (*layer, r.stats())).collect();
        crate::train::metrics::merge_routing(&mut routing, &stats);
    }
    // A parameter this shard did not reach (an expert no token of it chose) has no gradient
    // here but may have one on another peer: the all-reduce needs the same parameters on every
    // peer, so it gets zeros, and the ones no peer reached are removed again afterwards.
    let mut grads = acc.grads();
    let mut fill = FillMissing::<B> { grads: &mut grads, filled: Vec::new(), backend: PhantomData };
    replica.visit(&mut fill);
    let unreached = fill.filled;
    let grads = grads
        .all_reduce::<B::InnerBackend>(PeerId::from(i), ReduceOperation::Sum)
        .map_err(|e| anyhow!("the gradients' all-reduce failed on peer {i}: {e:?}"))?;
    Ok(Step { grads, loss, aux_loss, routing, unreached })
}

/// Registers a zero gradient for every trainable parameter that has none; records which.
struct FillMissing<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    filled: Vec<ParamId>,
    backend: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for FillMissing<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if value.is_require_grad() && self.grads.get::<B::InnerBackend, D>(param.id).is_none() {
            self.grads.register::<B::InnerBackend, D>(param.id, value.inner().zeros_like());
            self.filled.push(param.id);
        }
    }
}

/// Removes the gradients of `ids` (parameters no peer reached: as on one device, they get
/// none, and the optimizer leaves them and their moments alone).
struct RemoveUnreached<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    ids: Vec<ParamId>,
    backend: PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for RemoveUnreached<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.ids.contains(&param.id) {
            self.grads.remove::<B::InnerBackend, D>(param.id);
        }
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
