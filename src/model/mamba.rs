//! The Mamba-1 sequence mixer (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with
//! Selective State Spaces", Fig. 3), as in `mamba_ssm/modules/mamba_simple.py` and
//! `transformers`' `MambaMixer`, whose parameter names it keeps:
//!
//! ```text
//! x, z  = in_proj(u)                          [b, t, 2·di] split in two
//! x     = silu(conv1d(x))                     causal depthwise, d_conv taps
//! Δ, B, C = x_proj(x)                         [dt_rank | d_state | d_state]
//! Δ     = softplus(dt_proj(Δ))                per channel, with the paper's bias init
//! y     = selective_scan(x, Δ, A = −exp(A_log), B, C) + D·x
//! out   = out_proj(y · silu(z))
//! ```

use crate::kernels::{self, Backend};
use burn::module::{Module, Param};
use burn::tensor::Tensor;

use super::activation::softplus;
use crate::kernels::silu;
use super::conv::CausalConv1d;
use super::layers::{Linear, Norm, param};
use super::mixer::{LayerParams, MixerSpec, SequenceMixer, StateKnob, cat_rows, select_rows, tensor_bytes};
use super::registry::MixerKind;
use crate::util::checks::{check_conv_width, check_dt_range, must_be_positive};
use super::config::{ModelConfig, NormKind};
use serde::{Deserialize, Serialize};
use crate::kernels::selective_scan::{self, ScanAlgorithm, ScanInputs};
use crate::rng::Rng;

#[derive(Module, Debug)]
pub struct Mamba<B: Backend> {
    pub in_proj: Linear<B>,
    pub conv1d: CausalConv1d<B>,
    pub x_proj: Linear<B>,
    pub dt_proj: Linear<B>,
    /// `[di, n]`; A = −exp(A_log), so A stays negative (a decaying state) under any update.
    pub a_log: Param<Tensor<B, 2>>,
    /// `[di]`, the skip connection D.
    pub d_skip: Param<Tensor<B, 1>>,
    pub out_proj: Linear<B>,
    /// Jamba's RMSNorms on Δ (before `dt_proj`), B and C; `None` in Mamba proper.
    pub inner_norms: Option<InnerNorms<B>>,
    pub dt_rank: usize,
    pub d_state: usize,
    pub chunk_size: usize,
}

/// RMSNorms over the low-rank Δ, B and C (Jamba, Lieber et al. 2024, which found them to
/// stabilise training at scale; HF `JambaMambaMixer`'s `dt/b/c_layernorm`).
#[derive(Module, Debug)]
pub struct InnerNorms<B: Backend> {
    pub dt: Norm<B>,
    pub b: Norm<B>,
    pub c: Norm<B>,
}

/// What a Mamba layer carries from one decoding step to the next: O(1) in the context length.
#[derive(Clone, Debug)]
pub struct MambaState<B: Backend> {
    /// The last `d_conv − 1` inputs of the convolution, `[b, d_conv − 1, di]`.
    pub conv: Option<Tensor<B, 3>>,
    /// The SSM state, `[b, di, n]`.
    pub ssm: Option<Tensor<B, 3>>,
}

impl<B: Backend> MambaState<B> {
    pub fn empty() -> Self {
        Self { conv: None, ssm: None }
    }
}

/// Mamba-1 mixer shape (names as in `mamba_ssm`'s `Mamba` and HF's `MambaConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MambaConfig {
    /// N, the SSM state size per channel.
    pub d_state: usize,
    /// Width of the causal depthwise convolution.
    pub d_conv: usize,
    /// Inner width is `expand · d_model`.
    pub expand: usize,
    /// Rank of the Δ projection; 0 means `ceil(d_model / 16)` (the paper's default).
    pub dt_rank: usize,
    /// Δ is initialised log-uniformly in `[dt_min, dt_max]` through the bias of `dt_proj`.
    pub dt_min: f64,
    pub dt_max: f64,
    pub dt_init_floor: f64,
    /// Bias on the convolution (true in the paper).
    pub conv_bias: bool,
    /// Bias on `in_proj` and `out_proj` (false in the paper).
    pub bias: bool,
    /// Time steps per chunk of the chunked scan; 0 picks about √T.
    pub chunk_size: usize,
    /// RMSNorms on Δ, B and C after `x_proj` (Jamba's Mamba layers).
    pub inner_norms: bool,
}

impl Default for MambaConfig {
    fn default() -> Self {
        Self {
            d_state: 16,
            d_conv: 4,
            expand: 2,
            dt_rank: 0,
            dt_min: 0.001,
            dt_max: 0.1,
            dt_init_floor: 1e-4,
            conv_bias: true,
            bias: false,
            chunk_size: 0,
            inner_norms: false,
        }
    }
}

impl MambaConfig {
    pub fn inner(&self, d_model: usize) -> usize {
        self.expand * d_model
    }

    pub fn rank(&self, d_model: usize) -> usize {
        if self.dt_rank == 0 { d_model.div_ceil(16) } else { self.dt_rank }
    }
}

/// PyTorch's default `Linear` initialisation, U(±1/√d_in), which `mamba_ssm` keeps for every
/// projection (it re-initialises only `out_proj`, scaled for depth).
pub fn torch_default_linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    scale: f64,
    rng: &mut Rng,
    device: &B::Device,
) -> Linear<B> {
    let bound = scale / (d_in as f64).sqrt();
    Linear {
        weight: param([d_in, d_out], device, || ((rng.uniform() * 2.0 - 1.0) * bound) as f32),
        bias: bias.then(|| param([d_out], device, || 0.0)),
        bf16: false,
    }
}

/// The bias that makes `softplus(bias)` a step size drawn log-uniformly from
/// `[dt_min, dt_max]` (floored at `floor`): `dt + ln(−expm1(−dt))`, the inverse of softplus.
pub fn dt_bias_init(rng: &mut Rng, min: f64, max: f64, floor: f64) -> f32 {
    let dt = (rng.uniform() * (max.ln() - min.ln()) + min.ln()).exp().max(floor);
    (dt + (-(-dt).exp_m1()).ln()) as f32
}

impl<B: Backend> Mamba<B> {
    /// `mamba_ssm`'s initialisation; `out_scale` divides `out_proj` by √(residuals per layer ·
    /// layers), as its `_init_weights(rescale_prenorm_residual=True)` does.
    pub fn new(cfg: &ModelConfig, out_scale: f64, rng: &mut Rng, device: &B::Device) -> Self {
        let c = &cfg.mamba;
        let (d, di, n, r) = (cfg.d_model, c.inner(cfg.d_model), c.d_state, c.rank(cfg.d_model));
        let in_proj = torch_default_linear(d, 2 * di, c.bias, 1.0, rng, device);
        let conv1d = CausalConv1d::new(di, c.d_conv, c.conv_bias, rng, device);
        let x_proj = torch_default_linear(di, r + 2 * n, false, 1.0, rng, device);
        // dt_proj: weight U(±dt_rank^−½) ("dt_init = random", dt_scale = 1), bias so that the
        // initial Δ spans [dt_min, dt_max].
        let std_dt = 1.0 / (r as f64).sqrt();
        let dt_proj = Linear {
            weight: param([r, di], device, || ((rng.uniform() * 2.0 - 1.0) * std_dt) as f32),
            bias: Some(param([di], device, || dt_bias_init(rng, c.dt_min, c.dt_max, c.dt_init_floor))),
            bf16: false,
        };
        // S4D-real: A[:, i] = −(i + 1) for every channel.
        let mut i = 0;
        let a_log = param([di, n], device, || {
            i += 1;
            (((i - 1) % n + 1) as f32).ln()
        });
        Self {
            in_proj,
            conv1d,
            x_proj,
            dt_proj,
            a_log,
            d_skip: param([di], device, || 1.0),
            out_proj: torch_default_linear(di, d, c.bias, out_scale, rng, device),
            inner_norms: c.inner_norms.then(|| InnerNorms {
                dt: Norm::new(NormKind::Rms, r, false, cfg.norm_eps, device),
                b: Norm::new(NormKind::Rms, n, false, cfg.norm_eps, device),
                c: Norm::new(NormKind::Rms, n, false, cfg.norm_eps, device),
            }),
            dt_rank: r,
            d_state: n,
            chunk_size: c.chunk_size,
        }
    }

    pub fn linears_mut(&mut self) -> [&mut Linear<B>; 4] {
        [&mut self.in_proj, &mut self.x_proj, &mut self.dt_proj, &mut self.out_proj]
    }

    fn inner(&self) -> usize {
        self.d_skip.dims()[0]
    }

    /// Full-sequence forward from a zero state (training, evaluation): the fused scan kernel
    /// where the backend has one, the chunked scan of plain ops otherwise.
    ///
    /// # Shapes
    /// - u: `[b, t, d]` → `[b, t, d]`
    pub fn forward(&self, u: Tensor<B, 3>) -> Tensor<B, 3> {
        let (inputs, z) = self.scan_inputs(u, &mut MambaState::empty());
        let x = inputs.x.clone();
        let y = kernels::selective_scan(inputs, self.chunk_size);
        self.output(y, x, z)
    }

    /// Processes new tokens after those summarised by `state`, and updates it. One token goes
    /// through the O(1) step form; longer inputs (a prompt) through the chunked scan.
    pub fn forward_step(&self, u: Tensor<B, 3>, state: &mut MambaState<B>) -> Tensor<B, 3> {
        if u.dims()[1] == 1 {
            return self.decode_one(u, state);
        }
        self.forward_with(u, state, self.algorithm())
    }

    fn algorithm(&self) -> ScanAlgorithm {
        ScanAlgorithm::Chunked(self.chunk_size)
    }

    /// The forward pass with a chosen scan algorithm, from (and updating) `state`.
    pub fn forward_with(
        &self,
        u: Tensor<B, 3>,
        state: &mut MambaState<B>,
        algorithm: ScanAlgorithm,
    ) -> Tensor<B, 3> {
        let (inputs, z) = self.scan_inputs(u, state);
        let x = inputs.x.clone();
        let (y, h) = selective_scan::scan(inputs, state.ssm.take(), algorithm);
        state.ssm = Some(h);
        self.output(y, x, z)
    }

    /// One token: the convolution and the scan each advance by a single step.
    fn decode_one(&self, u: Tensor<B, 3>, state: &mut MambaState<B>) -> Tensor<B, 3> {
        let [b, _, _] = u.dims();
        let (di, n) = (self.inner(), self.d_state);
        let (s, z) = self.scan_inputs(u, state);
        let one = |v: Tensor<B, 3>| v.squeeze_dim::<2>(1);
        let h = state.ssm.take().unwrap_or_else(|| Tensor::zeros([b, di, n], (&s.x.device(), s.x.dtype())));
        let (y, h) = selective_scan::step(one(s.x.clone()), one(s.delta), s.a, one(s.b), one(s.c), h);
        state.ssm = Some(h);
        self.output(y.reshape([b, 1, di]), s.x, z)
    }

    /// Everything before the scan: projections, convolution (advancing `state.conv`) and Δ.
    /// Returns the scan's inputs and the gate `z` (`[b, t, di]`).
    fn scan_inputs(&self, u: Tensor<B, 3>, state: &mut MambaState<B>) -> (ScanInputs<B>, Tensor<B, 3>) {
        let (di, n, r) = (self.inner(), self.d_state, self.dt_rank);
        let xz = self.in_proj.forward(u);
        let (x, z) = (xz.clone().narrow(2, 0, di), xz.narrow(2, di, di));
        let (x, history) = self.conv1d.forward(x, state.conv.take());
        state.conv = Some(history);
        let x = silu(x);
        let dbc = self.x_proj.forward(x.clone()); // [b, t, r + 2n]
        let (dt, b, c) = (dbc.clone().narrow(2, 0, r), dbc.clone().narrow(2, r, n), dbc.narrow(2, r + n, n));
        let (dt, b, c) = match &self.inner_norms {
            Some(norms) => (norms.dt.forward(dt), norms.b.forward(b), norms.c.forward(c)),
            None => (dt, b, c),
        };
        let delta = softplus(self.dt_proj.forward(dt));
        (ScanInputs { x, delta, a: self.a(), b, c }, z)
    }

    /// `out_proj((y + D·x) · silu(z))`.
    fn output(&self, y: Tensor<B, 3>, x: Tensor<B, 3>, z: Tensor<B, 3>) -> Tensor<B, 3> {
        let y = y + x * self.d_skip.val().reshape([1, 1, self.inner()]);
        self.out_proj.forward(y * silu(z))
    }

    fn a(&self) -> Tensor<B, 2> {
        self.a_log.val().exp().neg()
    }
}

impl<B: Backend> SequenceMixer<B> for Mamba<B> {
    type State = MambaState<B>;

    fn build(
        cfg: &ModelConfig,
        _kind: MixerKind,
        resid_scale: f64,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Self {
        Mamba::new(cfg, resid_scale, rng, device)
    }

    fn kind(&self) -> MixerKind {
        MixerKind::Mamba
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        Mamba::forward(self, x)
    }

    fn forward_step(&self, x: Tensor<B, 3>, state: &mut MambaState<B>) -> Tensor<B, 3> {
        Mamba::forward_step(self, x, state)
    }

    fn empty_state(&self) -> MambaState<B> {
        MambaState::empty()
    }

    fn stack_states(states: Vec<MambaState<B>>) -> MambaState<B> {
        let (conv, ssm): (Vec<_>, Vec<_>) = states.into_iter().map(|s| (s.conv, s.ssm)).unzip();
        MambaState { conv: cat_rows(conv), ssm: cat_rows(ssm) }
    }

    fn select_states(state: MambaState<B>, rows: &[usize]) -> MambaState<B> {
        MambaState { conv: select_rows(state.conv, rows), ssm: select_rows(state.ssm, rows) }
    }

    fn state_bytes(state: &MambaState<B>) -> usize {
        tensor_bytes(&state.conv) + tensor_bytes(&state.ssm)
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        Mamba::linears_mut(self).into_iter().collect()
    }
}

/// Mamba's analytic side, from the config alone.
pub struct Spec;

impl MixerSpec for Spec {
    fn validate(cfg: &ModelConfig, _kind: MixerKind) -> anyhow::Result<()> {
        let c = &cfg.mamba;
        check_conv_width("model.mamba.d_conv", c.d_conv)?;
        must_be_positive(&[("model.mamba.d_state", c.d_state), ("model.mamba.expand", c.expand)])?;
        check_dt_range("model.mamba", c.dt_min, c.dt_max, c.dt_init_floor)
    }

    /// in_proj, x_proj, dt_proj and out_proj; their biases, the conv taps and bias, A_log, D, and
    /// Jamba's inner norms.
    fn sizes(cfg: &ModelConfig) -> Vec<f64> {
        let c = &cfg.mamba;
        [c.expand * cfg.d_model, c.d_state, c.d_conv, c.dt_rank].map(|x| x as f64).to_vec()
    }

    fn params(cfg: &ModelConfig, _kind: MixerKind) -> LayerParams {
        let (c, d) = (&cfg.mamba, cfg.d_model);
        let (di, n, r, bias) = (c.inner(d), c.d_state, c.rank(d), usize::from(c.bias));
        LayerParams {
            matmul: d * 2 * di + di * (r + 2 * n) + r * di + di * d,
            other: bias * (2 * di + d)
                + di
                + di * c.d_conv
                + usize::from(c.conv_bias) * di
                + di * n
                + di
                + usize::from(c.inner_norms) * (r + 2 * n),
            ..Default::default()
        }
    }

    /// The convolution `2·di·k` and the scan, ~9 FLOPs per state entry (exp(ΔA), ΔBx, the
    /// multiply-add update, the C readout): `9·di·n`.
    fn flops(cfg: &ModelConfig, _kind: MixerKind, _seq_len: usize) -> f64 {
        let c = &cfg.mamba;
        let di = c.inner(cfg.d_model) as f64;
        2.0 * di * c.d_conv as f64 + 9.0 * di * c.d_state as f64
    }

    /// The SSM state and the convolution's history, fixed.
    fn state_bytes(cfg: &ModelConfig, _kind: MixerKind) -> (usize, usize) {
        let c = &cfg.mamba;
        let di = c.inner(cfg.d_model);
        (0, 4 * (di * c.d_state + di * (c.d_conv - 1)))
    }

    /// N, the numbers each channel remembers (Hymba's SSM branch reads the same key).
    fn state_knob(cfg: &ModelConfig, _kind: MixerKind) -> Option<StateKnob> {
        Some(StateKnob {
            key: "model.mamba.d_state",
            value: cfg.mamba.d_state,
            range: (1, 256),
            set: |c, v| c.mamba.d_state = v,
        })
    }
}
