//! Fused kernels, each beside the plain-ops twin it is tested against (llm.c's discipline).
//!
//! The model is written against [`Backend`]: burn's backend trait plus the fused operations
//! archlab knows. Each operation's default body is its plain-ops twin, so a backend implements
//! the trait with no code (NdArray, the f64 oracle of the tests). The CPU backend (Flex)
//! overrides an operation with a host loop where one beats the chain of tensor ops (`cpu.rs`;
//! the loops themselves are the `archlab-cpu-loops` crate, `crates/cpu-loops`). The CubeCL
//! backends (CUDA, wgpu) override it with a kernel (`cube.rs`; each `*_kernel.rs` holds its
//! kernels and, below them, their launchers), burn's fusion backend forwards it to the backend
//! it wraps as one custom operation (`fusion.rs`), and `Autodiff<B>` wraps the kernel in a
//! custom backward node when `B` has one (`autodiff.rs`), and otherwise differentiates the
//! twin.
//!
//! | operation | kernel | twin (the test oracle) |
//! |---|---|---|
//! | Mamba-1 selective scan, forward + backward | `scan_kernel.rs`; on the CPU `crates/cpu-loops/src/scan.rs` | [`selective_scan::reference`] |
//! | causal / sliding-window GQA attention, forward + backward (FlashAttention-2) | `attention_kernel.rs`; on the CPU `crates/cpu-loops/src/attention.rs` | [`attention::causal_attention`] |
//! | rotary position embedding, forward + backward (CPU only: on a GPU burn's fusion joins its element-wise ops) | `crates/cpu-loops/src/rope.rs` | [`rope::rope`] |
//! | cross-entropy over the vocabulary, forward + backward, no fp32 logits | `cross_entropy_kernel.rs`; on the CPU `crates/cpu-loops/src/cross_entropy.rs` | [`cross_entropy::token_nll`] |
//! | RMSNorm, forward + backward | `rms_norm_kernel.rs`; on the CPU `crates/cpu-loops/src/norm.rs` | [`norm::rms_norm`] |
//! | residual add + RMSNorm, forward + backward | `rms_norm_kernel.rs`; on the CPU `crates/cpu-loops/src/norm.rs` | `x + delta`, then [`norm::rms_norm`] |
//! | Mamba-2's gated RMSNorm, forward + backward | `gated_rms_norm_kernel.rs`; on the CPU `crates/cpu-loops/src/norm.rs` | [`norm::gated_rms_norm`] |
//! | Mamba's causal depthwise convolution, forward + backward | `conv_kernel.rs`; on the CPU `crates/cpu-loops/src/conv.rs` | [`conv::causal_conv`] |
//! | Mamba-2 SSD state passing between chunks, forward + backward | `state_passing_kernel.rs` | [`state_passing::pass_states`] |
//! | SiLU `x · σ(x)`, forward + backward (CPU only: a vectorised `exp` instead of libm's scalar `tanhf`) | `crates/cpu-loops/src/activation.rs` | [`activation::silu`] |
//! | Mamba-2's whole SSD scan as one recurrence, forward + backward (CPU only: on a GPU the chunked algorithm's matmuls win) | `crates/cpu-loops/src/ssd_scan.rs` | [`crate::model::ssd::chunked`], the algorithm GPUs run (oracle: [`crate::model::ssd::reference`]) |
//! | MoE routing: top-k experts and each assignment's place in its expert's buffer | `moe_route_kernel.rs` | [`moe_route::HostRoute`] |
//! | (Gated) DeltaNet's intra-chunk UT transform, `A`, `(I + A)⁻¹` and `[U \| W]`, forward + backward | `ut_transform_kernel.rs`; on the CPU `crates/cpu-loops/src/ut_transform.rs` | [`ut_transform::ut_transform`] |
//! | (Gated) DeltaNet's pass over chunks (state, outputs), forward + backward (CPU only: a GPU runs the twin's batched matmuls) | `crates/cpu-loops/src/delta_chunks.rs` | [`delta_chunks::pass_chunks`] |
//!
//! Each twin is a file of its own beside its kernel (`attention.rs` beside
//! `attention_kernel.rs`, …) and uses nothing of `model` but its pointwise activations: the
//! model calls the fused operations through the functions below, and the kernels' tests call
//! the twins directly.
//!
//! Matmuls are burn's (fused and autotuned) unless `--matmul` forces one CubeCL strategy
//! (`matmul_strategy.rs`); [`matmul`] is where the model's matmuls take that turn.
//!
//! `tests/all/kernels.rs` checks every kernel against its twin on random inputs of awkward sizes,
//! values and gradients, on every CubeCL device it finds: CUDA when a GPU is present, and
//! wgpu on any Vulkan driver (on CI, Mesa's software driver lavapipe).

pub mod activation;
pub mod attention;
#[cfg(feature = "cube-kernels")]
pub mod attention_kernel;
mod autodiff;
pub mod conv;
#[cfg(feature = "cube-kernels")]
pub mod conv_kernel;
mod cpu;
pub mod cross_entropy;
#[cfg(feature = "cube-kernels")]
pub mod cross_entropy_kernel;
#[cfg(feature = "cube-kernels")]
mod cube;
pub mod delta_chunks;
#[cfg(feature = "cube-kernels")]
mod fusion;
#[cfg(feature = "cube-kernels")]
pub mod gated_rms_norm_kernel;
#[cfg(feature = "cube-kernels")]
mod launch;
#[cfg(feature = "cube-kernels")]
pub mod matmul_strategy;
pub mod moe_route;
#[cfg(feature = "cube-kernels")]
pub mod moe_route_kernel;
pub mod norm;
#[cfg(feature = "cube-kernels")]
mod reduce;
#[cfg(feature = "cube-kernels")]
pub mod rms_norm_kernel;
pub mod rope;
#[cfg(feature = "cube-kernels")]
pub mod scan_kernel;
pub mod selective_scan;
pub mod state_passing;
#[cfg(feature = "cube-kernels")]
pub mod state_passing_kernel;
pub mod tensors;
/// The CPU backend's host loops (the `archlab-cpu-loops` crate, compiled optimised).
pub use archlab_cpu_loops::{
    activation as activation_cpu, attention as attention_cpu, conv as conv_cpu,
    cross_entropy as cross_entropy_cpu, delta_chunks as delta_chunks_cpu, matmul as matmul_cpu,
    norm as norm_cpu, rope as rope_cpu, scan as scan_cpu, ssd_scan as ssd_scan_cpu,
    ut_transform as ut_transform_cpu,
};
pub mod tri_inverse;
pub mod ut_transform;
#[cfg(feature = "cube-kernels")]
pub mod ut_transform_kernel;

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{Int, Tensor, TensorMetadata, TensorPrimitive};

use crate::model::ssd::SsdInputs;
use attention::causal_attention;
use conv::causal_conv as plain_causal_conv_3d;
use cross_entropy::token_nll;
use moe_route::HostRoute;
use norm::{gated_rms_norm as plain_gated_rms_norm_3d, rms_norm as plain_rms_norm_3d};
use selective_scan::ScanInputs;
use state_passing::pass_states;
use tensors::int_tensor;

/// burn's backend with archlab's fused operations. Call the operations through the
/// tensor-level functions below ([`selective_scan`]), not directly.
pub trait Backend: burn::tensor::backend::Backend {
    /// Whether this backend runs [`Backend::selective_scan`] as a fused kernel, and so also
    /// implements [`Backend::selective_scan_saving`] and [`Backend::selective_scan_backward`].
    const FUSED_SCAN: bool = false;

    /// Mamba-1's selective scan from a zero state: `y` (`[b, t, d]`) for the operands' contract
    /// in [`ScanInputs`]. `chunk` is the plain-ops twin's chunk length (0: ⌈√t⌉); kernels
    /// choose their own.
    fn selective_scan(s: ScanOperands<Self>, chunk: usize) -> FloatTensor<Self> {
        plain_selective_scan::<Self>(s, chunk)
    }

    /// The kernel's forward that also returns the state checkpoints its backward needs.
    /// Only for backends with `FUSED_SCAN`.
    fn selective_scan_saving(_s: ScanOperands<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        no_kernel("selective_scan_saving")
    }

    /// The kernel's backward: gradients of the five operands given `dy`. Only for backends
    /// with `FUSED_SCAN`.
    fn selective_scan_backward(
        _s: ScanOperands<Self>,
        _checkpoints: FloatTensor<Self>,
        _dy: FloatTensor<Self>,
    ) -> ScanOperands<Self> {
        no_kernel("selective_scan_backward")
    }

    /// Whether this backend runs [`Backend::causal_attention`] as a fused kernel, and so also
    /// implements [`Backend::causal_attention_saving`] and [`Backend::causal_attention_backward`].
    const FUSED_ATTENTION: bool = false;

    /// Causal attention over a whole sequence (no cache), sliding-window when `window > 0`:
    /// `q` `[b, h, t, hd]`, `k`, `v` `[b, kv, t, hd]` with `kv` dividing `h` → `[b, h, t, hd]`.
    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        window: usize,
    ) -> FloatTensor<Self> {
        plain_causal_attention::<Self>(q, k, v, window)
    }

    /// The kernel's forward that also returns each row's log-sum-exp (`[b, h, t]`, f32) for
    /// its backward. Only for backends with `FUSED_ATTENTION`.
    fn causal_attention_saving(
        _q: FloatTensor<Self>,
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _window: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        no_kernel("attention_saving")
    }

    /// The kernel's backward: `[dq, dk, dv]`. Only for backends with `FUSED_ATTENTION`.
    #[allow(clippy::too_many_arguments)]
    fn causal_attention_backward(
        _q: FloatTensor<Self>,
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _out: FloatTensor<Self>,
        _lse: FloatTensor<Self>,
        _d_out: FloatTensor<Self>,
        _window: usize,
    ) -> [FloatTensor<Self>; 3] {
        no_kernel("attention_backward")
    }

    /// `x` with its values stored contiguously in row-major order; `x` as it is where it already
    /// is, and on backends whose own layout copies are fast (the default). The CPU backend
    /// copies whole runs along the last axis, where burn-flex walks a view of more than two
    /// (merged) axes element by element, as it does in every element-wise op on such a view:
    /// one fast copy then spares the ops after it. No autodiff node: the gradient of a copy is
    /// the gradient itself.
    fn contiguous(x: FloatTensor<Self>) -> FloatTensor<Self> {
        x
    }

    /// Whether this backend runs [`Backend::rope`] as a fused loop, and so also implements
    /// [`Backend::rope_backward`].
    const FUSED_ROPE: bool = false;

    /// Rotary position embedding of `x` (`[b, h, t, hd]`) by the angles whose cosines and sines
    /// are `cos` and `sin` (`[t, r]`, the same positions for every row, `r ≤ hd` even, the two
    /// halves of each row equal as [`crate::model::attention::Rope`] builds them). The tables
    /// are constants: no gradient flows to them.
    fn rope(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        plain_rope::<Self>(x, cos, sin)
    }

    /// The fused backward: `dx` given `dy`, the rotation by the opposite angles. Only for
    /// backends with `FUSED_ROPE`.
    fn rope_backward(
        _dy: FloatTensor<Self>,
        _cos: FloatTensor<Self>,
        _sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        no_kernel("rope_backward")
    }

    /// Whether this backend runs [`Backend::cross_entropy`] as a fused kernel, and so also
    /// implements [`Backend::cross_entropy_saving`] and [`Backend::cross_entropy_backward`].
    const FUSED_CROSS_ENTROPY: bool = false;

    /// Each row's negative log-likelihood of its target: `logits` `[n, vocab]` (any float
    /// dtype), `targets` `[n]` → `[n]`, computed in fp32 (f64 stays f64).
    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        plain_cross_entropy::<Self>(logits, targets)
    }

    /// The kernel's forward that also returns each row's log-sum-exp (`[n]`, f32) for its
    /// backward. Only for backends with `FUSED_CROSS_ENTROPY`.
    fn cross_entropy_saving(
        _logits: FloatTensor<Self>,
        _targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        no_kernel("cross_entropy_saving")
    }

    /// The kernel's backward: the logits' gradient (their dtype) given the rows' `d_nll`.
    /// Only for backends with `FUSED_CROSS_ENTROPY`.
    fn cross_entropy_backward(
        _logits: FloatTensor<Self>,
        _targets: IntTensor<Self>,
        _lse: FloatTensor<Self>,
        _d_nll: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        no_kernel("cross_entropy_backward")
    }

    /// Whether this backend runs [`Backend::rms_norm`] as a fused kernel, and so also
    /// implements [`Backend::rms_norm_saving`] and [`Backend::rms_norm_backward`].
    const FUSED_RMS_NORM: bool = false;

    /// RMSNorm over the last axis: `x` `[b, t, d]`, `weight` `[d]` → `[b, t, d]`.
    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        plain_rms_norm::<Self>(x, weight, eps)
    }

    /// The kernel's forward that also returns each row's `1/rms` (`[b, t]`, f32) for its
    /// backward. Only for backends with `FUSED_RMS_NORM`.
    fn rms_norm_saving(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        no_kernel("rms_norm_saving")
    }

    /// The kernel's backward: `[dx, dweight]`. Only for backends with `FUSED_RMS_NORM`.
    fn rms_norm_backward(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _rstd: FloatTensor<Self>,
        _dy: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2] {
        no_kernel("rms_norm_backward")
    }

    /// The residual add fused with the RMSNorm after it: `[sum, y]` with `sum = residual +
    /// delta` and `y = rms_norm(sum)`; `residual`, `delta` `[b, t, d]`, `weight` `[d]`.
    /// Backends with `FUSED_RMS_NORM` run it as one kernel.
    fn add_rms_norm(
        residual: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> [FloatTensor<Self>; 2] {
        plain_add_rms_norm::<Self>(residual, delta, weight, eps)
    }

    /// The kernel's forward that also returns each row's `1/rms` of the sum: `[sum, y, rstd]`.
    /// Only for backends with `FUSED_RMS_NORM`.
    fn add_rms_norm_saving(
        _residual: FloatTensor<Self>,
        _delta: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _eps: f64,
    ) -> [FloatTensor<Self>; 3] {
        no_kernel("add_rms_norm_saving")
    }

    /// [`Backend::rms_norm_backward`] with `d_x`, the gradient `x` already has from its other
    /// uses, added into the returned `dx`. Only for backends with `FUSED_RMS_NORM`.
    fn rms_norm_backward_accumulate(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _rstd: FloatTensor<Self>,
        _dy: FloatTensor<Self>,
        _d_x: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2] {
        no_kernel("rms_norm_backward_accumulate")
    }

    /// Mamba-2's gated RMSNorm: `rms_norm(y · silu(z))` over groups of `group` channels, times
    /// `weight`; `y`, `z` `[b, t, di]` (`group` divides `di`), `weight` `[di]`. Backends with
    /// `FUSED_RMS_NORM` run it as one kernel.
    fn gated_rms_norm(
        y: FloatTensor<Self>,
        z: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        group: usize,
        eps: f64,
    ) -> FloatTensor<Self> {
        plain_gated_rms_norm::<Self>(y, z, weight, group, eps)
    }

    /// The kernel's forward that also returns each group's `1/rms` (`[b, t, di / group]`, f32)
    /// for its backward: `[out, rstd]`. Only for backends with `FUSED_RMS_NORM`.
    fn gated_rms_norm_saving(
        _y: FloatTensor<Self>,
        _z: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _group: usize,
        _eps: f64,
    ) -> [FloatTensor<Self>; 2] {
        no_kernel("gated_rms_norm_saving")
    }

    /// The kernel's backward: `[dy, dz, dweight]`. Only for backends with `FUSED_RMS_NORM`.
    fn gated_rms_norm_backward(
        _y: FloatTensor<Self>,
        _z: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _rstd: FloatTensor<Self>,
        _d_out: FloatTensor<Self>,
        _group: usize,
    ) -> [FloatTensor<Self>; 3] {
        no_kernel("gated_rms_norm_backward")
    }

    /// Whether this backend runs [`Backend::causal_conv`] as a fused kernel, and so also
    /// implements [`Backend::causal_conv_backward`].
    const FUSED_CAUSAL_CONV: bool = false;

    /// Mamba's causal depthwise convolution from a zero history: `x` `[b, t, ch]`, `weight`
    /// `[ch, k]` (tap `k − 1` on the current step), `bias` `[ch]` → `[b, t, ch]`.
    fn causal_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        plain_causal_conv::<Self>(x, weight, bias)
    }

    /// The kernel's backward: `[dx, dweight, dbias]`. Only for backends with `FUSED_CAUSAL_CONV`.
    fn causal_conv_backward(
        _x: FloatTensor<Self>,
        _weight: FloatTensor<Self>,
        _dy: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        no_kernel("causal_conv_backward")
    }

    /// Whether this backend runs [`Backend::ssd_state_passing`] as a fused kernel, and so also
    /// implements [`Backend::ssd_state_passing_backward`].
    const FUSED_STATE_PASSING: bool = false;

    /// The state entering each chunk of Mamba-2's chunked scan: `states` `[b, nc, h, p, n]`
    /// (each chunk's final state from zero), `decay` `[b, nc, h]` (each chunk's total decay),
    /// `h0` `[b, h, p, n]` (the state before the first chunk) → `[b, nc, h, p, n]`.
    fn ssd_state_passing(
        states: FloatTensor<Self>,
        decay: FloatTensor<Self>,
        h0: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        plain_state_passing::<Self>(states, decay, h0)
    }

    /// The kernel's backward from the forward's output: `[d_states, d_decay, d_h0]`. Only for
    /// backends with `FUSED_STATE_PASSING`.
    fn ssd_state_passing_backward(
        _decay: FloatTensor<Self>,
        _entering: FloatTensor<Self>,
        _d_entering: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        no_kernel("ssd_state_passing_backward")
    }

    /// Whether this backend runs [`Backend::silu`] as a fused loop, and so also implements
    /// [`Backend::silu_backward`].
    const FUSED_SILU: bool = false;

    /// SiLU, `x · σ(x)`, element-wise on a tensor of any shape.
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        plain_silu::<Self>(x)
    }

    /// The fused backward: `dx` given `dy`. Only for backends with `FUSED_SILU`.
    fn silu_backward(_x: FloatTensor<Self>, _dy: FloatTensor<Self>) -> FloatTensor<Self> {
        no_kernel("silu_backward")
    }

    /// Whether this backend runs [`Backend::ssd_scan`] as a fused loop, and so also implements
    /// [`Backend::ssd_scan_saving`] and [`Backend::ssd_scan_backward`].
    const FUSED_SSD_SCAN: bool = false;

    /// Mamba-2's SSD scan from a zero state: `y` (`[b, t, heads, p]`) for the operands'
    /// contract in [`SsdInputs`], in f32. `chunk` is the chunked twin's chunk length; a fused
    /// loop ignores it.
    fn ssd_scan(s: SsdOperands<Self>, chunk: usize) -> FloatTensor<Self> {
        plain_ssd_scan::<Self>(s, chunk)
    }

    /// The fused forward that also returns the state checkpoints its backward needs:
    /// `(y, checkpoints)`. Only for backends with `FUSED_SSD_SCAN`.
    fn ssd_scan_saving(_s: SsdOperands<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        no_kernel("ssd_scan_saving")
    }

    /// The fused backward: gradients of the five operands given `dy`. Only for backends with
    /// `FUSED_SSD_SCAN`.
    fn ssd_scan_backward(
        _s: SsdOperands<Self>,
        _checkpoints: FloatTensor<Self>,
        _dy: FloatTensor<Self>,
    ) -> SsdOperands<Self> {
        no_kernel("ssd_scan_backward")
    }

    /// Whether this backend runs [`Backend::ut_transform`] as a fused operation, and so also
    /// implements [`Backend::ut_transform_saving`] and [`Backend::ut_transform_backward`].
    const FUSED_UT_TRANSFORM: bool = false;

    /// The delta rule's UT transform of every chunk (`ut_transform.rs`): `k` `[n, C, dk]`, `v`
    /// `[n, C, dv]`, `beta`, `cum` `[n, C]` → `[U | W]` `[n, C, dv + dk]`.
    fn ut_transform(
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        cum: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        plain_ut_transform::<Self>(k, v, beta, cum)
    }

    /// The fused forward that also returns each chunk's `T = (I + A)⁻¹` (`[n, C, C]`, f32) for
    /// its backward: `[out, inverse]`. Only for backends with `FUSED_UT_TRANSFORM`.
    fn ut_transform_saving(
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _cum: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2] {
        no_kernel("ut_transform_saving")
    }

    /// The fused backward from the forward's `inverse` and `out`: `[dk, dv, dbeta, dcum]`. Only
    /// for backends with `FUSED_UT_TRANSFORM`.
    #[allow(clippy::too_many_arguments)]
    fn ut_transform_backward(
        _k: FloatTensor<Self>,
        _v: FloatTensor<Self>,
        _beta: FloatTensor<Self>,
        _cum: FloatTensor<Self>,
        _inverse: FloatTensor<Self>,
        _out: FloatTensor<Self>,
        _d_out: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 4] {
        no_kernel("ut_transform_backward")
    }

    /// Whether this backend runs [`Backend::delta_chunks`] as a fused operation, and so also
    /// implements [`Backend::delta_chunks_saving`] and [`Backend::delta_chunks_backward`].
    const FUSED_DELTA_CHUNKS: bool = false;

    /// The chunked delta rule's pass over chunks (`delta_chunks.rs`, operands' shapes in
    /// [`delta_chunks::pass_chunks`]): per (sequence, head), every chunk's output and then the
    /// final state, packed in one `[b, h, nc · C · dv + dk · dv]`.
    fn delta_chunks(x: DeltaChunkOperands<Self>) -> FloatTensor<Self> {
        plain_delta_chunks::<Self>(x)
    }

    /// The fused forward that also returns the state entering each chunk (`[b, h, nc, dk, dv]`,
    /// f32) for its backward: `[out, states]`. Only for backends with `FUSED_DELTA_CHUNKS`.
    fn delta_chunks_saving(_x: DeltaChunkOperands<Self>) -> [FloatTensor<Self>; 2] {
        no_kernel("delta_chunks_saving")
    }

    /// The fused backward from the forward's `states`: the gradients of the seven operands.
    /// Only for backends with `FUSED_DELTA_CHUNKS`.
    fn delta_chunks_backward(
        _x: DeltaChunkOperands<Self>,
        _states: FloatTensor<Self>,
        _d_out: FloatTensor<Self>,
    ) -> DeltaChunkOperands<Self> {
        no_kernel("delta_chunks_backward")
    }

    /// Whether the model's matmuls run [`Backend::matmul`] (as one autodiff node whose backward
    /// runs it too) rather than burn's own: a strategy forced with `--matmul` on the CubeCL
    /// backends (`matmul_strategy.rs`), always on the CPU (`cpu.rs`).
    fn own_matmul() -> bool {
        false
    }

    /// `lhs · rhs` with batch dimensions broadcast, as burn's `float_matmul`; this backend's own
    /// where [`Backend::own_matmul`].
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(lhs, rhs)
    }

    /// Whether this backend routes MoE tokens on the device ([`Backend::moe_route`]).
    const FUSED_MOE_ROUTE: bool = false;

    /// MoE routing without a capacity limit: router `logits` `[n, E]` → int tensors
    /// `[choices [n, k], positions [n · k], counts [E]]` as in [`HostRoute`]. No gradient
    /// flows through it (the choices are discrete; the gate weights are gathered from the
    /// probabilities by the caller).
    fn moe_route(logits: FloatTensor<Self>, top_k: usize) -> [IntTensor<Self>; 3] {
        host_moe_route::<Self>(logits, top_k)
    }
}

/// [`Backend`] for training: an autodiff backend whose inner backend is also a [`Backend`].
pub trait AutodiffBackend: Backend + burn::tensor::backend::AutodiffBackend<InnerBackend: Backend> {}

impl<B> AutodiffBackend for B where B: Backend + burn::tensor::backend::AutodiffBackend<InnerBackend: Backend> {}

impl Backend for burn::backend::NdArray<f32> {}

impl Backend for burn::backend::NdArray<f64> {}

/// The selective scan's operands as backend primitives (see [`ScanInputs`] for shapes). Also
/// the shape of its gradients: one per operand.
#[derive(Clone, Debug)]
pub struct ScanOperands<B: burn::tensor::backend::Backend> {
    pub x: FloatTensor<B>,
    pub delta: FloatTensor<B>,
    pub a: FloatTensor<B>,
    pub b: FloatTensor<B>,
    pub c: FloatTensor<B>,
}

impl<B: burn::tensor::backend::Backend> ScanOperands<B> {
    fn from_inputs(s: ScanInputs<B>) -> Self {
        let p = |t: Tensor<B, 3>| t.into_primitive().tensor();
        Self { x: p(s.x), delta: p(s.delta), a: s.a.into_primitive().tensor(), b: p(s.b), c: p(s.c) }
    }

    fn into_inputs(self) -> ScanInputs<B> {
        let t = |p: FloatTensor<B>| Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(p));
        ScanInputs {
            x: t(self.x),
            delta: t(self.delta),
            a: Tensor::from_primitive(TensorPrimitive::Float(self.a)),
            b: t(self.b),
            c: t(self.c),
        }
    }
}

/// Mamba-1's selective scan from a zero state, fused where the backend has a kernel; `y` is
/// `[b, t, d]`. The final state is not returned: decoding and prefill use
/// [`selective_scan::scan`], which takes and returns it.
pub fn selective_scan<B: Backend>(inputs: ScanInputs<B>, chunk: usize) -> Tensor<B, 3> {
    let y = B::selective_scan(ScanOperands::from_inputs(inputs), chunk);
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// The plain-ops twin of [`Backend::selective_scan`]: the chunked scan of tensor ops.
fn plain_selective_scan<B: burn::tensor::backend::Backend>(
    s: ScanOperands<B>,
    chunk: usize,
) -> FloatTensor<B> {
    let (y, _) = selective_scan::chunked(s.into_inputs(), None, chunk);
    y.into_primitive().tensor()
}

/// Mamba-2's SSD scan's operands as backend primitives (see [`SsdInputs`] for shapes). Also the
/// shape of its gradients: one per operand.
#[derive(Clone, Debug)]
pub struct SsdOperands<B: burn::tensor::backend::Backend> {
    pub x: FloatTensor<B>,
    pub dt: FloatTensor<B>,
    pub a: FloatTensor<B>,
    pub b: FloatTensor<B>,
    pub c: FloatTensor<B>,
}

impl<B: burn::tensor::backend::Backend> SsdOperands<B> {
    fn from_inputs(s: SsdInputs<B>) -> Self {
        let p4 = |t: Tensor<B, 4>| t.into_primitive().tensor();
        Self {
            x: p4(s.x),
            dt: s.dt.into_primitive().tensor(),
            a: s.a.into_primitive().tensor(),
            b: p4(s.b),
            c: p4(s.c),
        }
    }

    fn into_inputs(self) -> SsdInputs<B> {
        let t4 = |p: FloatTensor<B>| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(p));
        SsdInputs {
            x: t4(self.x),
            dt: Tensor::from_primitive(TensorPrimitive::Float(self.dt)),
            a: Tensor::from_primitive(TensorPrimitive::Float(self.a)),
            b: t4(self.b),
            c: t4(self.c),
        }
    }
}

/// Mamba-2's SSD scan from a zero state, as one fused loop where the backend has one (the CPU)
/// and as the chunked SSD algorithm otherwise; `y` is `[b, t, heads, p]`. The final state is not
/// returned: prefill uses [`crate::model::ssd::chunked`], which takes and returns it.
pub fn ssd_scan<B: Backend>(inputs: SsdInputs<B>, chunk: usize) -> Tensor<B, 4> {
    let y = B::ssd_scan(SsdOperands::from_inputs(inputs), chunk);
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// The plain-ops twin of [`Backend::ssd_scan`]: the chunked SSD algorithm from a zero state.
fn plain_ssd_scan<B: Backend>(s: SsdOperands<B>, chunk: usize) -> FloatTensor<B> {
    let (y, _) = crate::model::ssd::chunked(s.into_inputs(), None, chunk, false);
    y.into_primitive().tensor()
}

/// The environment variable that carries `--matmul` (and hands it to `bench`'s child
/// processes).
pub const MATMUL_ENV: &str = "ARCHLAB_MATMUL";

/// What `--matmul` calls burn's own (fused, autotuned) matmul, the default.
pub const AUTOTUNE_MATMUL: &str = "autotune";

/// Routes the models' matmuls through the CubeCL strategy `name` (`--matmul`), or through
/// burn's own for `autotune`. A name that is not a strategy is an error listing the names.
pub fn select_matmul(name: &str) -> anyhow::Result<()> {
    #[cfg(feature = "cube-kernels")]
    return matmul_strategy::force(name);
    #[cfg(not(feature = "cube-kernels"))]
    match name {
        AUTOTUNE_MATMUL => Ok(()),
        _ => anyhow::bail!(
            "--matmul {name}: this archlab was built without CubeCL backends; rebuild with \
             `--features cuda` or `--features wgpu`, or leave --matmul out"
        ),
    }
}

/// The `--matmul` choice this process runs with: a strategy's name, or `autotune`.
pub fn matmul_choice() -> String {
    #[cfg(feature = "cube-kernels")]
    if let Some(strategy) = matmul_strategy::forced() {
        return strategy.to_string();
    }
    AUTOTUNE_MATMUL.to_string()
}

/// `a · b` (batch dimensions broadcast): burn's matmul (fused, autotuned), or the CubeCL
/// strategy forced with `--matmul` where one is. Every matmul of the model's layers goes
/// through here ([`crate::model::layers::matmul`]).
pub fn matmul<B: Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    if !B::own_matmul() {
        return a.matmul(b);
    }
    let out = B::matmul(a.into_primitive().tensor(), b.into_primitive().tensor());
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// Causal attention (sliding-window when `window > 0`) over a whole sequence, fused where the
/// backend has a kernel. Shapes as in [`Backend::causal_attention`].
pub fn attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    window: usize,
) -> Tensor<B, 4> {
    let p = |t: Tensor<B, 4>| t.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::causal_attention(p(q), p(k), p(v), window)))
}

/// The plain-ops twin of [`Backend::causal_attention`]: the masked softmax of tensor ops.
fn plain_causal_attention<B: burn::tensor::backend::Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    window: usize,
) -> FloatTensor<B> {
    let t = |p: FloatTensor<B>| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(p));
    causal_attention(t(q), t(k), t(v), window).into_primitive().tensor()
}

/// Each row's negative log-likelihood of its target (`logits` `[n, vocab]`, `targets` `[n]` →
/// `[n]`), fused where the backend has a kernel. Under bf16 the logits are read as they are:
/// no fp32 copy of them is made.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 1, Int>) -> Tensor<B, 1> {
    let nll = B::cross_entropy(logits.into_primitive().tensor(), targets.into_primitive());
    Tensor::from_primitive(TensorPrimitive::Float(nll))
}

/// The plain-ops twin of [`Backend::cross_entropy`]: fp32 log-softmax and a gather.
fn plain_cross_entropy<B: burn::tensor::backend::Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
) -> FloatTensor<B> {
    let logits = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(logits));
    token_nll(logits, Tensor::from_primitive(targets)).into_primitive().tensor()
}

/// RMSNorm over the last axis (`x` `[b, t, d]`, `weight` `[d]`), fused where the backend has
/// a kernel.
pub fn rms_norm<B: Backend>(x: Tensor<B, 3>, weight: Tensor<B, 1>, eps: f64) -> Tensor<B, 3> {
    let y = B::rms_norm(x.into_primitive().tensor(), weight.into_primitive().tensor(), eps);
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// The plain-ops twin of [`Backend::rms_norm`].
fn plain_rms_norm<B: burn::tensor::backend::Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let x = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(x));
    let weight = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(weight));
    plain_rms_norm_3d(x, weight, eps).into_primitive().tensor()
}

/// The residual add and the RMSNorm after it (`residual`, `delta` `[b, t, d]`, `weight` `[d]`):
/// `(residual + delta, rms_norm(residual + delta))`, one kernel where the backend has the fused
/// RMSNorm.
pub fn add_rms_norm<B: Backend>(
    residual: Tensor<B, 3>,
    delta: Tensor<B, 3>,
    weight: Tensor<B, 1>,
    eps: f64,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let p = |t: Tensor<B, 3>| t.into_primitive().tensor();
    let [sum, y] = B::add_rms_norm(p(residual), p(delta), weight.into_primitive().tensor(), eps);
    let t = |p: FloatTensor<B>| Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(p));
    (t(sum), t(y))
}

/// The plain-ops twin of [`Backend::add_rms_norm`]: an add, then the RMSNorm twin.
fn plain_add_rms_norm<B: burn::tensor::backend::Backend>(
    residual: FloatTensor<B>,
    delta: FloatTensor<B>,
    weight: FloatTensor<B>,
    eps: f64,
) -> [FloatTensor<B>; 2] {
    let t = |p: FloatTensor<B>| Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(p));
    let sum = t(residual) + t(delta);
    let weight = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(weight));
    let y = plain_rms_norm_3d(sum.clone(), weight, eps);
    [sum.into_primitive().tensor(), y.into_primitive().tensor()]
}

/// Mamba-2's gated RMSNorm (shapes as in [`Backend::gated_rms_norm`]), one kernel where the
/// backend has the fused RMSNorm.
pub fn gated_rms_norm<B: Backend>(
    y: Tensor<B, 3>,
    z: Tensor<B, 3>,
    weight: Tensor<B, 1>,
    group: usize,
    eps: f64,
) -> Tensor<B, 3> {
    let p = |t: Tensor<B, 3>| t.into_primitive().tensor();
    let out = B::gated_rms_norm(p(y), p(z), weight.into_primitive().tensor(), group, eps);
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The plain-ops twin of [`Backend::gated_rms_norm`].
fn plain_gated_rms_norm<B: burn::tensor::backend::Backend>(
    y: FloatTensor<B>,
    z: FloatTensor<B>,
    weight: FloatTensor<B>,
    group: usize,
    eps: f64,
) -> FloatTensor<B> {
    let t = |p: FloatTensor<B>| Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(p));
    let weight = Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(weight));
    plain_gated_rms_norm_3d(t(y), t(z), weight, group, eps).into_primitive().tensor()
}

/// `x` stored contiguously (see [`Backend::contiguous`]).
pub fn contiguous<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::contiguous(x.into_primitive().tensor())))
}

/// Rotary position embedding (shapes as in [`Backend::rope`]), fused where the backend has a
/// loop (the CPU).
pub fn rope<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 2>, sin: Tensor<B, 2>) -> Tensor<B, 4> {
    let p = |t: Tensor<B, 2>| t.into_primitive().tensor();
    Tensor::from_primitive(TensorPrimitive::Float(B::rope(x.into_primitive().tensor(), p(cos), p(sin))))
}

/// The plain-ops twin of [`Backend::rope`].
fn plain_rope<B: burn::tensor::backend::Backend>(
    x: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
) -> FloatTensor<B> {
    let table =
        |p: FloatTensor<B>| Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(p)).unsqueeze::<4>();
    let x = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
    rope::rope(x, table(cos), table(sin)).into_primitive().tensor()
}

/// SiLU, `x · σ(x)`, fused where the backend has a loop (the CPU).
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::silu(x.into_primitive().tensor())))
}

/// The plain-ops twin of [`Backend::silu`] ([`activation::silu`] on the flattened tensor).
fn plain_silu<B: burn::tensor::backend::Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let shape = x.shape();
    let flat = B::float_reshape(x, [shape.num_elements()].into());
    let y = activation::silu(Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(flat)));
    B::float_reshape(y.into_primitive().tensor(), shape)
}

/// Mamba's causal depthwise convolution from a zero history (shapes as in
/// [`Backend::causal_conv`]), fused where the backend has a kernel.
pub fn causal_conv<B: Backend>(x: Tensor<B, 3>, weight: Tensor<B, 2>, bias: Tensor<B, 1>) -> Tensor<B, 3> {
    let y = B::causal_conv(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        bias.into_primitive().tensor(),
    );
    Tensor::from_primitive(TensorPrimitive::Float(y))
}

/// The plain-ops twin of [`Backend::causal_conv`].
fn plain_causal_conv<B: burn::tensor::backend::Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
) -> FloatTensor<B> {
    let y = plain_causal_conv_3d(
        Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(x)),
        Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(weight)),
        Tensor::<B, 1>::from_primitive(TensorPrimitive::Float(bias)),
    );
    y.into_primitive().tensor()
}

/// The states entering each chunk of Mamba-2's chunked scan (shapes as in
/// [`Backend::ssd_state_passing`]), fused where the backend has a kernel.
pub fn ssd_state_passing<B: Backend>(
    states: Tensor<B, 5>,
    decay: Tensor<B, 3>,
    h0: Tensor<B, 4>,
) -> Tensor<B, 5> {
    let entering = B::ssd_state_passing(
        states.into_primitive().tensor(),
        decay.into_primitive().tensor(),
        h0.into_primitive().tensor(),
    );
    Tensor::from_primitive(TensorPrimitive::Float(entering))
}

/// The plain-ops twin of [`Backend::ssd_state_passing`].
fn plain_state_passing<B: burn::tensor::backend::Backend>(
    states: FloatTensor<B>,
    decay: FloatTensor<B>,
    h0: FloatTensor<B>,
) -> FloatTensor<B> {
    let entering = pass_states(
        Tensor::<B, 5>::from_primitive(TensorPrimitive::Float(states)),
        Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(decay)),
        Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(h0)),
    );
    entering.into_primitive().tensor()
}

/// The delta rule's UT transform of every chunk (shapes as in [`Backend::ut_transform`]), fused
/// where the backend has a kernel or a host loop.
pub fn ut_transform<B: Backend>(
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    beta: Tensor<B, 2>,
    cum: Tensor<B, 2>,
) -> Tensor<B, 3> {
    let out = B::ut_transform(
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
        beta.into_primitive().tensor(),
        cum.into_primitive().tensor(),
    );
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

/// The plain-ops twin of [`Backend::ut_transform`].
fn plain_ut_transform<B: Backend>(
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    beta: FloatTensor<B>,
    cum: FloatTensor<B>,
) -> FloatTensor<B> {
    let t3 = |p| Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(p));
    let t2 = |p| Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(p));
    ut_transform::ut_transform(t3(k), t3(v), t2(beta), t2(cum)).into_primitive().tensor()
}

/// The chunked delta rule's operands as backend primitives (shapes in
/// [`delta_chunks::pass_chunks`]). Also the shape of its gradients: one per operand.
#[derive(Clone, Debug)]
pub struct DeltaChunkOperands<B: burn::tensor::backend::Backend> {
    pub u: FloatTensor<B>,
    pub w: FloatTensor<B>,
    pub q: FloatTensor<B>,
    pub k: FloatTensor<B>,
    pub attn: FloatTensor<B>,
    pub decay: FloatTensor<B>,
    pub s0: FloatTensor<B>,
}

/// The chunked delta rule's pass over chunks (shapes in [`delta_chunks::pass_chunks`]): the
/// backend's host loop where it has one, else the plain-ops twin itself.
#[allow(clippy::too_many_arguments)]
pub fn delta_chunks<B: Backend>(
    u: Tensor<B, 5>,
    w: Tensor<B, 5>,
    q: Tensor<B, 5>,
    k: Tensor<B, 5>,
    attn: Tensor<B, 5>,
    decay: Tensor<B, 3>,
    s0: Tensor<B, 4>,
) -> (Tensor<B, 5>, Tensor<B, 4>) {
    if !B::FUSED_DELTA_CHUNKS {
        return delta_chunks::pass_chunks(u, w, q, k, attn, decay, s0);
    }
    let [b, nc, h, c, dv] = u.dims();
    let dk = w.dims()[4];
    let p5 = |t: Tensor<B, 5>| t.into_primitive().tensor();
    let out = B::delta_chunks(DeltaChunkOperands {
        u: p5(u),
        w: p5(w),
        q: p5(q),
        k: p5(k),
        attn: p5(attn),
        decay: decay.into_primitive().tensor(),
        s0: s0.into_primitive().tensor(),
    });
    let out = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(out));
    unpack_delta_chunks(out, [b, nc, h, c, dv], dk)
}

/// `(O [b, nc, h, C, dv], S [b, h, dk, dv])` from the packed `[b, h, nc · C · dv + dk · dv]`.
fn unpack_delta_chunks<B: Backend>(
    out: Tensor<B, 3>,
    [b, nc, h, c, dv]: [usize; 5],
    dk: usize,
) -> (Tensor<B, 5>, Tensor<B, 4>) {
    let o = contiguous(out.clone().narrow(2, 0, nc * c * dv)).reshape([b, h, nc, c, dv]).swap_dims(1, 2);
    let s = contiguous(out.narrow(2, nc * c * dv, dk * dv)).reshape([b, h, dk, dv]);
    (o, s)
}

/// The plain-ops twin of [`Backend::delta_chunks`], packed as the host loop packs its results.
fn plain_delta_chunks<B: Backend>(x: DeltaChunkOperands<B>) -> FloatTensor<B> {
    let t5 = |p| Tensor::<B, 5>::from_primitive(TensorPrimitive::Float(p));
    let decay = Tensor::<B, 3>::from_primitive(TensorPrimitive::Float(x.decay));
    let s0 = Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x.s0));
    let (o, s) = delta_chunks::pass_chunks(t5(x.u), t5(x.w), t5(x.q), t5(x.k), t5(x.attn), decay, s0);
    let [b, nc, h, c, dv] = o.dims();
    let dk = s.dims()[2];
    let o = o.swap_dims(1, 2).reshape([b, h, nc * c * dv]);
    Tensor::cat(vec![o, s.reshape([b, h, dk * dv])], 2).into_primitive().tensor()
}

/// MoE routing (see [`Backend::moe_route`]) on the device where the backend has kernels:
/// `(choices [n, k], positions [n · k], counts [E])`. `logits` is detached.
pub fn moe_route<B: Backend>(
    logits: Tensor<B, 2>,
    top_k: usize,
) -> (Tensor<B, 2, Int>, Tensor<B, 1, Int>, Tensor<B, 1, Int>) {
    let [choices, positions, counts] = B::moe_route(logits.detach().into_primitive().tensor(), top_k);
    (Tensor::from_primitive(choices), Tensor::from_primitive(positions), Tensor::from_primitive(counts))
}

/// The host-side twin of [`Backend::moe_route`]: reads the logits back and routes them with
/// [`HostRoute`] (what the plain path does anyway).
fn host_moe_route<B: burn::tensor::backend::Backend>(
    logits: FloatTensor<B>,
    top_k: usize,
) -> [IntTensor<B>; 3] {
    let logits = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(logits));
    let ([n, e], device) = (logits.dims(), logits.device());
    let values: Vec<f64> = logits.into_data().convert::<f64>().into_vec().expect("float logits");
    let route = HostRoute::new(&values, e, top_k);
    let ints = |v: Vec<usize>| v.into_iter().map(|i| i as i64).collect::<Vec<_>>();
    [
        int_tensor::<B, 2>(ints(route.choices), [n, top_k], &device).into_primitive(),
        int_tensor::<B, 1>(ints(route.positions), [n * top_k], &device).into_primitive(),
        int_tensor::<B, 1>(ints(route.counts), [e], &device).into_primitive(),
    ]
}

fn no_kernel(op: &str) -> ! {
    panic!("{op} is only defined for backends with the fused kernel (the FUSED_* constants)")
}
