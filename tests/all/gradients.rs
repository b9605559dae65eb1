//! Gradients against finite differences, in f64.
//!
//! This file is its own test binary on purpose: burn keeps a default float dtype per *device*,
//! and NdArray<f32> and NdArray<f64> share one device, so f64 checks must not run in a
//! process whose other tests create f32 tensors.

use crate::common::*;
use archlab::kernels::Backend;
use archlab::model::LanguageModel;
use archlab::model::attention::Attention;
use archlab::model::lm::ids_tensor;
use archlab::rng::Rng;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

// -- gradient check ------------------------------------------------------------------------

/// Adds `delta` to element `index` of the `target`-th float parameter.
struct Nudge {
    target: usize,
    index: usize,
    delta: f64,
    seen: usize,
}

impl<B: Backend> ModuleMapper<B> for Nudge {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = if self.seen == self.target {
            let shape = tensor.shape();
            let device = tensor.device();
            let mut values = tensor.into_data().convert::<f64>().into_vec::<f64>().unwrap();
            values[self.index] += self.delta;
            Tensor::from_data(TensorData::new(values, shape), &device)
        } else {
            tensor
        };
        self.seen += 1;
        Param::from_mapped_value(id, tensor, mapper)
    }
}

/// Shapes of the float parameters, in visiting order.
struct Shapes(Vec<usize>);

impl<B: Backend> ModuleVisitor<B> for Shapes {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0.push(param.shape().num_elements());
    }
}

/// Central differences in f64 with h = 1e-5 have truncation error O(h²) (relative ≈ 1e-10)
/// and a rounding floor of about ε·|loss|/h ≈ 1e-10 absolute. A gradient passes if it is
/// within 1e-5 relative or 1e-9 absolute of the estimate; a wrong gradient (missing term,
/// wrong factor or sign) misses by orders of magnitude more.
fn close(analytic: f64, numeric: f64) -> bool {
    (analytic - numeric).abs() <= 1e-5 * analytic.abs().max(numeric.abs()) + 1e-9
}

/// Every parameter of the model (attention, MLP, norms, embeddings, head) against finite
/// differences of the loss, for each model variant.
#[test]
fn gradients_match_finite_differences() {
    let device = Default::default();
    for (name, mut cfg) in variants() {
        if cfg.pattern.is_empty() {
            cfg.n_layers = 1;
        }
        let model = LanguageModel::<Cpu64Ad>::new(&cfg, 5, false, &device);
        let (b, t) = (2, 6);
        let ids = random_ids(b * t, cfg.vocab_size, 1);
        let targets = random_ids(b * t, cfg.vocab_size, 2);
        let x = ids_tensor::<Cpu64Ad>(&ids, [b, t], &device);
        let y = ids_tensor::<Cpu64Ad>(&targets, [b, t], &device);
        let loss = model.loss(x.clone(), y.clone());
        let analytic = param_grads(&model, &loss.backward());

        let mut shapes = Shapes(Vec::new());
        model.visit(&mut shapes);
        let eval = |m: LanguageModel<Cpu64Ad>| -> f64 { m.loss(x.clone(), y.clone()).into_scalar() };
        let h = 1e-5;
        let mut rng = Rng::new(11);
        for (p, &n) in shapes.0.iter().enumerate() {
            for _ in 0..3 {
                let i = rng.below(n);
                let plus = eval(model.clone().map(&mut Nudge { target: p, index: i, delta: h, seen: 0 }));
                let minus = eval(model.clone().map(&mut Nudge { target: p, index: i, delta: -h, seen: 0 }));
                let numeric = (plus - minus) / (2.0 * h);
                let a = analytic[p][i];
                assert!(
                    close(a, numeric),
                    "{name}: param {p} element {i}: analytic {a:e} vs numeric {numeric:e}"
                );
            }
        }
    }
}

/// The attention mixer alone, gradient with respect to its input.
#[test]
fn attention_input_gradient_matches_finite_differences() {
    let device = Default::default();
    let cfg = variants().remove(2).1; // GQA, RoPE
    let attn = Attention::<Cpu64Ad>::new(&cfg, 0, 0.02, &mut Rng::new(3), &device);
    let (b, t, d) = (2, 5, cfg.d_model);
    let mut rng = Rng::new(4);
    let xs: Vec<f64> = (0..b * t * d).map(|_| rng.normal()).collect();
    let w: Vec<f64> = (0..b * t * d).map(|_| rng.normal()).collect();
    let weight = Tensor::<Cpu64Ad, 3>::from_data(TensorData::new(w, [b, t, d]), &device);
    let f = |xs: &[f64]| -> Tensor<Cpu64Ad, 1> {
        let x = Tensor::<Cpu64Ad, 3>::from_data(TensorData::new(xs.to_vec(), [b, t, d]), &device);
        (attn.forward(x) * weight.clone()).sum()
    };
    let x = Tensor::<Cpu64Ad, 3>::from_data(TensorData::new(xs.clone(), [b, t, d]), &device).require_grad();
    let out = (attn.forward(x.clone()) * weight.clone()).sum();
    let grad = x.grad(&out.backward()).unwrap().into_data().convert::<f64>().into_vec::<f64>().unwrap();
    let h = 1e-5;
    for i in (0..xs.len()).step_by(7) {
        let (mut p, mut m) = (xs.clone(), xs.clone());
        p[i] += h;
        m[i] -= h;
        let numeric = (f(&p).into_scalar() - f(&m).into_scalar()) / (2.0 * h);
        assert!(close(grad[i], numeric), "input element {i}: analytic {} vs numeric {numeric}", grad[i]);
    }
}
