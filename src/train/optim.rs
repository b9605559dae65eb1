//! AdamW with parameter groups, global-norm clipping and the gradient plumbing around it.
//!
//! burn's AdamW applies one weight decay to every parameter and its clipping is per tensor.
//! The usual LM recipe (nanoGPT `configure_optimizers`, Llama) decays only matrices that
//! multiply activations, and clips the norm of *all* gradients together. So: two AdamW
//! instances (decay / no decay) that each step only the parameters whose gradients they are
//! handed, and a global-norm clip done here.

use crate::kernels::AutodiffBackend;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{ElementConversion, Tensor};

use crate::config::TrainConfig;
use crate::model::LanguageModel;

type Adam<B> = OptimizerAdaptor<AdamW, LanguageModel<B>, B>;

/// The two AdamW groups.
pub struct Optimizers<B: AutodiffBackend> {
    pub decay: Adam<B>,
    pub no_decay: Adam<B>,
}

impl<B: AutodiffBackend> Optimizers<B> {
    pub fn new(cfg: &TrainConfig) -> Self {
        let adamw = |wd: f64| {
            AdamWConfig::new()
                .with_beta_1(cfg.beta1 as f32)
                .with_beta_2(cfg.beta2 as f32)
                .with_epsilon(cfg.adam_eps as f32)
                .with_weight_decay(wd as f32)
                .init::<B, LanguageModel<B>>()
        };
        Self { decay: adamw(cfg.weight_decay), no_decay: adamw(0.0) }
    }

    /// One update of every parameter that has a gradient.
    pub fn step(&mut self, lr: f64, model: LanguageModel<B>, mut grads: GradientsParams) -> LanguageModel<B> {
        // The groups are found from the model itself at every step (a cheap walk over a few
        // dozen tensors), so they stay right after a checkpoint restores the parameter ids.
        let mut split = SplitGrads { path: Vec::new(), from: &mut grads, no_decay: GradientsParams::new() };
        model.visit(&mut split);
        let no_decay = split.no_decay;
        let model = self.decay.step(lr, model, grads);
        self.no_decay.step(lr, model, no_decay)
    }
}

/// Moves the gradients of parameters that get no weight decay (vectors such as norm gains and
/// biases, embedding tables, and the SSM's A_log and D) out of `from` into `no_decay`.
struct SplitGrads<'a> {
    path: Vec<String>,
    from: &'a mut GradientsParams,
    no_decay: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SplitGrads<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        // SSM parameters that set time scales are not decayed either (`mamba_ssm` marks them
        // `_no_weight_decay`): decay would pull A_log towards 0 (A → −1) and D towards 0.
        let ssm_dynamics = ["a_log", "d_skip", "dt_bias"];
        let no_decay = D == 1
            || self.path.iter().any(|p| p.starts_with("embed_") || p == "meta_tokens")
            || self.path.last().is_some_and(|p| ssm_dynamics.contains(&p.as_str()));
        if no_decay && let Some(g) = self.from.remove::<B::InnerBackend, D>(param.id) {
            self.no_decay.register::<B::InnerBackend, D>(param.id, g);
        }
    }
}

/// L2 norm of all gradients together (one device → host read).
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, grads: &GradientsParams) -> f64 {
    struct SumSquares<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        total: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for SumSquares<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let s = g.powf_scalar(2.0).sum();
                self.total = Some(match self.total.take() {
                    Some(t) => t + s,
                    None => s,
                });
            }
        }
    }
    let mut v = SumSquares::<B> { grads, total: None };
    model.visit(&mut v);
    v.total.map_or(0.0, |t| t.into_scalar().elem::<f64>().sqrt())
}

/// Multiplies every gradient by `factor`.
pub fn scale_grads<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    grads: &mut GradientsParams,
    factor: f64,
) {
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                self.grads.register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    model.visit(&mut Scale { grads, factor });
}
