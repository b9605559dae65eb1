//! The bf16 path (bf16 matmuls, fp32 master weights and optimizer state), checked on the CPU
//! through the Flex backend (archlab's CPU backend), which supports bf16 (NdArray does not).

use archlab::config::{Precision, RunConfig};
use archlab::kernels::Backend;
use archlab::model::LanguageModel;
use archlab::model::lm::ids_tensor;
use archlab::rng::Rng;
use archlab::train::optim::Optimizers;
use archlab::train::use_bf16;
use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{DType, Tensor};

type F = Autodiff<Flex<f32>>;

fn small_model_config() -> archlab::config::ModelConfig {
    let mut m = RunConfig::resolve("tiny", None, &[]).unwrap().model;
    m.vocab_size = 64;
    m.d_model = 64;
    m.n_layers = 2;
    m.n_heads = 4;
    m.d_ff = 128;
    m.max_seq_len = 32;
    m
}

fn values(t: Tensor<F, 3>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

#[test]
fn bf16_logits_stay_close_to_f32_and_differ_from_them() {
    let device = Default::default();
    let cfg = small_model_config();
    let mut rng = Rng::new(0);
    let ids: Vec<u32> = (0..2 * 16).map(|_| rng.below(64) as u32).collect();
    let x = ids_tensor::<F>(&ids, [2, 16], &device);
    let f32_logits = values(LanguageModel::<F>::new(&cfg, 1, false, &device).forward(x.clone()));
    let bf16_logits = values(LanguageModel::<F>::new(&cfg, 1, true, &device).forward(x));
    let diff: f64 =
        f32_logits.iter().zip(&bf16_logits).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = f32_logits.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    let rel = diff / norm;
    // bf16 operands with fp32 accumulation: ‖Δ‖/‖ref‖ between 1e-4 and 1e-2 (8-bit mantissa).
    assert!(rel < 1e-2, "bf16 logits too far from f32: {rel:e}");
    assert!(rel > 1e-5, "bf16 logits equal the f32 ones ({rel:e}): the casts are not happening");
}

/// Float parameter dtypes, in visiting order.
struct Dtypes(Vec<DType>);

impl<B: Backend> ModuleVisitor<B> for Dtypes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.val().dtype());
    }
}

#[test]
fn bf16_training_keeps_fp32_master_weights_and_learns() {
    let device = Default::default();
    let cfg = small_model_config();
    let mut model = LanguageModel::<F>::new(&cfg, 1, true, &device);
    let mut train = RunConfig::resolve("tiny", None, &[]).unwrap().train;
    train.weight_decay = 0.0;
    let mut optim = Optimizers::<F>::new(&train);
    let mut rng = Rng::new(1);
    let ids: Vec<u32> = (0..4 * 17).map(|_| rng.below(64) as u32).collect();
    let (inp, tgt): (Vec<u32>, Vec<u32>) = (0..4)
        .flat_map(|r| (0..16).map(move |i| (r * 17 + i, r * 17 + i + 1)))
        .map(|(a, b)| (ids[a], ids[b]))
        .unzip();
    let (x, y) = (ids_tensor::<F>(&inp, [4, 16], &device), ids_tensor::<F>(&tgt, [4, 16], &device));
    let mut losses = Vec::new();
    for _ in 0..30 {
        let loss = model.loss(x.clone(), y.clone());
        losses.push(loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(3e-3, model, grads);
    }
    let mut dtypes = Dtypes(Vec::new());
    model.visit(&mut dtypes);
    assert!(dtypes.0.iter().all(|d| *d == DType::F32), "master weights must stay fp32: {:?}", dtypes.0);
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(losses[29] < 0.5 * losses[0], "bf16 training should fit one batch: {losses:?}");
}

#[test]
fn precision_resolution() {
    let device = Default::default();
    assert!(use_bf16::<Flex<f32>>(Precision::Bf16, &device, false).unwrap());
    assert!(!use_bf16::<Flex<f32>>(Precision::Auto, &device, false).unwrap(), "auto is fp32 on the CPU");
    assert!(use_bf16::<Flex<f32>>(Precision::Auto, &device, true).unwrap());
    assert!(!use_bf16::<Flex<f32>>(Precision::F32, &device, true).unwrap());
    // A backend without bf16 (NdArray) refuses it with a clear error.
    let err =
        use_bf16::<burn::backend::NdArray<f32>>(Precision::Bf16, &Default::default(), false).unwrap_err();
    assert!(err.to_string().contains("bf16 is not supported"), "{err}");
}
