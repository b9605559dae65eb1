//! The per-token channel mixer of a dense Transformer: GELU MLP (GPT-2) or SwiGLU (Shazeer
//! 2020, "GLU Variants Improve Transformer"; Llama). Names follow `transformers`' `LlamaMLP`.

use crate::kernels::Backend;
use burn::module::Module;
use burn::tensor::Tensor;

use super::activation::gelu;
use crate::kernels::silu;
use super::layers::Linear;
use super::config::{MlpKind, ModelConfig};
use super::mixer::{ChannelMixing, ChannelSpec, LayerParams};
use super::routing::MoeAux;
use crate::util::checks::must_be_positive;
use crate::rng::Rng;

#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Present for SwiGLU only.
    pub gate_proj: Option<Linear<B>>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
}

impl<B: Backend> Mlp<B> {
    /// An MLP of hidden width `width` (`cfg.d_ff` for the dense MLP, the expert width in an
    /// MoE). `resid_std` initialises `down_proj`, which writes into the residual stream.
    pub fn new(cfg: &ModelConfig, width: usize, resid_std: f64, rng: &mut Rng, device: &B::Device) -> Self {
        let (d, f, std) = (cfg.d_model, width, cfg.init_std);
        Self {
            gate_proj: (cfg.mlp == MlpKind::Swiglu).then(|| Linear::new(d, f, cfg.bias, std, rng, device)),
            up_proj: Linear::new(d, f, cfg.bias, std, rng, device),
            down_proj: Linear::new(f, d, cfg.bias, resid_std, rng, device),
        }
    }

    /// # Shapes
    /// - x: `[..., d]` → `[..., d]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let hidden = match &self.gate_proj {
            Some(gate) => silu(gate.forward(x.clone())) * self.up_proj.forward(x),
            None => gelu(self.up_proj.forward(x)),
        };
        self.down_proj.forward(hidden)
    }

    /// Every expert of an MoE at once, each on its own rows: `x` `[E, rows, d]`, expert i on
    /// `x[i]` → `[E, rows, d]`, one batched matmul per projection.
    ///
    /// # Panics
    /// If `experts` is empty or mixes SwiGLU and GELU experts.
    pub fn forward_stacked(experts: &[Self], x: Tensor<B, 3>) -> Tensor<B, 3> {
        let all = |pick: fn(&Self) -> &Linear<B>| experts.iter().map(pick).collect::<Vec<_>>();
        let up = Linear::forward_stacked(&all(|m| &m.up_proj), x.clone());
        let hidden = match &experts[0].gate_proj {
            Some(_) => {
                let gates = all(|m| m.gate_proj.as_ref().expect("every expert is SwiGLU"));
                silu(Linear::forward_stacked(&gates, x)) * up
            }
            None => gelu(up),
        };
        Linear::forward_stacked(&all(|m| &m.down_proj), hidden)
    }

    pub fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        [&mut self.up_proj, &mut self.down_proj].into_iter().chain(self.gate_proj.as_mut()).collect()
    }
}

/// The parameters of one MLP of hidden width `width`.
pub fn params(cfg: &ModelConfig, width: usize) -> LayerParams {
    let (d, f, bias) = (cfg.d_model, width, usize::from(cfg.bias));
    let (matmul, other) = match cfg.mlp {
        MlpKind::Swiglu => (3 * d * f, bias * (2 * f + d)),
        MlpKind::Gelu => (2 * d * f, bias * (f + d)),
    };
    LayerParams { matmul, other, ..Default::default() }
}

/// The dense MLP's analytic side ([`ChannelSpec`]).
pub struct Spec;

impl ChannelSpec for Spec {
    fn validate(cfg: &ModelConfig) -> anyhow::Result<()> {
        must_be_positive(&[("model.d_ff", cfg.d_ff)])
    }

    fn params(cfg: &ModelConfig) -> LayerParams {
        params(cfg, cfg.d_ff)
    }
}

/// The dense channel mixer: one MLP of width `model.d_ff`.
impl<B: Backend> ChannelMixing<B> for Mlp<B> {
    fn build(cfg: &ModelConfig, resid_std: f64, rng: &mut Rng, device: &B::Device) -> Self {
        Mlp::new(cfg, cfg.d_ff, resid_std, rng, device)
    }

    fn forward(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Option<MoeAux<B>>) {
        (Mlp::forward(self, x), None)
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        Mlp::linears_mut(self)
    }
}
