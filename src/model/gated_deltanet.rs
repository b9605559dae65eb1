//! The Gated DeltaNet sequence mixer (Yang, Kautz & Hatamizadeh 2024, arXiv 2412.06464), as
//! fla's `GatedDeltaNet` layer and `transformers`' `Qwen3NextGatedDeltaNet` build it, and
//! DeltaNet (Yang et al. 2024, arXiv 2406.06484), the same layer without the decay gate:
//!
//! ```text
//! q, k, v, z, b, a = in_proj(x)              [key_dim | key_dim | value_dim | value_dim | hv | hv]
//! q, k, v          = silu(conv1d(q, k, v))   causal depthwise, kernel model.gdn.d_conv
//! q, k             = l2norm(q) · dk^-1/2, l2norm(k)     per head
//! β                = σ(b)                    (2σ(b) with allow_neg_eigval)
//! g                = −exp(A_log) · softplus(a + dt_bias)    (DeltaNet: g = 0, no a)
//! o                = delta_rule(q, k, v, g, β)           value head j reads key head j / (hv / hk)
//! out              = out_proj(rmsnorm_per_head(o) · w · silu(z))
//! ```
//!
//! The projections are fused into one `in_proj` (one matmul), as Mamba-2's are; fla keeps them
//! apart and Qwen3-Next groups them per key head, which an importer reorders. The recurrence
//! and its chunked form are in `delta_rule.rs`; the output norm is Qwen3-Next's
//! `RMSNormGated` (normalise, then gate; a plain gain initialised to 1).

use crate::kernels::Backend;
use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::activation::{sigmoid, softplus};
use crate::kernels::silu;
use super::conv::CausalConv1d;
use super::delta_rule::{self, DeltaInputs};
use super::layers::{Linear, param};
use super::mamba::{dt_bias_init, torch_default_linear};
use super::mixer::{LayerParams, MixerSpec, SequenceMixer, StateKnob, cat_rows, select_rows, tensor_bytes};
use super::registry::MixerKind;
use super::config::ModelConfig;
use crate::util::checks::{check_conv_width, check_dt_range, must_be_positive};
use anyhow::bail;
use serde::{Deserialize, Serialize};
use crate::rng::Rng;

#[derive(Module, Debug)]
pub struct GatedDeltaNet<B: Backend> {
    pub in_proj: Linear<B>,
    /// Over q, k and v (`2 · key_dim + value_dim` channels).
    pub conv1d: CausalConv1d<B>,
    /// `[hv]`, added to `a` before the softplus; `None` for DeltaNet.
    pub dt_bias: Option<Param<Tensor<B, 1>>>,
    /// `[hv]`; the decay rate is `exp(A_log)`. `None` for DeltaNet.
    pub a_log: Option<Param<Tensor<B, 1>>>,
    /// `[dv]`, the gain of the per-head output norm, shared by the heads.
    pub norm_weight: Param<Tensor<B, 1>>,
    pub out_proj: Linear<B>,
    pub key_heads: usize,
    pub value_heads: usize,
    pub head_dim: usize,
    pub v_head_dim: usize,
    pub chunk_size: usize,
    pub allow_neg_eigval: bool,
    pub eps: f64,
}

/// What a (Gated) DeltaNet layer carries between decoding steps: O(1) in the context length.
#[derive(Clone, Debug)]
pub struct DeltaNetState<B: Backend> {
    /// The last `d_conv − 1` inputs of the convolution, `[b, d_conv − 1, 2 · key_dim + value_dim]`.
    pub conv: Option<Tensor<B, 3>>,
    /// The memory `S`, `[b, hv, dk, dv]`.
    pub memory: Option<Tensor<B, 4>>,
}

impl<B: Backend> DeltaNetState<B> {
    pub fn empty() -> Self {
        Self { conv: None, memory: None }
    }
}

/// Gated DeltaNet and DeltaNet layers (see `model::gated_deltanet`). Defaults follow fla's
/// `GatedDeltaNet` layer: key width ≈ 0.75 · d_model, value heads twice as wide as key heads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatedDeltaNetConfig {
    /// dk, the width of each query and key head.
    pub head_dim: usize,
    /// Query/key heads; 0 means `round(0.75 · d_model / head_dim)`, at least 1.
    pub n_heads: usize,
    /// Value heads, a multiple of `n_heads` (Qwen3-Next uses twice as many); 0 means `n_heads`.
    pub n_v_heads: usize,
    /// dv, the width of each value head; 0 means `2 · head_dim` (fla's `expand_v = 2`).
    pub v_head_dim: usize,
    /// Width of the causal depthwise convolution over q, k and v.
    pub d_conv: usize,
    pub conv_bias: bool,
    /// Tokens per chunk of the chunked (WY) form.
    pub chunk_size: usize,
    /// β = 2σ(·) ∈ (0, 2) instead of σ(·), so that the transition `I − β k kᵀ` can have
    /// negative eigenvalues (Grazzi et al. 2024; fla's `allow_neg_eigval`): what parity-like
    /// state tracking needs.
    pub allow_neg_eigval: bool,
    /// The decay's step size softplus(a + dt_bias) starts log-uniform in `[dt_min, dt_max]`.
    pub dt_min: f64,
    pub dt_max: f64,
    pub dt_init_floor: f64,
    /// `exp(A_log)` is drawn uniformly in `[a_init_min, a_init_max]` per value head (fla:
    /// U(0, 16)), floored at 1e-4.
    pub a_init_min: f64,
    pub a_init_max: f64,
}

impl Default for GatedDeltaNetConfig {
    fn default() -> Self {
        Self {
            head_dim: 64,
            n_heads: 0,
            n_v_heads: 0,
            v_head_dim: 0,
            d_conv: 4,
            conv_bias: false,
            chunk_size: 64,
            allow_neg_eigval: false,
            dt_min: 0.001,
            dt_max: 0.1,
            dt_init_floor: 1e-4,
            a_init_min: 0.0,
            a_init_max: 16.0,
        }
    }
}

impl GatedDeltaNetConfig {
    /// Query/key heads at width `d_model`.
    pub fn key_heads(&self, d_model: usize) -> usize {
        if self.n_heads > 0 {
            self.n_heads
        } else {
            ((0.75 * d_model as f64 / self.head_dim as f64).round() as usize).max(1)
        }
    }

    pub fn value_heads(&self, d_model: usize) -> usize {
        if self.n_v_heads > 0 { self.n_v_heads } else { self.key_heads(d_model) }
    }

    pub fn value_head_dim(&self) -> usize {
        if self.v_head_dim > 0 { self.v_head_dim } else { 2 * self.head_dim }
    }

    pub fn key_dim(&self, d_model: usize) -> usize {
        self.key_heads(d_model) * self.head_dim
    }

    pub fn value_dim(&self, d_model: usize) -> usize {
        self.value_heads(d_model) * self.value_head_dim()
    }

    /// Channels through the convolution: q, k and v.
    pub fn conv_channels(&self, d_model: usize) -> usize {
        2 * self.key_dim(d_model) + self.value_dim(d_model)
    }

    /// Outputs of `in_proj`: q, k, v, the gate z, β's logits and, with the decay gate, `a`.
    pub fn projections(&self, d_model: usize, gated: bool) -> usize {
        self.conv_channels(d_model)
            + self.value_dim(d_model)
            + self.value_heads(d_model) * (1 + usize::from(gated))
    }
}

impl<B: Backend> GatedDeltaNet<B> {
    /// fla's initialisation of the gates (A uniform, dt_bias the inverse softplus of a
    /// log-uniform step) and `mamba_ssm`'s of the projections (PyTorch's default, `out_proj`
    /// scaled by `out_scale`). `gated = false` builds DeltaNet.
    pub fn new(cfg: &ModelConfig, gated: bool, out_scale: f64, rng: &mut Rng, device: &B::Device) -> Self {
        let (c, d) = (&cfg.gdn, cfg.d_model);
        let hv = c.value_heads(d);
        let in_proj = torch_default_linear(d, c.projections(d, gated), false, 1.0, rng, device);
        let conv1d = CausalConv1d::new(c.conv_channels(d), c.d_conv, c.conv_bias, rng, device);
        let dt_bias =
            gated.then(|| param([hv], device, || dt_bias_init(rng, c.dt_min, c.dt_max, c.dt_init_floor)));
        let a_log = gated.then(|| {
            param([hv], device, || {
                (c.a_init_min + rng.uniform() * (c.a_init_max - c.a_init_min)).max(1e-4).ln() as f32
            })
        });
        Self {
            in_proj,
            conv1d,
            dt_bias,
            a_log,
            norm_weight: param([c.value_head_dim()], device, || 1.0),
            out_proj: torch_default_linear(c.value_dim(d), d, false, out_scale, rng, device),
            key_heads: c.key_heads(d),
            value_heads: hv,
            head_dim: c.head_dim,
            v_head_dim: c.value_head_dim(),
            chunk_size: c.chunk_size,
            allow_neg_eigval: c.allow_neg_eigval,
            eps: cfg.norm_eps,
        }
    }

    pub fn linears_mut(&mut self) -> [&mut Linear<B>; 2] {
        [&mut self.in_proj, &mut self.out_proj]
    }

    /// # Shapes
    /// - x: `[b, t, d]` → `[b, t, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_with(x, &mut DeltaNetState::empty(), false)
    }

    /// Processes new tokens after those summarised by `state`, and updates it: one token takes
    /// the recurrent step, longer inputs the chunked form.
    pub fn forward_step(&self, x: Tensor<B, 3>, state: &mut DeltaNetState<B>) -> Tensor<B, 3> {
        let one_token = x.dims()[1] == 1;
        self.forward_with(x, state, one_token)
    }

    /// The forward pass from (and updating) `state`, with the token-by-token recurrence when
    /// `recurrent` and the chunked form otherwise.
    pub fn forward_with(
        &self,
        x: Tensor<B, 3>,
        state: &mut DeltaNetState<B>,
        recurrent: bool,
    ) -> Tensor<B, 3> {
        let (inputs, z) = self.rule_inputs(x, state);
        let s0 = state.memory.take();
        let (o, s) = if recurrent {
            delta_rule::reference(inputs, s0)
        } else {
            delta_rule::chunked(inputs, s0, self.chunk_size)
        };
        state.memory = Some(s);
        self.output(o, z)
    }

    /// Everything before the recurrence: the projection, the convolution (advancing
    /// `state.conv`), the normalised and head-mapped q and k, β and g. Returns the rule's
    /// inputs and the gate `z` (`[b, t, hv, dv]`).
    fn rule_inputs(&self, x: Tensor<B, 3>, state: &mut DeltaNetState<B>) -> (DeltaInputs<B>, Tensor<B, 4>) {
        let [b, t, _] = x.dims();
        let (hk, hv, dk, dv) = (self.key_heads, self.value_heads, self.head_dim, self.v_head_dim);
        let (key_dim, value_dim) = (hk * dk, hv * dv);
        let conv_channels = 2 * key_dim + value_dim;
        let proj = self.in_proj.forward(x);
        let (qkv, history) = self.conv1d.forward(proj.clone().narrow(2, 0, conv_channels), state.conv.take());
        state.conv = Some(history);
        let qkv = silu(qkv);
        let q = qkv.clone().narrow(2, 0, key_dim).reshape([b, t, hk, dk]);
        let k = qkv.clone().narrow(2, key_dim, key_dim).reshape([b, t, hk, dk]);
        let v = qkv.narrow(2, 2 * key_dim, value_dim).reshape([b, t, hv, dv]);
        let z = proj.clone().narrow(2, conv_channels, value_dim).reshape([b, t, hv, dv]);
        let beta_logits = proj.clone().narrow(2, conv_channels + value_dim, hv);
        let beta = if self.allow_neg_eigval { sigmoid(beta_logits) * 2.0 } else { sigmoid(beta_logits) };
        let g = match (&self.a_log, &self.dt_bias) {
            (Some(a_log), Some(dt_bias)) => {
                let a = proj.narrow(2, conv_channels + value_dim + hv, hv);
                let rate = a_log.val().exp().reshape([1, 1, hv]);
                softplus(a + dt_bias.val().reshape([1, 1, hv])) * rate.neg()
            }
            _ => Tensor::zeros([b, t, hv], (&beta.device(), beta.dtype())),
        };
        let q = delta_rule::l2_normalize(q) * (dk as f64).powf(-0.5);
        let k = delta_rule::l2_normalize(k);
        let inputs = DeltaInputs { q: key_to_value_heads(q, hv), k: key_to_value_heads(k, hv), v, g, beta };
        (inputs, z)
    }

    /// `out_proj(rmsnorm(o) · w · silu(z))` per head, o and z `[b, t, hv, dv]`.
    fn output(&self, o: Tensor<B, 4>, z: Tensor<B, 4>) -> Tensor<B, 3> {
        let [b, t, hv, dv] = o.dims();
        // Per head: the fused RMSNorm kernel where the backend has one.
        let normed = crate::kernels::rms_norm(o.reshape([b, t * hv, dv]), self.norm_weight.val(), self.eps);
        self.out_proj.forward((normed.reshape([b, t, hv, dv]) * silu(z)).reshape([b, t, hv * dv]))
    }
}

/// Repeats each key head for the value heads that read it (`transformers`' `repeat_interleave`):
/// `[b, t, hk, dk] → [b, t, hv, dk]`, value head `j` reading key head `j / (hv / hk)`.
pub fn key_to_value_heads<B: Backend>(x: Tensor<B, 4>, hv: usize) -> Tensor<B, 4> {
    // The same mapping as Mamba-2's B/C groups to heads.
    super::ssd::groups_to_heads::<B, 4, 5>(x, hv)
}

impl<B: Backend> SequenceMixer<B> for GatedDeltaNet<B> {
    type State = DeltaNetState<B>;

    /// Gated DeltaNet (`G`), or DeltaNet (`D`): the same module without its decay gate.
    fn build(
        cfg: &ModelConfig,
        kind: MixerKind,
        resid_scale: f64,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Self {
        GatedDeltaNet::new(cfg, kind == MixerKind::GatedDeltaNet, resid_scale, rng, device)
    }

    fn kind(&self) -> MixerKind {
        if self.a_log.is_some() { MixerKind::GatedDeltaNet } else { MixerKind::DeltaNet }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        GatedDeltaNet::forward(self, x)
    }

    fn forward_step(&self, x: Tensor<B, 3>, state: &mut DeltaNetState<B>) -> Tensor<B, 3> {
        GatedDeltaNet::forward_step(self, x, state)
    }

    fn empty_state(&self) -> DeltaNetState<B> {
        DeltaNetState::empty()
    }

    fn stack_states(states: Vec<DeltaNetState<B>>) -> DeltaNetState<B> {
        let (conv, memory): (Vec<_>, Vec<_>) = states.into_iter().map(|s| (s.conv, s.memory)).unzip();
        DeltaNetState { conv: cat_rows(conv), memory: cat_rows(memory) }
    }

    fn select_states(state: DeltaNetState<B>, rows: &[usize]) -> DeltaNetState<B> {
        DeltaNetState { conv: select_rows(state.conv, rows), memory: select_rows(state.memory, rows) }
    }

    fn state_bytes(state: &DeltaNetState<B>) -> usize {
        tensor_bytes(&state.conv) + tensor_bytes(&state.memory)
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        GatedDeltaNet::linears_mut(self).into_iter().collect()
    }
}

/// (Gated) DeltaNet's analytic side, from the config alone.
pub struct Spec;

impl MixerSpec for Spec {
    /// Both layer kinds (Gated DeltaNet and DeltaNet) read `model.gdn`.
    fn validate(cfg: &ModelConfig, _kind: MixerKind) -> anyhow::Result<()> {
        let c = &cfg.gdn;
        check_conv_width("model.gdn.d_conv", c.d_conv)?;
        must_be_positive(&[("model.gdn.head_dim", c.head_dim), ("model.gdn.chunk_size", c.chunk_size)])?;
        let (k_heads, v_heads) = (c.key_heads(cfg.d_model), c.value_heads(cfg.d_model));
        if !v_heads.is_multiple_of(k_heads) {
            bail!(
                "model.gdn.n_v_heads ({v_heads}) must be a multiple of the key heads ({k_heads}, \
                 model.gdn.n_heads); try n_v_heads = {}",
                k_heads * v_heads.div_ceil(k_heads)
            );
        }
        if !(0.0 <= c.a_init_min && c.a_init_min <= c.a_init_max && c.a_init_max > 0.0) {
            bail!(
                "model.gdn needs 0 <= a_init_min <= a_init_max, a_init_max > 0 (got {}, {})",
                c.a_init_min,
                c.a_init_max
            );
        }
        check_dt_range("model.gdn", c.dt_min, c.dt_max, c.dt_init_floor)
    }

    /// in_proj and out_proj; the conv taps and bias, A_log and dt_bias (gated), and the output
    /// norm's gain.
    fn sizes(cfg: &ModelConfig) -> Vec<f64> {
        let g = &cfg.gdn;
        vec![
            g.n_heads.max(1) as f64 * g.head_dim as f64,
            g.n_v_heads.max(g.n_heads).max(1) as f64 * g.v_head_dim.max(2 * g.head_dim) as f64,
            g.d_conv as f64,
        ]
    }

    fn params(cfg: &ModelConfig, kind: MixerKind) -> LayerParams {
        let (c, d) = (&cfg.gdn, cfg.d_model);
        let gated = kind == MixerKind::GatedDeltaNet;
        let (conv, hv) = (c.conv_channels(d), c.value_heads(d));
        LayerParams {
            matmul: d * c.projections(d, gated) + c.value_dim(d) * d,
            other: conv * c.d_conv
                + usize::from(c.conv_bias) * conv
                + usize::from(gated) * 2 * hv
                + c.value_head_dim(),
            ..Default::default()
        }
    }

    /// The chunked WY form with chunk C, per value head and token: β k kᵀ and q kᵀ (2·C·dk
    /// each), the triangular inverse by forward substitution ([`inverse_flops`] per chunk), U
    /// and W (2·C·(dv + dk)), P·V' (2·C·dv), and W·S, q·S and the state update (2·dk·dv each);
    /// plus the convolution.
    fn flops(cfg: &ModelConfig, _kind: MixerKind, seq_len: usize) -> f64 {
        let c = &cfg.gdn;
        let (hv, dk, dv) = (c.value_heads(cfg.d_model) as f64, c.head_dim as f64, c.value_head_dim() as f64);
        let q = c.chunk_size.min(seq_len.max(1)) as f64;
        hv * (4.0 * q * dk + inverse_flops(q) / q + 2.0 * q * (dv + dk) + 2.0 * q * dv + 6.0 * dk * dv)
            + 2.0 * c.conv_channels(cfg.d_model) as f64 * c.d_conv as f64
    }

    /// The delta-rule memory (dk × dv per value head) and the convolution's history, fixed.
    fn state_bytes(cfg: &ModelConfig, _kind: MixerKind) -> (usize, usize) {
        let (c, d) = (&cfg.gdn, cfg.d_model);
        (0, 4 * (c.value_heads(d) * c.head_dim * c.value_head_dim() + c.conv_channels(d) * (c.d_conv - 1)))
    }

    /// Its heads follow the width (0 in the config: derived from d_model).
    fn knob(cfg: &ModelConfig) -> Option<String> {
        let (c, d) = (&cfg.gdn, cfg.d_model);
        Some(format!(
            "gdn heads {} (k {}) / {} (v {})",
            c.key_heads(d),
            c.head_dim,
            c.value_heads(d),
            c.value_head_dim()
        ))
    }

    /// The key head width: the memory of each value head is `dk × dv`, and with the defaults
    /// the number of heads and `dv` follow it.
    fn state_knob(cfg: &ModelConfig, _kind: MixerKind) -> Option<StateKnob> {
        Some(StateKnob {
            key: "model.gdn.head_dim",
            value: cfg.gdn.head_dim,
            range: (4, 256),
            set: |c, v| c.gdn.head_dim = v,
        })
    }
}

/// FLOPs of the triangular inverse `T = (I + A)⁻¹` on one `C × C` chunk, by forward
/// substitution (`T_ij = −A_ij − Σ_{j<r<i} A_ir T_rj`): `C(C−1)(C−2)/6` multiply-adds. That is
/// what the fused kernels run (`kernels::ut_transform`, CPU and GPU); the plain-ops twin's
/// blocked doubling does about four times that at C = 64, but a FLOP budget counts the
/// algorithm, not whichever backend ran it, so matching by FLOPs sizes models the same
/// everywhere.
fn inverse_flops(c: f64) -> f64 {
    if c < 3.0 { 0.0 } else { c * (c - 1.0) * (c - 2.0) / 3.0 }
}
