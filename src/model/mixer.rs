//! The mixers' contracts, and the model's reading of the table of their implementations.
//!
//! A sequence mixer maps `[b, t, d] → [b, t, d]` causally. Everything about one mixer lives in
//! its own file: its module, its decoding state, its share of the precision policy
//! ([`SequenceMixer`]), its config section and its checks, its analytic side (parameters,
//! forward FLOPs per token, decoding-state bytes, and the knob budget matching turns:
//! [`MixerSpec`], implemented on a unit struct `Spec` in the same file), and what it reports
//! about itself ([`Diagnostic`]s). A channel mixer (MLP, mixture of experts) is the same in
//! small: [`ChannelMixing`] on its module, [`ChannelSpec`] on its `Spec`.
//!
//! Mixers join the model through their entries in the table of layer kinds
//! (`crate::registry`), which `layer_mixers!` at the bottom of this file reads: it writes the
//! [`SeqMixer`], [`LayerState`] and [`ChannelMixer`] enums (burn's `Module` derive needs an
//! enum of concrete types) and every match over them, so that `block.rs`, `lm.rs`, `count.rs`,
//! `config.rs` and `compare/sizing.rs` name no mixer.
//!
//! (mamba_ssm builds `Block(mixer_cls, mlp_cls)`; zoology keeps one mixer per file. Here the
//! table plays the role of `mixer_cls` and `mlp_cls`.)

use burn::module::Module;
use burn::tensor::Tensor;

use super::config::ModelConfig;
pub use super::diagnostic::Diagnostic;
use super::layers::Linear;
use super::registry::{FfnKind, MixerKind};
use super::routing::MoeAux;
use crate::kernels::Backend;
use crate::rng::Rng;

/// What a layer asks of its sequence mixer. Implemented in the mixer's own file.
pub trait SequenceMixer<B: Backend>: Module<B> + Sized {
    /// What it remembers between decoding steps (a KV cache, an SSM state, …).
    type State: Clone + std::fmt::Debug;

    /// Layer kind `kind` of the model `cfg` describes; one module may serve several registry
    /// entries (global and local attention, Gated DeltaNet and DeltaNet). `resid_scale`
    /// (1/√branches, GPT-2's residual scaling) scales the projection into the residual stream.
    fn build(cfg: &ModelConfig, kind: MixerKind, resid_scale: f64, rng: &mut Rng, device: &B::Device)
    -> Self;

    /// Which registry entry (`model::registry`) this module is.
    fn kind(&self) -> MixerKind;

    /// The whole sequence, from an empty state.
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3>;

    /// New tokens after those `state` summarises, updating it: prefill when `t > 1`, one
    /// decoding step when `t = 1`.
    fn forward_step(&self, x: Tensor<B, 3>, state: &mut Self::State) -> Tensor<B, 3>;

    fn empty_state(&self) -> Self::State;

    /// The states of several sequences as one batch, their rows in order, so that they decode
    /// together (a server's concurrent generations). The sequences may have seen different
    /// numbers of tokens; each must have been prefilled.
    fn stack_states(states: Vec<Self::State>) -> Self::State;

    /// Rows `rows` of a batched state, in that order: the sequences that go on decoding.
    fn select_states(state: Self::State, rows: &[usize]) -> Self::State;

    /// Bytes `state` holds now (what `describe`'s decoding-state columns predict).
    fn state_bytes(state: &Self::State) -> usize;

    /// Every linear layer (what bf16 matmuls switch).
    fn linears_mut(&mut self) -> Vec<&mut Linear<B>>;

    /// What the mixer reports about itself (layer `layer`): training logs it every step,
    /// `summary.json` keeps the last, and the report shows it, none of them knowing which
    /// mixer it came from. Most mixers report nothing.
    fn diagnostics(&self, _layer: usize) -> Vec<Diagnostic> {
        Vec::new()
    }

    /// The precision policy: switch to bf16 matmuls with fp32 master weights. By default its
    /// linear layers; a mixer with matmuls of its own (Mamba-2's SSD) switches those too, and
    /// keeps in f32 whatever must stay there (every recurrence's decay and state).
    fn use_bf16_matmuls(&mut self) {
        for linear in self.linears_mut() {
            linear.bf16 = true;
        }
    }
}

/// A mixer's analytic side, from the config alone (no model is built): what `describe`,
/// the FLOPs and MFU columns and `compare`'s budget matching read. Implemented on a unit
/// struct `Spec` beside the mixer.
pub trait MixerSpec {
    /// Checks the mixer's own settings (its config section) before any work: an error names
    /// the key and the fix. Called for the mixers the model uses.
    fn validate(_cfg: &ModelConfig, _kind: MixerKind) -> anyhow::Result<()> {
        Ok(())
    }

    /// Its parameters (tests hold them to the built module's).
    fn params(cfg: &ModelConfig, kind: MixerKind) -> LayerParams;

    /// Forward FLOPs per token that are not weight matmuls, at context `seq_len`, as the
    /// implementation computes them (training counts them ×3).
    fn flops(cfg: &ModelConfig, kind: MixerKind, seq_len: usize) -> f64;

    /// Decoding state per sequence in f32: (bytes per token of context, fixed bytes).
    fn state_bytes(cfg: &ModelConfig, kind: MixerKind) -> (usize, usize);

    /// Budget matching scales the model's width (`d_model`) and every width-proportional
    /// size with it; a mixer whose own sizes must then be re-fitted (Mamba-2's head_dim must
    /// divide its inner width) does so here, on `cfg` at the new width, from `base`.
    /// `None`: no valid model at this width.
    fn fit_width(_cfg: &mut ModelConfig, _base: &ModelConfig) -> Option<()> {
        Some(())
    }

    /// The mixer's own sizes as budget matching reports them beside `d_model`, e.g.
    /// "mamba2 head_dim 32"; `None` when `d_model` says it all.
    fn knob(_cfg: &ModelConfig) -> Option<String> {
        None
    }

    /// Every size of its own config section (widths, state sizes, counts), for the guard that
    /// refuses models too large to count ([`ModelConfig::validate`]); the shared sizes
    /// (`d_model`, `d_ff`, the vocabulary, …) are counted already.
    fn sizes(_cfg: &ModelConfig) -> Vec<f64> {
        Vec::new()
    }

    /// The size of its own that sets its decoding state (Mamba's `d_state`, a sliding window),
    /// which `--match state` turns when the width alone cannot reach the budget. `None`: the
    /// state follows the width alone (a global KV cache).
    fn state_knob(_cfg: &ModelConfig, _kind: MixerKind) -> Option<StateKnob> {
        None
    }
}

/// A mixer's own decoding-state size ([`MixerSpec::state_knob`]).
#[derive(Clone, Copy, Debug)]
pub struct StateKnob {
    /// The config key, e.g. `model.mamba.d_state`.
    pub key: &'static str,
    /// Its value in the config it was read from.
    pub value: usize,
    /// The values budget matching may try, inclusive.
    pub range: (usize, usize),
    /// Sets it.
    pub set: fn(&mut ModelConfig, usize),
}

/// What a layer asks of its channel mixer, which mixes across channels token by token:
/// `[b, t, d] → [b, t, d]`. Implemented in the mixer's own file.
pub trait ChannelMixing<B: Backend>: Module<B> + Sized {
    /// The channel mixer of the model `cfg` describes; `resid_std` initialises its projection
    /// into the residual stream.
    fn build(cfg: &ModelConfig, resid_std: f64, rng: &mut Rng, device: &B::Device) -> Self;

    /// The output and, for a routed mixer, its auxiliary loss and routing counts (which the
    /// training loss adds and the diagnostics report).
    fn forward(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Option<MoeAux<B>>);

    /// Every linear layer, for switching matmul precision.
    fn linears_mut(&mut self) -> Vec<&mut Linear<B>>;
}

/// A channel mixer's analytic side, from the config alone; on a unit struct `Spec` beside it.
pub trait ChannelSpec {
    /// Checks its settings before any work: an error names the key and the fix.
    fn validate(_cfg: &ModelConfig) -> anyhow::Result<()> {
        Ok(())
    }

    /// Its parameters (tests hold them to the built module's).
    fn params(cfg: &ModelConfig) -> LayerParams;

    /// Every size of its own config section, as [`MixerSpec::sizes`]; a size that multiplies
    /// the layer (a count of experts) enters as a product with the width it multiplies.
    fn sizes(_cfg: &ModelConfig) -> Vec<f64> {
        Vec::new()
    }
}

/// One layer's parameters: `matmul` (weights multiplying the token stream) and `other`;
/// `idle_*` are the parts of those a token does not use (the MoE experts it is not sent to).
#[derive(Clone, Copy, Debug, Default)]
pub struct LayerParams {
    pub matmul: usize,
    pub other: usize,
    pub idle_matmul: usize,
    pub idle_other: usize,
}

impl LayerParams {
    pub fn add(self, o: LayerParams) -> LayerParams {
        LayerParams {
            matmul: self.matmul + o.matmul,
            other: self.other + o.other,
            idle_matmul: self.idle_matmul + o.idle_matmul,
            idle_other: self.idle_other + o.idle_other,
        }
    }

    pub fn total(self) -> usize {
        self.matmul + self.other
    }
}

/// Bytes of a tensor that may not exist yet (an empty decoding state).
pub fn tensor_bytes<B: Backend, const D: usize>(t: &Option<Tensor<B, D>>) -> usize {
    t.as_ref().map_or(0, |t| t.shape().num_elements() * t.dtype().size())
}

/// The row-wise concatenation of per-sequence state tensors (batch first), which are either all
/// present (prefilled sequences) or all absent (a state the mixer has not filled).
///
/// # Panics
/// If some are present and some absent: stack sequences only after each one's prefill.
pub fn cat_rows<B: Backend, const D: usize>(parts: Vec<Option<Tensor<B, D>>>) -> Option<Tensor<B, D>> {
    let n = parts.len();
    let present: Vec<Tensor<B, D>> = parts.into_iter().flatten().collect();
    match present.len() {
        0 => None,
        k if k == n => Some(Tensor::cat(present, 0)),
        _ => panic!("decoding states stacked before every sequence was prefilled"),
    }
}

/// Rows `rows` of a batch-first state tensor.
pub fn select_rows<B: Backend, const D: usize>(
    t: Option<Tensor<B, D>>,
    rows: &[usize],
) -> Option<Tensor<B, D>> {
    t.map(|t| {
        let device = t.device();
        t.select(0, row_indices::<B>(rows, &device))
    })
}

/// `rows` as an index tensor.
pub fn row_indices<B: Backend>(rows: &[usize], device: &B::Device) -> Tensor<B, 1, burn::tensor::Int> {
    let data: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    Tensor::from_data(burn::tensor::TensorData::new(data, [rows.len()]), device)
}

/// A channel-mixer entry's constructor call, or `None` for an entry without a module.
macro_rules! build_channel_mixer {
    ($variant:ident; $($args:expr),*) => {
        None
    };
    ($variant:ident, $module:ident :: $ty:ident; $($args:expr),*) => {
        Some(ChannelMixer::$variant(<super::$module::$ty<B> as ChannelMixing<B>>::build($($args),*)))
    };
}

/// A channel-mixer entry's [`ChannelSpec`] function `$f`, or `$none` without a module.
macro_rules! channel_spec {
    ($f:ident, $none:expr; $($args:expr),*) => {
        $none
    };
    ($f:ident, $none:expr, $module:ident; $($args:expr),*) => {
        <super::$module::Spec as ChannelSpec>::$f($($args),*)
    };
}

/// Writes the enums over the mixers and every dispatch over them from the table's entries
/// (`Variant => module::Type { the layer kinds it builds }` for sequence mixers,
/// `Kind = symbol, name => module::Type` for channel mixers); the kinds' other fields are
/// `model::registry`'s.
macro_rules! layer_mixers {
    (
        sequence mixers {
            $($variant:ident => $module:ident :: $ty:ident $(, [model . $section:ident] = $scfg:ident)? {
                $($kind:ident = $symbol:literal, $name:literal { $($field:tt)* })+
            })+
        }
        channel mixers {
            $($ckind:ident = $csymbol:literal, $cname:literal $(=> $cmodule:ident :: $cty:ident $(, [model . $csection:ident] = $ccfg:ident)?)? {
                $($cfield:tt)*
            })+
        }
    ) => {
        /// Mixes information across time. Contract: `[b, t, d] → [b, t, d]`, causal.
        #[derive(Module, Debug)]
        pub enum SeqMixer<B: Backend> {
            $($variant(super::$module::$ty<B>),)+
        }

        /// What a sequence mixer remembers between decoding steps.
        #[derive(Clone, Debug)]
        pub enum LayerState<B: Backend> {
            $($variant(<super::$module::$ty<B> as SequenceMixer<B>>::State),)+
        }

        impl<B: Backend> SeqMixer<B> {
            pub fn new(cfg: &ModelConfig, kind: MixerKind, resid_scale: f64, rng: &mut Rng, device: &B::Device) -> Self {
                match kind {
                    $($(MixerKind::$kind)|+ => SeqMixer::$variant(SequenceMixer::build(cfg, kind, resid_scale, rng, device)),)+
                }
            }

            pub fn kind(&self) -> MixerKind {
                match self {
                    $(SeqMixer::$variant(m) => SequenceMixer::kind(m),)+
                }
            }

            pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
                match self {
                    $(SeqMixer::$variant(m) => SequenceMixer::forward(m, x),)+
                }
            }

            /// Processes new tokens given (and updating) the state left by earlier ones.
            pub fn forward_step(&self, x: Tensor<B, 3>, state: &mut LayerState<B>) -> Tensor<B, 3> {
                match (self, state) {
                    $((SeqMixer::$variant(m), LayerState::$variant(s)) => SequenceMixer::forward_step(m, x, s),)+
                    #[allow(unreachable_patterns)]
                    _ => panic!("decoding state does not belong to this layer's mixer"),
                }
            }

            pub fn empty_state(&self) -> LayerState<B> {
                match self {
                    $(SeqMixer::$variant(m) => LayerState::$variant(SequenceMixer::empty_state(m)),)+
                }
            }

            /// Every linear layer, for switching matmul precision.
            pub fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
                match self {
                    $(SeqMixer::$variant(m) => SequenceMixer::linears_mut(m),)+
                }
            }

            /// What the mixer reports about itself ([`SequenceMixer::diagnostics`]).
            pub fn diagnostics(&self, layer: usize) -> Vec<Diagnostic> {
                match self {
                    $(SeqMixer::$variant(m) => SequenceMixer::diagnostics(m, layer),)+
                }
            }

            /// The mixer's precision policy for bf16 matmuls ([`SequenceMixer::use_bf16_matmuls`]).
            pub fn use_bf16_matmuls(&mut self) {
                match self {
                    $(SeqMixer::$variant(m) => SequenceMixer::use_bf16_matmuls(m),)+
                }
            }
        }

        impl<B: Backend> LayerState<B> {
            /// Several sequences' states of this layer as one batch ([`SequenceMixer::stack_states`]).
            ///
            /// # Panics
            /// If `states` is empty or mixes states of different mixers.
            pub fn stack(states: Vec<Self>) -> Self {
                match states.first() {
                    $(Some(LayerState::$variant(_)) => LayerState::$variant(
                        <super::$module::$ty<B> as SequenceMixer<B>>::stack_states(
                            states
                                .into_iter()
                                .map(|s| match s {
                                    LayerState::$variant(s) => s,
                                    #[allow(unreachable_patterns)]
                                    _ => panic!("decoding states of different mixers stacked"),
                                })
                                .collect(),
                        ),
                    ),)+
                    None => panic!("no decoding states to stack"),
                }
            }

            /// Rows `rows` of a batched state ([`SequenceMixer::select_states`]).
            pub fn select(self, rows: &[usize]) -> Self {
                match self {
                    $(LayerState::$variant(s) => LayerState::$variant(
                        <super::$module::$ty<B> as SequenceMixer<B>>::select_states(s, rows),
                    ),)+
                }
            }

            /// Bytes the state holds now: what `describe`'s decoding-state columns predict per
            /// sequence (`ModelConfig::layer_counts`), and what tests hold them to.
            pub fn bytes(&self) -> usize {
                match self {
                    $(LayerState::$variant(s) => <super::$module::$ty<B> as SequenceMixer<B>>::state_bytes(s),)+
                }
            }
        }

        /// Checks a mixer's settings ([`MixerSpec::validate`]).
        pub fn validate(cfg: &ModelConfig, kind: MixerKind) -> anyhow::Result<()> {
            match kind {
                $($(MixerKind::$kind)|+ => <super::$module::Spec as MixerSpec>::validate(cfg, kind),)+
            }
        }

        /// A mixer's parameters ([`MixerSpec::params`]).
        pub fn params(cfg: &ModelConfig, kind: MixerKind) -> LayerParams {
            match kind {
                $($(MixerKind::$kind)|+ => <super::$module::Spec as MixerSpec>::params(cfg, kind),)+
            }
        }

        /// A mixer's non-matmul forward FLOPs per token ([`MixerSpec::flops`]).
        pub fn flops(cfg: &ModelConfig, kind: MixerKind, seq_len: usize) -> f64 {
            match kind {
                $($(MixerKind::$kind)|+ => <super::$module::Spec as MixerSpec>::flops(cfg, kind, seq_len),)+
            }
        }

        /// A mixer's decoding state per sequence ([`MixerSpec::state_bytes`]).
        pub fn state_bytes(cfg: &ModelConfig, kind: MixerKind) -> (usize, usize) {
            match kind {
                $($(MixerKind::$kind)|+ => <super::$module::Spec as MixerSpec>::state_bytes(cfg, kind),)+
            }
        }

        /// Re-fits every mixer `cfg` uses to its new width ([`MixerSpec::fit_width`]).
        pub fn fit_width(cfg: &mut ModelConfig, base: &ModelConfig) -> Option<()> {
            let kinds: Vec<MixerKind> = base.layers().ok()?.iter().map(|l| l.mixer).collect();
            $(
                if kinds.iter().any(|k| matches!(k, $(MixerKind::$kind)|+)) {
                    <super::$module::Spec as MixerSpec>::fit_width(cfg, base)?;
                }
            )+
            Some(())
        }

        /// The state knobs of the mixers `cfg` uses ([`MixerSpec::state_knob`]), one per config
        /// key, in layer order.
        pub fn state_knobs(cfg: &ModelConfig) -> Vec<StateKnob> {
            let mut out: Vec<StateKnob> = Vec::new();
            for kind in cfg.layers().unwrap_or_default().iter().map(|l| l.mixer) {
                let knob = match kind {
                    $($(MixerKind::$kind)|+ => <super::$module::Spec as MixerSpec>::state_knob(cfg, kind),)+
                };
                if let Some(k) = knob.filter(|k| !out.iter().any(|o| o.key == k.key)) {
                    out.push(k);
                }
            }
            out
        }

        /// The knobs of every mixer `cfg` uses ([`MixerSpec::knob`]), in table order.
        pub fn knobs(cfg: &ModelConfig) -> Vec<String> {
            let kinds: Vec<MixerKind> = cfg.layers().map(|l| l.iter().map(|l| l.mixer).collect()).unwrap_or_default();
            let mut out = Vec::new();
            $(
                if kinds.iter().any(|k| matches!(k, $(MixerKind::$kind)|+)) {
                    out.extend(<super::$module::Spec as MixerSpec>::knob(cfg));
                }
            )+
            out
        }

        /// Mixes information across channels, token by token. Contract: `[b, t, d] → [b, t, d]`.
        #[derive(Module, Debug)]
        pub enum ChannelMixer<B: Backend> {
            $($($ckind(super::$cmodule::$cty<B>),)?)+
        }

        impl<B: Backend> ChannelMixer<B> {
            /// The channel mixer `kind`, or none (`FfnKind::None`).
            pub fn new(cfg: &ModelConfig, kind: FfnKind, resid_std: f64, rng: &mut Rng, device: &B::Device) -> Option<Self> {
                match kind {
                    $(FfnKind::$ckind => build_channel_mixer!($ckind $(, $cmodule::$cty)?; cfg, resid_std, rng, device),)+
                }
            }

            /// The output, and for a routed mixer its auxiliary loss and routing counts.
            pub fn forward(&self, x: Tensor<B, 3>) -> (Tensor<B, 3>, Option<MoeAux<B>>) {
                match self {
                    $($(ChannelMixer::$ckind(m) => <super::$cmodule::$cty<B> as ChannelMixing<B>>::forward(m, x),)?)+
                }
            }

            /// Every linear layer, for switching matmul precision.
            pub fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
                match self {
                    $($(ChannelMixer::$ckind(m) => <super::$cmodule::$cty<B> as ChannelMixing<B>>::linears_mut(m),)?)+
                }
            }
        }

        /// Every mixer's own sizes, in use or not ([`MixerSpec::sizes`], [`ChannelSpec::sizes`]).
        pub fn section_sizes(cfg: &ModelConfig) -> Vec<f64> {
            let mut out = Vec::new();
            $(out.extend(<super::$module::Spec as MixerSpec>::sizes(cfg));)+
            $(out.extend(channel_spec!(sizes, Vec::<f64>::new() $(, $cmodule)?; cfg));)+
            out
        }

        /// Checks a channel mixer's settings ([`ChannelSpec::validate`]).
        pub fn validate_channel(cfg: &ModelConfig, kind: FfnKind) -> anyhow::Result<()> {
            match kind {
                $(FfnKind::$ckind => channel_spec!(validate, Ok(()) $(, $cmodule)?; cfg),)+
            }
        }

        /// A channel mixer's parameters ([`ChannelSpec::params`]); none for `FfnKind::None`.
        pub fn channel_params(cfg: &ModelConfig, kind: FfnKind) -> LayerParams {
            match kind {
                $(FfnKind::$ckind => channel_spec!(params, LayerParams::default() $(, $cmodule)?; cfg),)+
            }
        }
    };
}

crate::registry::layer_table!(layer_mixers);
