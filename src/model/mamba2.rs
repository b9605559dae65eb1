//! The Mamba-2 sequence mixer (Dao & Gu 2024, "Transformers are SSMs", Fig. 6), as in
//! `mamba_ssm/modules/mamba2_simple.py` and `transformers`' `Mamba2Mixer`, whose parameter
//! names it keeps. All projections come from the input at once (no `x_proj`), A is one scalar
//! per head, B and C are shared by groups of heads, and the output passes a gated RMSNorm:
//!
//! ```text
//! z, xBC, Δ = in_proj(u)                   [di | di + 2·g·n | heads]
//! x, B, C   = silu(conv1d(xBC))            causal depthwise over all of xBC
//! Δ         = softplus(Δ + dt_bias)
//! y         = ssd(x, Δ, A = −exp(A_log), B, C) + D·x
//! out       = out_proj(rmsnorm_per_group(y · silu(z)) · weight)
//! ```

use crate::kernels::Backend;
use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::activation::softplus;
use crate::kernels::silu;
use super::conv::CausalConv1d;
use super::layers::{Linear, param};
use super::mamba::{dt_bias_init, torch_default_linear};
use super::mixer::{LayerParams, MixerSpec, SequenceMixer, StateKnob, cat_rows, select_rows, tensor_bytes};
use super::ssd::{self, SsdInputs};
use super::registry::MixerKind;
use super::config::ModelConfig;
use crate::util::checks::{check_conv_width, check_dt_range, largest_divisor_at_most, must_be_positive};
use anyhow::bail;
use serde::{Deserialize, Serialize};
use crate::rng::Rng;

#[derive(Module, Debug)]
pub struct Mamba2<B: Backend> {
    pub in_proj: Linear<B>,
    pub conv1d: CausalConv1d<B>,
    /// `[heads]`, added to Δ before the softplus.
    pub dt_bias: Param<Tensor<B, 1>>,
    /// `[heads]`; A = −exp(A_log).
    pub a_log: Param<Tensor<B, 1>>,
    /// `[heads]`, the skip connection D (one per head, shared by its channels).
    pub d_skip: Param<Tensor<B, 1>>,
    pub norm: GatedRmsNorm<B>,
    pub out_proj: Linear<B>,
    pub head_dim: usize,
    pub n_groups: usize,
    pub d_state: usize,
    pub chunk_size: usize,
    /// Run the SSD's matmuls with bf16 operands (set with the model's bf16 matmuls).
    pub ssd_bf16: bool,
}

/// RMSNorm of `y · silu(z)` over groups of `group_size` channels, then a per-channel gain
/// (`mamba_ssm` `RMSNormGated(norm_before_gate=False)`; one group per B/C group, so that the
/// norm does not mix heads that see different B and C).
#[derive(Module, Debug)]
pub struct GatedRmsNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub group_size: usize,
    pub eps: f64,
}

impl<B: Backend> GatedRmsNorm<B> {
    /// # Shapes
    /// - y, z: `[b, t, di]` → `[b, t, di]`
    pub fn forward(&self, y: Tensor<B, 3>, z: Tensor<B, 3>) -> Tensor<B, 3> {
        crate::kernels::gated_rms_norm(y, z, self.weight.val(), self.group_size, self.eps)
    }
}

/// What a Mamba-2 layer carries between decoding steps: O(1) in the context length.
#[derive(Clone, Debug)]
pub struct Mamba2State<B: Backend> {
    /// The last `d_conv − 1` inputs of the convolution, `[b, d_conv − 1, di + 2·g·n]`.
    pub conv: Option<Tensor<B, 3>>,
    /// The SSM state, `[b, heads, head_dim, n]`.
    pub ssm: Option<Tensor<B, 4>>,
}

impl<B: Backend> Mamba2State<B> {
    pub fn empty() -> Self {
        Self { conv: None, ssm: None }
    }
}

/// Mamba-2 mixer shape (names as in `mamba_ssm`'s `Mamba2` and HF's `Mamba2Config`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mamba2Config {
    /// N, the SSM state size per head.
    pub d_state: usize,
    pub d_conv: usize,
    /// Inner width is `expand · d_model`, split into heads of `head_dim`.
    pub expand: usize,
    /// P, the channels per head; `expand · d_model / head_dim` heads.
    pub head_dim: usize,
    /// B and C are shared by groups of heads (like GQA); must divide the number of heads.
    pub n_groups: usize,
    /// Chunk length of the SSD algorithm.
    pub chunk_size: usize,
    pub dt_min: f64,
    pub dt_max: f64,
    pub dt_init_floor: f64,
    /// A = -exp(A_log) is initialised uniformly in `[-a_init_max, -a_init_min]` per head.
    pub a_init_min: f64,
    pub a_init_max: f64,
    pub conv_bias: bool,
    pub bias: bool,
    /// The gated RMSNorm normalises each of the `n_groups` groups of channels on its own, as
    /// `mamba_ssm` and current `transformers` do; `false` normalises over the whole inner
    /// width, as `transformers` releases up to 5.17 did (their logits differ when
    /// `n_groups > 1`).
    pub norm_per_group: bool,
}

impl Default for Mamba2Config {
    fn default() -> Self {
        Self {
            d_state: 64,
            d_conv: 4,
            expand: 2,
            head_dim: 64,
            n_groups: 1,
            chunk_size: 64,
            dt_min: 0.001,
            dt_max: 0.1,
            dt_init_floor: 1e-4,
            a_init_min: 1.0,
            a_init_max: 16.0,
            conv_bias: true,
            bias: false,
            norm_per_group: true,
        }
    }
}

impl Mamba2Config {
    pub fn inner(&self, d_model: usize) -> usize {
        self.expand * d_model
    }

    pub fn heads(&self, d_model: usize) -> usize {
        self.inner(d_model) / self.head_dim
    }

    /// Channels that go through the convolution: x, B and C.
    pub fn conv_channels(&self, d_model: usize) -> usize {
        self.inner(d_model) + 2 * self.n_groups * self.d_state
    }
}

impl<B: Backend> Mamba2<B> {
    /// `mamba_ssm`'s initialisation (see `Mamba::new`); A is drawn uniformly per head.
    pub fn new(cfg: &ModelConfig, out_scale: f64, rng: &mut Rng, device: &B::Device) -> Self {
        let c = &cfg.mamba2;
        let (d, di, heads) = (cfg.d_model, c.inner(cfg.d_model), c.heads(cfg.d_model));
        let conv_channels = c.conv_channels(d);
        let in_proj = torch_default_linear(d, di + conv_channels + heads, c.bias, 1.0, rng, device);
        let conv1d = CausalConv1d::new(conv_channels, c.d_conv, c.conv_bias, rng, device);
        let dt_bias = param([heads], device, || dt_bias_init(rng, c.dt_min, c.dt_max, c.dt_init_floor));
        let a_log = param([heads], device, || {
            (c.a_init_min + rng.uniform() * (c.a_init_max - c.a_init_min)).ln() as f32
        });
        Self {
            in_proj,
            conv1d,
            dt_bias,
            a_log,
            d_skip: param([heads], device, || 1.0),
            norm: GatedRmsNorm {
                weight: param([di], device, || 1.0),
                group_size: if c.norm_per_group { di / c.n_groups } else { di },
                eps: cfg.norm_eps,
            },
            out_proj: torch_default_linear(di, d, c.bias, out_scale, rng, device),
            head_dim: c.head_dim,
            n_groups: c.n_groups,
            d_state: c.d_state,
            chunk_size: c.chunk_size,
            ssd_bf16: false,
        }
    }

    pub fn linears_mut(&mut self) -> [&mut Linear<B>; 2] {
        [&mut self.in_proj, &mut self.out_proj]
    }

    fn heads(&self) -> usize {
        self.a_log.dims()[0]
    }

    /// # Shapes
    /// - u: `[b, t, d]` → `[b, t, d]`
    pub fn forward(&self, u: Tensor<B, 3>) -> Tensor<B, 3> {
        let (inputs, z) = self.ssd_inputs(u, &mut Mamba2State::empty());
        let x = inputs.x.clone();
        // No state to hand on: the SSD as one fused loop where the backend has one (the CPU),
        // the chunked algorithm otherwise. bf16 SSD matmuls are the chunked algorithm's (tensor
        // cores on a GPU), so under mixed precision it runs everywhere.
        let y = if self.ssd_bf16 {
            ssd::chunked(inputs, None, self.chunk_size, true).0
        } else {
            crate::kernels::ssd_scan(inputs, self.chunk_size)
        };
        self.output(y, x, z)
    }

    /// Processes new tokens after those summarised by `state`, and updates it; one token goes
    /// through the O(1) step form, longer inputs through the chunked SSD.
    pub fn forward_step(&self, u: Tensor<B, 3>, state: &mut Mamba2State<B>) -> Tensor<B, 3> {
        if u.dims()[1] == 1 {
            return self.decode_one(u, state);
        }
        self.forward_with(u, state, false)
    }

    /// The forward pass from (and updating) `state`, with the sequential reference scan when
    /// `sequential` (for tests) and the chunked SSD otherwise.
    pub fn forward_with(
        &self,
        u: Tensor<B, 3>,
        state: &mut Mamba2State<B>,
        sequential: bool,
    ) -> Tensor<B, 3> {
        let (inputs, z) = self.ssd_inputs(u, state);
        let x = inputs.x.clone();
        let h0 = state.ssm.take();
        let (y, h) = if sequential {
            ssd::reference(inputs, h0)
        } else {
            ssd::chunked(inputs, h0, self.chunk_size, self.ssd_bf16)
        };
        state.ssm = Some(h);
        self.output(y, x, z)
    }

    fn decode_one(&self, u: Tensor<B, 3>, state: &mut Mamba2State<B>) -> Tensor<B, 3> {
        let [b, _, _] = u.dims();
        let (heads, p, n) = (self.heads(), self.head_dim, self.d_state);
        let (s, z) = self.ssd_inputs(u, state);
        let h =
            state.ssm.take().unwrap_or_else(|| Tensor::zeros([b, heads, p, n], (&s.x.device(), s.x.dtype())));
        let one = |v: Tensor<B, 4>| v.squeeze_dim::<3>(1);
        let (y, h) = ssd::step(one(s.x.clone()), s.dt.squeeze_dim::<2>(1), s.a, one(s.b), one(s.c), h);
        state.ssm = Some(h);
        self.output(y.unsqueeze_dim::<4>(1), s.x, z)
    }

    /// Everything before the scan: the projection, the convolution (advancing `state.conv`)
    /// and Δ. Returns the scan's inputs and the gate `z` (`[b, t, di]`).
    fn ssd_inputs(&self, u: Tensor<B, 3>, state: &mut Mamba2State<B>) -> (SsdInputs<B>, Tensor<B, 3>) {
        let [b, t, _] = u.dims();
        let (heads, p, g, n) = (self.heads(), self.head_dim, self.n_groups, self.d_state);
        let di = heads * p;
        let proj = self.in_proj.forward(u);
        let z = proj.clone().narrow(2, 0, di);
        let xbc = proj.clone().narrow(2, di, di + 2 * g * n);
        let dt = proj.narrow(2, 2 * di + 2 * g * n, heads);
        let (xbc, history) = self.conv1d.forward(xbc, state.conv.take());
        state.conv = Some(history);
        let xbc = silu(xbc);
        let inputs = SsdInputs {
            x: xbc.clone().narrow(2, 0, di).reshape([b, t, heads, p]),
            dt: softplus(dt + self.dt_bias.val().reshape([1, 1, heads])),
            a: self.a_log.val().exp().neg(),
            b: xbc.clone().narrow(2, di, g * n).reshape([b, t, g, n]),
            c: xbc.narrow(2, di + g * n, g * n).reshape([b, t, g, n]),
        };
        (inputs, z)
    }

    /// `out_proj(norm(y + D·x, z))` with y, x: `[b, t, heads, p]`.
    fn output(&self, y: Tensor<B, 4>, x: Tensor<B, 4>, z: Tensor<B, 3>) -> Tensor<B, 3> {
        let [b, t, heads, p] = y.dims();
        let y = y + x * self.d_skip.val().reshape([1, 1, heads, 1]);
        self.out_proj.forward(self.norm.forward(y.reshape([b, t, heads * p]), z))
    }
}

impl<B: Backend> SequenceMixer<B> for Mamba2<B> {
    type State = Mamba2State<B>;

    fn build(
        cfg: &ModelConfig,
        _kind: MixerKind,
        resid_scale: f64,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Self {
        Mamba2::new(cfg, resid_scale, rng, device)
    }

    fn kind(&self) -> MixerKind {
        MixerKind::Mamba2
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        Mamba2::forward(self, x)
    }

    fn forward_step(&self, x: Tensor<B, 3>, state: &mut Mamba2State<B>) -> Tensor<B, 3> {
        Mamba2::forward_step(self, x, state)
    }

    fn empty_state(&self) -> Mamba2State<B> {
        Mamba2State::empty()
    }

    fn stack_states(states: Vec<Mamba2State<B>>) -> Mamba2State<B> {
        let (conv, ssm): (Vec<_>, Vec<_>) = states.into_iter().map(|s| (s.conv, s.ssm)).unzip();
        Mamba2State { conv: cat_rows(conv), ssm: cat_rows(ssm) }
    }

    fn select_states(state: Mamba2State<B>, rows: &[usize]) -> Mamba2State<B> {
        Mamba2State { conv: select_rows(state.conv, rows), ssm: select_rows(state.ssm, rows) }
    }

    fn state_bytes(state: &Mamba2State<B>) -> usize {
        tensor_bytes(&state.conv) + tensor_bytes(&state.ssm)
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        Mamba2::linears_mut(self).into_iter().collect()
    }

    /// Its projections, and the SSD's chunk matmuls (`ssd::chunked`); the decays, their
    /// cumulative sums and the carried state stay f32.
    fn use_bf16_matmuls(&mut self) {
        self.ssd_bf16 = true;
        for linear in Mamba2::linears_mut(self) {
            linear.bf16 = true;
        }
    }
}

/// Mamba-2's analytic side, from the config alone.
pub struct Spec;

impl MixerSpec for Spec {
    fn validate(cfg: &ModelConfig, _kind: MixerKind) -> anyhow::Result<()> {
        let c = &cfg.mamba2;
        check_conv_width("model.mamba2.d_conv", c.d_conv)?;
        must_be_positive(&[
            ("model.mamba2.d_state", c.d_state),
            ("model.mamba2.expand", c.expand),
            ("model.mamba2.head_dim", c.head_dim),
            ("model.mamba2.n_groups", c.n_groups),
            ("model.mamba2.chunk_size", c.chunk_size),
        ])?;
        let inner = c.expand * cfg.d_model;
        if !inner.is_multiple_of(c.head_dim) {
            bail!(
                "model.mamba2.head_dim ({}) must divide the inner width expand · d_model = {inner}; try head_dim = {}",
                c.head_dim,
                largest_divisor_at_most(inner, c.head_dim)
            );
        }
        let heads = inner / c.head_dim;
        if !heads.is_multiple_of(c.n_groups) {
            bail!(
                "model.mamba2.n_groups ({}) must divide the number of heads ({heads} = {inner} / head_dim); try n_groups = {}",
                c.n_groups,
                largest_divisor_at_most(heads, c.n_groups)
            );
        }
        if !(0.0 < c.a_init_min && c.a_init_min <= c.a_init_max) {
            bail!("model.mamba2 needs 0 < a_init_min <= a_init_max (got {}, {})", c.a_init_min, c.a_init_max);
        }
        check_dt_range("model.mamba2", c.dt_min, c.dt_max, c.dt_init_floor)
    }

    /// in_proj and out_proj; the projection biases, the conv, dt_bias, A_log, D and the gated
    /// norm's gain.
    fn sizes(cfg: &ModelConfig) -> Vec<f64> {
        let c = &cfg.mamba2;
        let groups = c.n_groups as f64 * c.d_state as f64;
        vec![c.expand as f64 * cfg.d_model as f64, groups, c.d_conv as f64]
    }

    fn params(cfg: &ModelConfig, _kind: MixerKind) -> LayerParams {
        let (c, d) = (&cfg.mamba2, cfg.d_model);
        let (di, heads, conv, bias) = (c.inner(d), c.heads(d), c.conv_channels(d), usize::from(c.bias));
        let proj = di + conv + heads;
        LayerParams {
            matmul: d * proj + di * d,
            other: bias * (proj + d) + conv * c.d_conv + usize::from(c.conv_bias) * conv + 3 * heads + di,
            ..Default::default()
        }
    }

    /// Chunked SSD with chunk Q: the within-chunk matmuls `Q·(2·g·n + 2·di)` (C Bᵀ and its product
    /// with x, causal halves), the chunk states and their readout `4·di·n`, and the convolution.
    fn flops(cfg: &ModelConfig, _kind: MixerKind, seq_len: usize) -> f64 {
        let c = &cfg.mamba2;
        let (di, n, g) = (c.inner(cfg.d_model) as f64, c.d_state as f64, c.n_groups as f64);
        let q = c.chunk_size.min(seq_len) as f64;
        q * (2.0 * g * n + 2.0 * di)
            + 4.0 * di * n
            + 2.0 * c.conv_channels(cfg.d_model) as f64 * c.d_conv as f64
    }

    /// The SSM state and the convolution's history, fixed.
    fn state_bytes(cfg: &ModelConfig, _kind: MixerKind) -> (usize, usize) {
        let c = &cfg.mamba2;
        let (di, conv) = (c.inner(cfg.d_model), c.conv_channels(cfg.d_model));
        (0, 4 * (di * c.d_state + conv * (c.d_conv - 1)))
    }

    /// The largest head_dim from half the base's up to the base's that divides the new inner
    /// width, into a number of heads the groups divide.
    fn fit_width(cfg: &mut ModelConfig, base: &ModelConfig) -> Option<()> {
        let inner = cfg.mamba2.expand * cfg.d_model;
        let p = base.mamba2.head_dim;
        cfg.mamba2.head_dim = (p.div_ceil(2)..=p).rev().find(|h| inner.is_multiple_of(*h))?;
        let heads = inner / cfg.mamba2.head_dim;
        heads.is_multiple_of(cfg.mamba2.n_groups).then_some(())
    }

    fn knob(cfg: &ModelConfig) -> Option<String> {
        Some(format!("mamba2 head_dim {}", cfg.mamba2.head_dim))
    }

    /// N, the state size of each head's channels.
    fn state_knob(cfg: &ModelConfig, _kind: MixerKind) -> Option<StateKnob> {
        Some(StateKnob {
            key: "model.mamba2.d_state",
            value: cfg.mamba2.d_state,
            range: (1, 512),
            set: |c, v| c.mamba2.d_state = v,
        })
    }
}
