//! One layer: a pre-norm residual block with a pluggable sequence mixer and channel mixer.
//!
//! ```text
//! x = x + dropout(seq_mixer(norm_1(x)))      mixes across time  (causal, [b,t,d] → [b,t,d])
//! x = x + dropout(ffn(norm_2(x)))            mixes across channels, token by token (optional)
//! ```
//!
//! (mamba_ssm's `Block(mixer_cls, mlp_cls)`, zoology's sequence/state mixers.) The block knows
//! nothing about what its mixers do. Adding a mixer means one file, one variant of
//! [`SeqMixer`] (and of [`LayerState`] if it carries decoding state), and its tests.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::attention::{Attention, KvCache};
use super::layers::Norm;
use super::mlp::Mlp;
use crate::config::ModelConfig;
use crate::rng::Rng;

/// Mixes information across time. Contract: `[b, t, d] → [b, t, d]`, causal.
#[derive(Module, Debug)]
pub enum SeqMixer<B: Backend> {
    Attention(Attention<B>),
}

/// Mixes information across channels, token by token. Contract: `[b, t, d] → [b, t, d]`.
#[derive(Module, Debug)]
pub enum ChannelMixer<B: Backend> {
    Mlp(Mlp<B>),
}

/// What a sequence mixer remembers between decoding steps.
#[derive(Clone, Debug)]
pub enum LayerState<B: Backend> {
    Attention(KvCache<B>),
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

impl<B: Backend> SeqMixer<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            SeqMixer::Attention(m) => m.forward(x),
        }
    }

    /// Processes new tokens given (and updating) the state left by earlier ones.
    pub fn forward_step(&self, x: Tensor<B, 3>, state: &mut LayerState<B>) -> Tensor<B, 3> {
        match (self, state) {
            (SeqMixer::Attention(m), LayerState::Attention(cache)) => m.forward_cached(x, cache),
        }
    }

    pub fn empty_state(&self) -> LayerState<B> {
        match self {
            SeqMixer::Attention(_) => LayerState::Attention(KvCache::empty()),
        }
    }
}

impl<B: Backend> ChannelMixer<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            ChannelMixer::Mlp(m) => m.forward(x),
        }
    }
}

impl<B: Backend> Block<B> {
    /// A dense Transformer layer: attention, then an MLP.
    pub fn transformer(cfg: &ModelConfig, layer: usize, seed: u64, device: &B::Device) -> Self {
        // GPT-2: "scale the weights of residual layers at initialization by 1/sqrt(N)", N being
        // the number of residual layers (two per block).
        let resid_std = cfg.init_std / (2.0 * cfg.n_layers as f64).sqrt();
        let mut rng = Rng::fork(seed, &format!("init/layer{layer}/attention"));
        let attention = Attention::new(cfg, resid_std, &mut rng, device);
        let mut rng = Rng::fork(seed, &format!("init/layer{layer}/mlp"));
        let mlp = Mlp::new(cfg, resid_std, &mut rng, device);
        Self {
            norm: Norm::new(cfg.norm, cfg.d_model, cfg.bias, cfg.norm_eps, device),
            mixer: SeqMixer::Attention(attention),
            ffn: Some(FfnSublayer {
                norm: Norm::new(cfg.norm, cfg.d_model, cfg.bias, cfg.norm_eps, device),
                mixer: ChannelMixer::Mlp(mlp),
            }),
            dropout: DropoutConfig::new(cfg.dropout).init(),
        }
    }

    /// # Shapes
    /// - x: `[b, t, d]` → `[b, t, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = x.clone() + self.dropout.forward(self.mixer.forward(self.norm.forward(x)));
        self.forward_ffn(x)
    }

    /// The same layer on new tokens, with decoding state.
    pub fn forward_step(&self, x: Tensor<B, 3>, state: &mut LayerState<B>) -> Tensor<B, 3> {
        let x = x.clone() + self.mixer.forward_step(self.norm.forward(x), state);
        self.forward_ffn(x)
    }

    fn forward_ffn(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.ffn {
            Some(ffn) => x.clone() + self.dropout.forward(ffn.mixer.forward(ffn.norm.forward(x))),
            None => x,
        }
    }
}
