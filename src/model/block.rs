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
//!
//! Between sublayers the stream travels as a [`Residual`]: the sum so far and the last
//! branch's output, which the next norm adds in the same kernel that normalises it (mamba_ssm's
//! blocks pass `(hidden_states, residual)` for the same reason). The arithmetic is the one
//! above, add for add.

use crate::kernels::Backend;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::Tensor;

use super::attention::{Attention, KvCache};
use super::gated_deltanet::{DeltaNetState, GatedDeltaNet};
use super::hymba::{Hymba, HymbaState};
use super::layers::{Linear, Norm};
use super::mamba::{Mamba, MambaState};
use super::mamba2::{Mamba2, Mamba2State};
use super::mlp::Mlp;
use super::moe::{Moe, MoeAux};
use crate::config::{FfnKind, MixerKind, ModelConfig};
use crate::rng::Rng;

/// Mixes information across time. Contract: `[b, t, d] → [b, t, d]`, causal.
#[derive(Module, Debug)]
pub enum SeqMixer<B: Backend> {
    /// Global or sliding-window attention (`window`).
    Attention(Attention<B>),
    Mamba(Mamba<B>),
    Mamba2(Mamba2<B>),
    Hymba(Hymba<B>),
    /// Gated DeltaNet, or DeltaNet without its decay gate.
    GatedDeltaNet(GatedDeltaNet<B>),
}

/// Mixes information across channels, token by token. Contract: `[b, t, d] → [b, t, d]`.
#[derive(Module, Debug)]
pub enum ChannelMixer<B: Backend> {
    Mlp(Mlp<B>),
    Moe(Moe<B>),
}

/// What a sequence mixer remembers between decoding steps.
#[derive(Clone, Debug)]
pub enum LayerState<B: Backend> {
    Attention(KvCache<B>),
    Mamba(MambaState<B>),
    Mamba2(Mamba2State<B>),
    Hymba(HymbaState<B>),
    DeltaNet(DeltaNetState<B>),
}

impl<B: Backend> LayerState<B> {
    /// Bytes the state holds now: what `describe`'s decoding-state columns predict per sequence
    /// (`ModelConfig::layer_counts`), and what tests hold them to.
    pub fn bytes(&self) -> usize {
        fn size<B: Backend, const D: usize>(t: &Option<Tensor<B, D>>) -> usize {
            t.as_ref().map_or(0, |t| t.shape().num_elements() * t.dtype().size())
        }
        match self {
            LayerState::Attention(c) => size(&c.k) + size(&c.v),
            LayerState::Mamba(s) => size(&s.conv) + size(&s.ssm),
            LayerState::Mamba2(s) => size(&s.conv) + size(&s.ssm),
            LayerState::Hymba(s) => size(&s.kv.k) + size(&s.kv.v) + size(&s.ssm.conv) + size(&s.ssm.ssm),
            LayerState::DeltaNet(s) => size(&s.conv) + size(&s.memory),
        }
    }
}

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

impl<B: Backend> SeqMixer<B> {
    /// Which layer kind of the registry (`config::registry`) this mixer is.
    pub fn kind(&self) -> MixerKind {
        match self {
            SeqMixer::Attention(a) if a.window > 0 => MixerKind::Local,
            SeqMixer::Attention(_) => MixerKind::Attention,
            SeqMixer::Mamba(_) => MixerKind::Mamba,
            SeqMixer::Mamba2(_) => MixerKind::Mamba2,
            SeqMixer::Hymba(_) => MixerKind::Hymba,
            SeqMixer::GatedDeltaNet(m) if m.a_log.is_some() => MixerKind::GatedDeltaNet,
            SeqMixer::GatedDeltaNet(_) => MixerKind::DeltaNet,
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self {
            SeqMixer::Attention(m) => m.forward(x),
            SeqMixer::Mamba(m) => m.forward(x),
            SeqMixer::Mamba2(m) => m.forward(x),
            SeqMixer::Hymba(m) => m.forward(x),
            SeqMixer::GatedDeltaNet(m) => m.forward(x),
        }
    }

    /// Processes new tokens given (and updating) the state left by earlier ones.
    pub fn forward_step(&self, x: Tensor<B, 3>, state: &mut LayerState<B>) -> Tensor<B, 3> {
        match (self, state) {
            (SeqMixer::Attention(m), LayerState::Attention(cache)) => m.forward_cached(x, cache),
            (SeqMixer::Mamba(m), LayerState::Mamba(state)) => m.forward_step(x, state),
            (SeqMixer::Mamba2(m), LayerState::Mamba2(state)) => m.forward_step(x, state),
            (SeqMixer::Hymba(m), LayerState::Hymba(state)) => m.forward_step(x, state),
            (SeqMixer::GatedDeltaNet(m), LayerState::DeltaNet(state)) => m.forward_step(x, state),
            _ => panic!("decoding state does not belong to this layer's mixer"),
        }
    }

    pub fn empty_state(&self) -> LayerState<B> {
        match self {
            SeqMixer::Attention(_) => LayerState::Attention(KvCache::empty()),
            SeqMixer::Mamba(_) => LayerState::Mamba(MambaState::empty()),
            SeqMixer::Mamba2(_) => LayerState::Mamba2(Mamba2State::empty()),
            SeqMixer::Hymba(_) => LayerState::Hymba(HymbaState::empty()),
            SeqMixer::GatedDeltaNet(_) => LayerState::DeltaNet(DeltaNetState::empty()),
        }
    }

    /// Every linear layer, for switching matmul precision.
    pub fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        match self {
            SeqMixer::Attention(a) => vec![&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj],
            SeqMixer::Mamba(m) => m.linears_mut().into_iter().collect(),
            SeqMixer::Mamba2(m) => m.linears_mut().into_iter().collect(),
            SeqMixer::Hymba(m) => m.linears_mut(),
            SeqMixer::GatedDeltaNet(m) => m.linears_mut().into_iter().collect(),
        }
    }
}

impl<B: Backend> ChannelMixer<B> {
    /// The output, and for an MoE its auxiliary loss and routing counts.
    pub fn forward(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Option<MoeAux<B>>) {
        match self {
            ChannelMixer::Mlp(m) => (m.forward(x), None),
            ChannelMixer::Moe(m) => {
                let out = m.forward(x);
                (out.y, Some(out.aux))
            }
        }
    }

    pub fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        match self {
            ChannelMixer::Mlp(m) => m.linears_mut(),
            ChannelMixer::Moe(m) => m.linears_mut(),
        }
    }
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
        let mixer = match kind.mixer {
            MixerKind::Attention => SeqMixer::Attention(Attention::new(cfg, 0, resid_std, &mut rng, device)),
            MixerKind::Local => {
                SeqMixer::Attention(Attention::new(cfg, cfg.window, resid_std, &mut rng, device))
            }
            MixerKind::Mamba => SeqMixer::Mamba(Mamba::new(cfg, resid_scale, &mut rng, device)),
            MixerKind::Mamba2 => SeqMixer::Mamba2(Mamba2::new(cfg, resid_scale, &mut rng, device)),
            MixerKind::Hymba => SeqMixer::Hymba(Hymba::new(cfg, resid_scale, &mut rng, device)),
            MixerKind::GatedDeltaNet => {
                SeqMixer::GatedDeltaNet(GatedDeltaNet::new(cfg, true, resid_scale, &mut rng, device))
            }
            MixerKind::DeltaNet => {
                SeqMixer::GatedDeltaNet(GatedDeltaNet::new(cfg, false, resid_scale, &mut rng, device))
            }
        };
        let mut ffn_rng = Rng::fork(seed, &format!("init/layer{layer}/{}", kind.ffn.name()));
        let ffn_mixer = match kind.ffn {
            FfnKind::Mlp => Some(ChannelMixer::Mlp(Mlp::new(cfg, cfg.d_ff, resid_std, &mut ffn_rng, device))),
            FfnKind::Moe => Some(ChannelMixer::Moe(Moe::new(cfg, resid_std, &mut ffn_rng, device))),
            FfnKind::None => None,
        };
        let ffn = ffn_mixer.map(|mixer| FfnSublayer {
            norm: Norm::new(cfg.norm, cfg.d_model, cfg.bias, cfg.norm_eps, device),
            mixer,
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
