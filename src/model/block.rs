//! One layer: a pre-norm residual block with a pluggable sequence mixer and channel mixer.
//!
//! ```text
//! x = x + dropout(seq_mixer(norm_1(x)))      mixes across time  (causal, [b,t,d] → [b,t,d])
//! x = x + dropout(ffn(norm_2(x)))            mixes across channels, token by token (optional)
//! ```
//!
//! (mamba_ssm's `Block(mixer_cls, mlp_cls)`, zoology's sequence/state mixers.) The block knows
//! nothing about what its mixers do, nor which there are: both kinds of mixer and their
//! dispatch come from the table in `mixer.rs`.
//!
//! Between sublayers the stream travels as a [`Residual`]: the sum so far and the last
//! branch's output, which the next norm adds in the same kernel that normalises it (mamba_ssm's
//! blocks pass `(hidden_states, residual)` for the same reason). The arithmetic is the one
//! above, add for add.

use crate::kernels::Backend;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::Tensor;

use super::config::ModelConfig;
use super::layers::Norm;
pub use super::mixer::{ChannelMixer, LayerState, SeqMixer};
use super::moe::MoeAux;
use super::registry::FfnKind;
use crate::rng::Rng;

/// The residual stream between sublayers: `sum`, the embeddings plus every branch output
/// added so far, and `pending`, the newest branch output, not yet added. The stream's value is
/// `sum + pending`; the next norm forms it ([`Residual::add_norm`]).
#[derive(Clone, Debug)]
pub struct Residual<B: Backend> {
    pub sum: Tensor<B, 3>,
    pub pending: Option<Tensor<B, 3>>,
}

impl<B: Backend> Residual<B> {
    /// The stream at its start (the embedded tokens), nothing pending.
    pub fn new(x: Tensor<B, 3>) -> Self {
        Self { sum: x, pending: None }
    }

    /// The stream's value as one tensor.
    pub fn resolve(self) -> Tensor<B, 3> {
        match self.pending {
            Some(branch) => self.sum + branch,
            None => self.sum,
        }
    }

    /// Adds the pending branch and applies `norm`: `(the stream's value, its norm)`, one
    /// kernel for RMSNorm where the backend has it.
    pub fn add_norm(self, norm: &Norm<B>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        match self.pending {
            Some(branch) => norm.forward_add(self.sum, branch),
            None => (self.sum.clone(), norm.forward(self.sum)),
        }
    }

    /// Positions `start..start + len` of the sequence axis.
    pub fn narrow(self, start: usize, len: usize) -> Self {
        Self { sum: self.sum.narrow(1, start, len), pending: self.pending.map(|p| p.narrow(1, start, len)) }
    }

    /// The stream after a sublayer: `sum` (its value so far) and the sublayer's output.
    fn with_branch(sum: Tensor<B, 3>, branch: Tensor<B, 3>) -> Self {
        Self { sum, pending: Some(branch) }
    }
}

#[derive(Module, Debug)]
pub struct FfnSublayer<B: Backend> {
    pub norm: Norm<B>,
    pub mixer: ChannelMixer<B>,
}

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub norm: Norm<B>,
    pub mixer: SeqMixer<B>,
    pub ffn: Option<FfnSublayer<B>>,
    pub dropout: Dropout,
}

impl<B: Backend> Block<B> {
    /// Layer `layer` of the model `cfg` describes (its kind from `cfg.layers()`): its sequence
    /// mixer, then its channel mixer (if any). Each mixer draws its weights from its own named
    /// stream of `seed`.
    pub fn new(cfg: &ModelConfig, layer: usize, seed: u64, device: &B::Device) -> Self {
        let layers = cfg.layers().expect("a validated config");
        let kind = layers[layer];
        // GPT-2: "scale the weights of residual layers at initialization by 1/sqrt(N)", N being
        // the number of residual branches (one per mixer); mamba_ssm does the same for out_proj.
        let branches: usize = layers.iter().map(|l| if l.ffn == FfnKind::None { 1 } else { 2 }).sum();
        let resid_scale = 1.0 / (branches as f64).sqrt();
        let resid_std = cfg.init_std * resid_scale;
        let mut rng = Rng::fork(seed, &format!("init/layer{layer}/{}", kind.mixer.name()));
        let mixer = SeqMixer::new(cfg, kind.mixer, resid_scale, &mut rng, device);
        let mut ffn_rng = Rng::fork(seed, &format!("init/layer{layer}/{}", kind.ffn.name()));
        let ffn = ChannelMixer::new(cfg, kind.ffn, resid_std, &mut ffn_rng, device).map(|mixer| {
            FfnSublayer { norm: Norm::new(cfg.norm, cfg.d_model, cfg.bias, cfg.norm_eps, device), mixer }
        });
        Self {
            norm: Norm::new(cfg.norm, cfg.d_model, cfg.bias, cfg.norm_eps, device),
            mixer,
            ffn,
            dropout: DropoutConfig::new(cfg.dropout).init(),
        }
    }

    /// # Shapes
    /// - x: `[b, t, d]` → `[b, t, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_residual(Residual::new(x)).0.resolve()
    }

    /// The layer on the residual stream, also returning an MoE channel mixer's auxiliary loss
    /// and counts.
    pub fn forward_residual(&self, x: Residual<B>) -> (Residual<B>, Option<MoeAux<B>>) {
        let (sum, h) = x.add_norm(&self.norm);
        let branch = self.dropout.forward(self.mixer.forward(h));
        self.forward_ffn(Residual::with_branch(sum, branch))
    }

    /// The same layer on new tokens, with decoding state.
    pub fn forward_step(&self, x: Residual<B>, state: &mut LayerState<B>) -> Residual<B> {
        let (sum, h) = x.add_norm(&self.norm);
        let branch = self.mixer.forward_step(h, state);
        self.forward_ffn(Residual::with_branch(sum, branch)).0
    }

    fn forward_ffn(&self, x: Residual<B>) -> (Residual<B>, Option<MoeAux<B>>) {
        match &self.ffn {
            Some(ffn) => {
                let (sum, h) = x.add_norm(&ffn.norm);
                let (y, aux) = ffn.mixer.forward(h);
                (Residual::with_branch(sum, self.dropout.forward(y)), aux)
            }
            None => (x, None),
        }
    }
}
