//! Mixture-of-Experts: grouped and batched dispatch == dense-masked reference (values and
//! gradients, with and without capacity dropping, top-1 and top-2), the auxiliary loss is part
//! of the training objective and trains the router, and the balancing loss evens out a skewed
//! router.
//!
//! Its own test binary, in f64 throughout (see tests/gradients.rs for why f64 and f32 tests
//! must not share a process).

use crate::common::*;
use archlab::config::{FfnKind, MlpKind, ModelConfig, MoeConfig, RunConfig};
use archlab::model::LanguageModel;
use archlab::model::block::{ChannelMixer, FfnSublayer};
use archlab::model::lm::ids_tensor;
use archlab::model::moe::{Dispatch, Moe, RoutingStats};
use archlab::rng::Rng;
use burn::module::Param;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData};

type B = Cpu64Ad;

fn moe_config(top_k: usize, capacity_factor: f64, mlp: MlpKind, shared: bool) -> ModelConfig {
    let mut cfg = RunConfig::resolve("tiny", None, &[]).unwrap().model;
    cfg.d_model = 16;
    cfg.d_ff = 24;
    cfg.mlp = mlp;
    cfg.bias = mlp == MlpKind::Gelu;
    cfg.ffn = FfnKind::Moe;
    cfg.moe = MoeConfig {
        n_experts: 4,
        top_k,
        capacity_factor,
        shared_expert_d_ff: if shared { 8 } else { 0 },
        shared_expert_gate: shared,
        ..MoeConfig::default()
    };
    cfg
}

fn tensor3(values: &[f64], shape: [usize; 3]) -> Tensor<B, 3> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
}

fn normal(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.normal()).collect()
}

fn to_vec<BB: burn::tensor::backend::Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec().unwrap()
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// Output, aux loss, input gradient, parameter gradients and routing counts of one dispatch.
struct Run {
    y: Vec<f64>,
    aux: f64,
    x_grad: Vec<f64>,
    param_grads: Vec<Vec<f64>>,
    stats: RoutingStats,
}

fn run(moe: &Moe<B>, x: &[f64], weight: &[f64], shape: [usize; 3], dispatch: Dispatch) -> Run {
    let x = tensor3(x, shape).require_grad();
    let out = moe.forward_with(x.clone(), dispatch);
    let loss = (out.y.clone() * tensor3(weight, shape)).sum() + out.aux.aux_loss.clone();
    let grads = loss.backward();
    Run {
        y: to_vec(out.y),
        aux: to_vec(out.aux.aux_loss)[0],
        x_grad: to_vec(x.grad(&grads).unwrap()),
        param_grads: param_grads(moe, &grads),
        stats: out.aux.routing.stats(),
    }
}

/// The grouped (gather per expert) and batched (scatter into per-expert slots, one batched
/// matmul) dispatches compute the same function as running every expert on every token and
/// masking: values, the auxiliary loss, the routing counts, and the gradients of the input
/// and of every parameter (router included), for top-1 and top-2, with and without a
/// capacity limit. Capacity 0.5 gives each expert room for half its even share, so tokens are
/// certainly dropped (asserted), and the dropped ones must be dropped identically.
#[test]
fn grouped_and_batched_dispatch_equal_the_dense_masked_reference() {
    let cases = [
        ("top-1 (Switch), gelu", 1, 0.0, MlpKind::Gelu, false),
        ("top-2 renormalised (Mixtral), swiglu", 2, 0.0, MlpKind::Swiglu, false),
        ("top-1, capacity 0.5", 1, 0.5, MlpKind::Gelu, false),
        ("top-2, capacity 0.5, gated shared expert", 2, 0.5, MlpKind::Swiglu, true),
    ];
    let shape = [3, 7, 16];
    let n = shape.iter().product();
    let (x, weight) = (normal(n, 1), normal(n, 2));
    for (case, top_k, capacity, mlp, shared) in cases {
        let cfg = moe_config(top_k, capacity, mlp, shared);
        let moe = Moe::<B>::new(&cfg, 0.02, &mut Rng::new(7), &Default::default());
        let reference = run(&moe, &x, &weight, shape, Dispatch::DenseMasked);
        if capacity > 0.0 {
            assert!(reference.stats.dropped > 0, "{case}: the capacity limit dropped nothing");
        } else {
            assert_eq!(reference.stats.dropped, 0, "{case}");
        }
        for dispatch in [Dispatch::Grouped, Dispatch::Batched] {
            let name = format!("{case}, {dispatch:?}");
            let got = run(&moe, &x, &weight, shape, dispatch);
            let tol = 1e-12;
            let (s, r) = (&got.stats, &reference.stats);
            assert_eq!((s.tokens, &s.routed, s.dropped), (r.tokens, &r.routed, r.dropped), "{name}: routing");
            // The batched dispatch computes the loss terms with tensor ops, not on the host.
            assert!((s.balance_loss_sum - r.balance_loss_sum).abs() < tol, "{name}: balance loss");
            assert!((s.z_loss_sum - r.z_loss_sum).abs() < tol, "{name}: z-loss");
            assert!(max_diff(&got.y, &reference.y) < tol, "{name}: outputs differ");
            assert!((got.aux - reference.aux).abs() < tol, "{name}: aux loss differs");
            assert!(max_diff(&got.x_grad, &reference.x_grad) < tol, "{name}: input gradients differ");
            for (i, (g, r)) in got.param_grads.iter().zip(&reference.param_grads).enumerate() {
                assert!(
                    max_diff(g, r) < tol,
                    "{name}: gradient of parameter {i} differs by {}",
                    max_diff(g, r)
                );
            }
            // The router is trained by both the LM path (gate weights) and the aux loss.
            assert!(got.param_grads[0].iter().any(|g| g.abs() > 1e-9), "{name}: no router gradient");
        }
    }
}

fn router_grads(
    model: &LanguageModel<B>,
    grads: &<B as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> Vec<Vec<f64>> {
    model
        .layers
        .iter()
        .map(|layer| match &layer.ffn {
            Some(FfnSublayer { mixer: ChannelMixer::Moe(moe), .. }) => {
                moe.router.weight.val().grad(grads).map(to_vec).unwrap_or_default()
            }
            _ => panic!("every layer of this model is MoE"),
        })
        .collect()
}

/// The training objective is cross-entropy plus the weighted auxiliary losses, averaged over
/// MoE layers; the auxiliary part alone sends a non-zero gradient to every layer's router; and
/// with zero coefficients the objective is the cross-entropy.
#[test]
fn aux_loss_is_in_the_objective_and_reaches_every_router() {
    let device = Default::default();
    let mut cfg = moe_variants(&variants()[0].1).remove(0).1;
    cfg.moe.balance_coef = 0.3;
    cfg.moe.z_loss_coef = 0.2;
    let (b, t) = (2, 10);
    let x = ids_tensor::<B>(&random_ids(b * t, cfg.vocab_size, 1), [b, t], &device);
    let y = ids_tensor::<B>(&random_ids(b * t, cfg.vocab_size, 2), [b, t], &device);

    let model = LanguageModel::<B>::new(&cfg, 3, false, &device);
    let obj = model.objective(x.clone(), y.clone());
    let (loss, ce) = (to_vec(obj.loss.clone())[0], to_vec(obj.ce.clone())[0]);
    let aux = to_vec(obj.aux.clone().expect("an MoE model has an aux loss"))[0];
    assert!((loss - (ce + aux)).abs() < 1e-12, "objective {loss} != ce {ce} + aux {aux}");
    assert!((ce - to_vec(model.loss(x.clone(), y.clone()))[0]).abs() < 1e-12, "ce is the evaluation loss");
    // The tensor aux loss is the host-side formula (checked against transformers in hf_parity).
    let host: f64 = obj
        .routing_stats()
        .iter()
        .map(|(_, s)| 0.3 * s.mean_balance_loss() + 0.2 * s.mean_z_loss())
        .sum::<f64>()
        / obj.routing.len() as f64;
    assert!((aux - host).abs() < 1e-12, "aux {aux} vs host formula {host}");
    assert_eq!(obj.routing.len(), cfg.n_layers);

    let grads = obj.aux.unwrap().backward();
    for (layer, g) in router_grads(&model, &grads).iter().enumerate() {
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(norm > 1e-6, "layer {layer}: the aux loss sends no gradient to the router ({norm})");
    }

    cfg.moe.balance_coef = 0.0;
    cfg.moe.z_loss_coef = 0.0;
    let model = LanguageModel::<B>::new(&cfg, 3, false, &device);
    let obj = model.objective(x, y);
    assert_eq!(to_vec(obj.aux.unwrap())[0], 0.0);
    assert_eq!(to_vec(obj.loss)[0], to_vec(obj.ce)[0]);
}

/// A toy regression where the router starts out sending nearly every token to expert 0 (the
/// inputs share an offset the router is aligned with). Trained on the task alone, the skew
/// stays; with the balancing loss, the load evens out. Measured on the last 20 steps.
fn toy_load(balance_coef: f64) -> RoutingStats {
    let device = Default::default();
    let mut cfg = moe_config(1, 0.0, MlpKind::Gelu, false);
    cfg.moe.balance_coef = balance_coef;
    cfg.moe.z_loss_coef = 0.0;
    let d = cfg.d_model;
    let mut moe = Moe::<B>::new(&cfg, 0.02, &mut Rng::new(5), &device);
    let offset: Vec<f64> = normal(d, 9).iter().map(|v| v.signum() * 0.75).collect();
    // Router column 0 aligned with the offset: expert 0 wins for most tokens.
    let mut w = to_vec(moe.router.weight.val());
    for i in 0..d {
        w[i * 4] += 0.5 * offset[i];
    }
    moe.router.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [d, 4]), &device));
    let target_map =
        Tensor::<B, 2>::from_data(TensorData::new(normal(d * d, 10), [d, d]), &device) / (d as f64).sqrt();

    let mut optim = AdamConfig::new().init();
    let mut load = RoutingStats::default();
    let steps = 150;
    for step in 0..steps {
        let mut x = normal(64 * d, 100 + step as u64);
        for (i, v) in x.iter_mut().enumerate() {
            *v += offset[i % d];
        }
        let x = tensor3(&x, [1, 64, d]);
        let target = x.clone().matmul(target_map.clone().unsqueeze()).tanh();
        let out = moe.forward(x);
        let loss = (out.y - target).powf_scalar(2.0).mean() + out.aux.aux_loss;
        if step >= steps - 20 {
            load.merge(&out.aux.routing.stats());
        }
        let grads = GradientsParams::from_grads(loss.backward(), &moe);
        moe = optim.step(1e-2, moe, grads);
    }
    load
}

#[test]
fn balancing_loss_evens_out_a_skewed_router() {
    let without = toy_load(0.0);
    let with = toy_load(0.1);
    let max_share = |s: &RoutingStats| s.load().into_iter().fold(0.0, f64::max);
    eprintln!(
        "without balancing: load {:?}, evenness {:.3}; with: load {:?}, evenness {:.3}",
        without.load(),
        without.load_entropy(),
        with.load(),
        with.load_entropy()
    );
    assert!(max_share(&without) > 0.6, "the toy should start skewed and stay so: {:?}", without.load());
    assert!(max_share(&with) < 0.4, "the balancing loss did not even the load: {:?}", with.load());
    assert!(with.load_entropy() > without.load_entropy() + 0.3);
}

/// Capacity is filled token by token (all k choices of a token before the next), so while
/// training with drops, what a token's sequence position sees still depends only on earlier
/// positions (GShard's order, all first choices before any second choice, would let later
/// tokens decide whether an earlier token keeps its second expert).
#[test]
fn capacity_dropping_keeps_the_model_causal() {
    let device = Default::default();
    let mut cfg = moe_variants(&variants()[0].1).remove(0).1;
    cfg.moe.capacity_factor = 0.5;
    let model = LanguageModel::<B>::new(&cfg, 4, false, &device);
    let (t, v) = (16, cfg.vocab_size);
    let forward = |ids: &[u32]| to_vec(model.forward(ids_tensor::<B>(ids, [1, t], &device)));
    let probe = random_ids(t, v, 0);
    let obj =
        model.objective(ids_tensor::<B>(&probe, [1, t], &device), ids_tensor::<B>(&probe, [1, t], &device));
    assert!(obj.routing_stats().iter().any(|(_, s)| s.dropped > 0), "capacity 0.5 must drop tokens");
    for (pos, seed) in (1..t).flat_map(|p| (0..2).map(move |s| (p, s))) {
        let ids = random_ids(t, v, (pos * 10 + seed) as u64);
        let mut changed = ids.clone();
        changed[pos] = (changed[pos] + 1) % v as u32;
        let (a, b) = (forward(&ids), forward(&changed));
        assert_eq!(a[..pos * v], b[..pos * v], "outputs before position {pos} changed");
    }
}

/// Router jitter is training-only noise: with autodiff on, two forward passes route with
/// different noise (different router losses); the inference module is deterministic and
/// jitter-free (equal to a jitter-free twin).
#[test]
fn jitter_perturbs_training_routing_only() {
    use burn::module::AutodiffModule;
    let mut cfg = moe_config(2, 0.0, MlpKind::Swiglu, false);
    cfg.moe.jitter = 0.2;
    let noisy = Moe::<B>::new(&cfg, 0.02, &mut Rng::new(7), &Default::default());
    cfg.moe.jitter = 0.0;
    let clean = Moe::<B>::new(&cfg, 0.02, &mut Rng::new(7), &Default::default());
    let shape = [2, 5, 16];
    let x = normal(shape.iter().product(), 3);
    let aux = |m: &Moe<B>| to_vec(m.forward(tensor3(&x, shape)).aux.aux_loss)[0];
    assert_ne!(aux(&noisy), aux(&noisy), "jitter should make training passes differ");
    assert_eq!(aux(&clean), aux(&clean));
    let x_inner = Tensor::from_data(TensorData::new(x.clone(), shape), &Default::default());
    let inference = to_vec(noisy.valid().forward(x_inner.clone()).y);
    assert_eq!(inference, to_vec(clean.valid().forward(x_inner).y));
}
