//! Activation checkpointing (`train.activation_checkpointing`): the recomputed backward pass
//! gives the gradients of the stored-activation one, for every layer kind of the registry,
//! and training with it follows the same losses.

use crate::common::*;
use archlab::config::ModelConfig;
use archlab::model::LanguageModel;
use archlab::model::lm::ids_tensor;
use archlab::train::recompute::{LossScale, backward_recomputed};
use archlab::train::train;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{ElementConversion, Tensor};

type Inner = <CpuAd as burn::tensor::backend::AutodiffBackend>::InnerBackend;

/// The largest difference between two gradient sets, per parameter relative to that
/// parameter's largest stored gradient: `(worst ratio, parameter index)`.
struct Compare<'a> {
    stored: &'a GradientsParams,
    recomputed: &'a GradientsParams,
    index: usize,
    worst: (f64, usize),
    missing: Vec<usize>,
}

impl ModuleVisitor<CpuAd> for Compare<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<CpuAd, D>>) {
        let values = |g: &GradientsParams| {
            g.get::<Inner, D>(param.id).map(|t| t.into_data().convert::<f64>().into_vec::<f64>().unwrap())
        };
        match (values(self.stored), values(self.recomputed)) {
            (Some(a), Some(b)) => {
                let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs())).max(1e-30);
                let diff = a.iter().zip(&b).fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
                if diff / scale > self.worst.0 {
                    self.worst = (diff / scale, self.index);
                }
            }
            (None, None) => {}
            _ => self.missing.push(self.index),
        }
        self.index += 1;
    }
}

/// `(stored, recomputed)` gradients and losses of one batch, averaged as over `accum`
/// micro-batches.
fn both_ways(cfg: &ModelConfig, accum: usize) -> (GradientsParams, GradientsParams, f64, f64) {
    let device = Default::default();
    let model = LanguageModel::<CpuAd>::new(cfg, 11, false, &device);
    let (b, t) = (2, 13);
    let ids = ids_tensor::<CpuAd>(&random_ids(b * t, cfg.vocab_size, 1), [b, t], &device);
    let targets = ids_tensor::<CpuAd>(&random_ids(b * t, cfg.vocab_size, 2), [b, t], &device);

    let objective = model.objective_masked(ids.clone(), targets.clone(), None);
    let stored_loss: f64 = objective.ce.clone().into_scalar().elem();
    let stored = GradientsParams::from_grads(objective.loss.div_scalar(accum as f64).backward(), &model);

    let mut acc = GradientsAccumulator::new();
    let recomputed = backward_recomputed(&model, ids, targets, None, LossScale::mean_of(accum), 5, &mut acc);
    let recomputed_loss: f64 = recomputed.ce.into_scalar().elem();
    (stored, acc.grads(), stored_loss, recomputed_loss)
}

/// Both passes run the same operations on the same inputs; they differ only in the order in
/// which gradient contributions are added (a tied embedding gets the head's and the input's
/// in two backward passes; an MoE layer's auxiliary loss is weighted in its own segment). In
/// f32 that moves a gradient by a few ulps of its largest element: 1e-5 of it is the bound.
/// A dropped or doubled contribution misses by the size of that contribution.
#[test]
fn recomputed_gradients_equal_stored_ones_for_every_layer_kind() {
    for (name, cfg) in variants() {
        let (stored, recomputed, stored_loss, recomputed_loss) = both_ways(&cfg, 2);
        assert_eq!(stored_loss, recomputed_loss, "{name}: the loss differs");
        let model = LanguageModel::<CpuAd>::new(&cfg, 11, false, &Default::default());
        let mut cmp = Compare {
            stored: &stored,
            recomputed: &recomputed,
            index: 0,
            worst: (0.0, 0),
            missing: Vec::new(),
        };
        model.visit(&mut cmp);
        assert!(cmp.missing.is_empty(), "{name}: parameters {:?} have a gradient one way only", cmp.missing);
        let (ratio, index) = cmp.worst;
        assert!(ratio <= 1e-5, "{name}: parameter {index} differs by {ratio:.2e} of its largest gradient");
    }
}

/// Training with recomputation follows the stored-activation run: the same losses within
/// float tolerance, over steps with gradient accumulation, for a dense and a hybrid model.
#[test]
fn training_with_activation_checkpointing_follows_the_same_losses() {
    for pattern in ["", "GSeA"] {
        let mut cfg = small_config();
        cfg.train.max_steps = 6;
        cfg.train.batch_size = 4;
        cfg.train.grad_accum = 2;
        if !pattern.is_empty() {
            cfg.model = with_pattern(cfg.model.clone(), pattern);
            cfg.model.moe.n_experts = 4;
            cfg.model.moe.top_k = 2;
            cfg.model.moe.expert_d_ff = 32;
        }
        let run = |name: &str, on: bool| {
            let mut cfg = cfg.clone();
            cfg.train.activation_checkpointing = on;
            train::<CpuAd>(&cfg, &Default::default(), &train_options(name)).unwrap().losses
        };
        let stored = run(&format!("recompute-off{pattern}"), false);
        let recomputed = run(&format!("recompute-on{pattern}"), true);
        assert_eq!(stored.len(), recomputed.len());
        for ((s, a), (_, b)) in stored.iter().zip(&recomputed) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs(),
                "pattern {pattern:?} step {s}: stored {a} vs recomputed {b}"
            );
        }
    }
}

/// With dropout and MoE router jitter, both forward passes of a block must draw the same
/// masks and noise. Oracle: one ordinary tracked pass that seeds the generator per segment as
/// the recompute does, differentiated once. Its own process: the generator is global.
#[test]
fn recomputed_gradients_keep_dropout_masks_and_router_jitter() {
    if !in_own_process("recompute::recomputed_gradients_keep_dropout_masks_and_router_jitter") {
        return;
    }
    use archlab::model::block::Residual;
    use archlab::model::lm::objective_ce;
    use archlab::train::recompute::seed_segment;

    let (_, mut cfg) = variants().into_iter().find(|(name, _)| name.starts_with("pattern LMeSnHA")).unwrap();
    cfg.dropout = 0.3;
    cfg.moe.jitter = 0.2;
    cfg.hymba.meta_tokens = 2;
    let device = Default::default();
    let model = LanguageModel::<CpuAd>::new(&cfg, 11, false, &device);
    let (b, t) = (2, 13);
    let ids = ids_tensor::<CpuAd>(&random_ids(b * t, cfg.vocab_size, 1), [b, t], &device);
    let targets = ids_tensor::<CpuAd>(&random_ids(b * t, cfg.vocab_size, 2), [b, t], &device);
    let n = model.layers.len();

    let reference = |seed: u64| {
        seed_segment::<CpuAd>(&device, seed, n + 1);
        let (x, m) = model.with_meta_tokens(model.embed(ids.clone(), 0), true);
        let mut h = Residual::new(x);
        let mut aux = Vec::new();
        for (i, layer) in model.layers.iter().enumerate() {
            seed_segment::<CpuAd>(&device, seed, i);
            let (next, a) = layer.forward_residual(h);
            h = next;
            aux.extend(a.map(|a| a.aux_loss));
        }
        seed_segment::<CpuAd>(&device, seed, n);
        let ce = objective_ce(model.head_logits(h.narrow(m, t)), targets.clone(), None);
        let loss = ce + Tensor::cat(aux, 0).mean();
        GradientsParams::from_grads(loss.backward(), &model)
    };
    let recomputed = |seed: u64| {
        let mut acc = GradientsAccumulator::new();
        backward_recomputed(
            &model,
            ids.clone(),
            targets.clone(),
            None,
            LossScale::mean_of(1),
            seed,
            &mut acc,
        );
        acc.grads()
    };
    let worst = |a: &GradientsParams, b: &GradientsParams| {
        let mut cmp = Compare { stored: a, recomputed: b, index: 0, worst: (0.0, 0), missing: Vec::new() };
        model.visit(&mut cmp);
        assert!(cmp.missing.is_empty(), "parameters {:?} have a gradient one way only", cmp.missing);
        cmp.worst.0
    };
    let (expected, got) = (reference(5), recomputed(5));
    let diff = worst(&expected, &got);
    assert!(diff <= 1e-5, "recomputed gradients differ from the oracle's by {diff:.2e}");
    // The masks matter: another seed's gradients are far from these, so the agreement above
    // is the masks' and not dropout's absence.
    let other = worst(&expected, &recomputed(6));
    assert!(other > 1e-2, "another seed's dropout masks changed the gradients by only {other:.2e}");
}
