//! Hymba layer (Dong et al. 2024, "Hymba: A Hybrid-head Architecture for Small Language
//! Models"): attention heads and SSM (Mamba-1) heads read the same input in parallel; each
//! branch's output is RMS-normalised and scaled by a learned per-channel vector, and the two
//! are averaged:
//!
//! ```text
//! y = (β_attn ⊙ norm(attn(x)) + β_ssm ⊙ norm(ssm(x))) / 2
//! ```
//!
//! Each branch keeps its own input and output projections (Hymba fuses the input projections
//! and shares one output projection; the function class is the same up to that
//! factorisation). β starts at `model.hymba.scale_init` for both branches; training logs them
//! against that value, so a "learned ratio" that never moved shows as such. The meta tokens
//! Hymba prepends to every sequence live in the language model (`lm.rs`), not here.

use crate::kernels::Backend;
use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::attention::{Attention, KvCache};
use super::layers::{Linear, param};
use super::mamba::{Mamba, MambaState};
use super::mixer::{Diagnostic, LayerParams, MixerSpec, SequenceMixer, StateKnob};
use super::{attention, mamba};
use super::registry::MixerKind;
use super::config::ModelConfig;
use anyhow::bail;
use serde::{Deserialize, Serialize};
use crate::rng::Rng;

#[derive(Module, Debug)]
pub struct Hymba<B: Backend> {
    pub attn: Attention<B>,
    pub ssm: Mamba<B>,
    /// β_attn, `[d]`.
    pub attn_scale: Param<Tensor<B, 1>>,
    /// β_ssm, `[d]`.
    pub ssm_scale: Param<Tensor<B, 1>>,
    /// The value both scales started from.
    pub scale_init: f64,
    pub eps: f64,
}

/// Hymba layers (see `model::hymba`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HymbaConfig {
    /// Window of the attention branch; 0 means global attention.
    pub window: usize,
    /// Learned tokens prepended to every sequence (Hymba's meta tokens); 0 means none.
    pub meta_tokens: usize,
    /// Initial value of the per-channel branch scales β_attn and β_ssm.
    pub scale_init: f64,
}

impl Default for HymbaConfig {
    fn default() -> Self {
        Self { window: 0, meta_tokens: 0, scale_init: 1.0 }
    }
}

/// Decoding state: the attention branch's KV cache and the SSM branch's state.
#[derive(Clone, Debug)]
pub struct HymbaState<B: Backend> {
    pub kv: KvCache<B>,
    pub ssm: MambaState<B>,
}

impl<B: Backend> HymbaState<B> {
    pub fn empty() -> Self {
        Self { kv: KvCache::empty(), ssm: MambaState::empty() }
    }
}

impl<B: Backend> Hymba<B> {
    pub fn new(cfg: &ModelConfig, resid_scale: f64, rng: &mut Rng, device: &B::Device) -> Self {
        let beta = cfg.hymba.scale_init as f32;
        Self {
            attn: Attention::new(cfg, cfg.hymba.window, cfg.init_std * resid_scale, rng, device),
            ssm: Mamba::new(cfg, resid_scale, rng, device),
            attn_scale: param([cfg.d_model], device, || beta),
            ssm_scale: param([cfg.d_model], device, || beta),
            scale_init: cfg.hymba.scale_init,
            eps: cfg.norm_eps,
        }
    }

    /// # Shapes
    /// - x: `[b, t, d]` → `[b, t, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.mix(self.attn.forward(x.clone()), self.ssm.forward(x))
    }

    pub fn forward_step(&self, x: Tensor<B, 3>, state: &mut HymbaState<B>) -> Tensor<B, 3> {
        self.mix(self.attn.forward_cached(x.clone(), &mut state.kv), self.ssm.forward_step(x, &mut state.ssm))
    }

    fn mix(&self, attn: Tensor<B, 3>, ssm: Tensor<B, 3>) -> Tensor<B, 3> {
        let scaled = |y: Tensor<B, 3>, beta: &Param<Tensor<B, 1>>| {
            let ms = y.clone().powf_scalar(2.0).mean_dim(2);
            y * (ms + self.eps).sqrt().recip() * beta.val().unsqueeze::<3>()
        };
        (scaled(attn, &self.attn_scale) + scaled(ssm, &self.ssm_scale)) * 0.5
    }

    /// Both scales against their initial value: the mean per-channel β of each branch, and
    /// the mean per-channel distance |Δβ| from the initial value (0: never moved). A branch
    /// whose β collapses towards 0 has been switched off by training.
    pub fn branch_scales(&self, layer: usize) -> Vec<Diagnostic> {
        let stats = |p: &Param<Tensor<B, 1>>| {
            let v: Vec<f64> = p.val().into_data().convert::<f64>().into_vec().expect("float scales");
            let n = v.len().max(1) as f64;
            (v.iter().sum::<f64>() / n, v.iter().map(|x| (x - self.scale_init).abs()).sum::<f64>() / n)
        };
        let (attn_mean, attn_change) = stats(&self.attn_scale);
        let (ssm_mean, ssm_change) = stats(&self.ssm_scale);
        scale_diagnostics(layer, self.scale_init, [attn_mean, ssm_mean], [attn_change, ssm_change])
    }

    pub fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        let a = &mut self.attn;
        let mut out = vec![&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.o_proj];
        out.extend(self.ssm.linears_mut());
        out
    }
}

/// The branch scales as diagnostics: each branch's mean β against its initial value (the
/// headline), and its mean per-channel distance |Δβ| from it. `[attention, SSM]` each.
pub fn scale_diagnostics(layer: usize, init: f64, mean: [f64; 2], mean_abs_change: [f64; 2]) -> Vec<Diagnostic> {
    let name = MixerKind::Hymba.name();
    vec![
        Diagnostic::new(layer, name, "attention β", mean[0]).against(init).headline(),
        Diagnostic::new(layer, name, "SSM β", mean[1]).against(init).headline(),
        Diagnostic::new(layer, name, "attention |Δβ|", mean_abs_change[0]),
        Diagnostic::new(layer, name, "SSM |Δβ|", mean_abs_change[1]),
    ]
}

impl<B: Backend> SequenceMixer<B> for Hymba<B> {
    type State = HymbaState<B>;

    fn build(
        cfg: &ModelConfig,
        _kind: MixerKind,
        resid_scale: f64,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Self {
        Hymba::new(cfg, resid_scale, rng, device)
    }

    fn kind(&self) -> MixerKind {
        MixerKind::Hymba
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        Hymba::forward(self, x)
    }

    fn forward_step(&self, x: Tensor<B, 3>, state: &mut HymbaState<B>) -> Tensor<B, 3> {
        Hymba::forward_step(self, x, state)
    }

    fn empty_state(&self) -> HymbaState<B> {
        HymbaState::empty()
    }

    fn stack_states(states: Vec<HymbaState<B>>) -> HymbaState<B> {
        let (kv, ssm): (Vec<_>, Vec<_>) = states.into_iter().map(|s| (s.kv, s.ssm)).unzip();
        HymbaState {
            kv: <Attention<B> as SequenceMixer<B>>::stack_states(kv),
            ssm: <Mamba<B> as SequenceMixer<B>>::stack_states(ssm),
        }
    }

    fn select_states(state: HymbaState<B>, rows: &[usize]) -> HymbaState<B> {
        HymbaState {
            kv: <Attention<B> as SequenceMixer<B>>::select_states(state.kv, rows),
            ssm: <Mamba<B> as SequenceMixer<B>>::select_states(state.ssm, rows),
        }
    }

    fn state_bytes(state: &HymbaState<B>) -> usize {
        <Attention<B> as SequenceMixer<B>>::state_bytes(&state.kv)
            + <Mamba<B> as SequenceMixer<B>>::state_bytes(&state.ssm)
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        Hymba::linears_mut(self)
    }

    fn diagnostics(&self, layer: usize) -> Vec<Diagnostic> {
        self.branch_scales(layer)
    }
}

/// Hymba's analytic side, from the config alone.
pub struct Spec;

impl MixerSpec for Spec {
    /// The settings of both branches, and the branch scales' initial value.
    fn validate(cfg: &ModelConfig, _kind: MixerKind) -> anyhow::Result<()> {
        attention::Spec::validate(cfg, MixerKind::Attention)?;
        mamba::Spec::validate(cfg, MixerKind::Mamba)?;
        let init = cfg.hymba.scale_init;
        if !(init > 0.0 && init.is_finite()) {
            bail!("model.hymba.scale_init must be positive (got {init})");
        }
        Ok(())
    }

    /// Both branches and the two per-channel scales.
    fn sizes(cfg: &ModelConfig) -> Vec<f64> {
        vec![cfg.hymba.window as f64, cfg.hymba.meta_tokens as f64]
    }

    fn params(cfg: &ModelConfig, _kind: MixerKind) -> LayerParams {
        attention::Spec::params(cfg, MixerKind::Attention)
            .add(mamba::Spec::params(cfg, MixerKind::Mamba))
            .add(LayerParams { other: 2 * cfg.d_model, ..Default::default() })
    }

    /// Its attention (global, or over `model.hymba.window`) plus its Mamba.
    fn flops(cfg: &ModelConfig, _kind: MixerKind, seq_len: usize) -> f64 {
        let attn = if cfg.hymba.window > 0 {
            attention::local_flops(cfg, cfg.hymba.window, seq_len)
        } else {
            attention::global_flops(cfg, seq_len)
        };
        attn + mamba::Spec::flops(cfg, MixerKind::Mamba, seq_len)
    }

    /// The Mamba branch's state, and the attention branch's cache (fixed with a window).
    fn state_bytes(cfg: &ModelConfig, _kind: MixerKind) -> (usize, usize) {
        let (_, ssm) = mamba::Spec::state_bytes(cfg, MixerKind::Mamba);
        let kv_per_token = attention::kv_bytes_per_token(cfg);
        if cfg.hymba.window > 0 {
            (0, ssm + kv_per_token * (cfg.hymba.window - 1))
        } else {
            (kv_per_token, ssm)
        }
    }

    /// Its SSM branch's `d_state` (its attention branch's cache follows the width).
    fn state_knob(cfg: &ModelConfig, _kind: MixerKind) -> Option<StateKnob> {
        mamba::Spec::state_knob(cfg, MixerKind::Mamba)
    }
}
