//! Fused kernels, each beside the plain-ops twin it is tested against (llm.c's discipline).
//!
//! The model is written against [`Backend`]: burn's backend trait plus the fused operations
//! archlab knows. Each operation's default body is its plain-ops twin, so the CPU backends
//! implement the trait with no code. The CubeCL backends (CUDA, wgpu) override it with a
//! kernel (`cube.rs`), burn's fusion backend forwards it to the backend it wraps as one
//! custom operation (`fusion.rs`), and `Autodiff<B>` wraps the kernel in a custom backward
//! node when `B` has one (`autodiff.rs`), and otherwise differentiates the twin.
//!
//! | operation | kernel | twin (the test oracle) |
//! |---|---|---|
//! | Mamba-1 selective scan, forward + backward | `scan_kernel.rs` | [`crate::model::selective_scan::reference`] |
//! | causal / sliding-window GQA attention, forward + backward (FlashAttention-2) | `attention_kernel.rs` | [`crate::model::attention::causal_attention`] |
//!
//! `tests/kernels.rs` checks every kernel against its twin on random inputs of awkward sizes,
//! values and gradients, on every CubeCL device it finds: CUDA when a GPU is present, and
//! wgpu on any Vulkan driver (on CI, Mesa's software driver lavapipe).

#[cfg(feature = "cube-kernels")]
pub mod attention_kernel;
mod autodiff;
#[cfg(feature = "cube-kernels")]
mod cube;
#[cfg(feature = "cube-kernels")]
mod fusion;
#[cfg(feature = "cube-kernels")]
pub mod scan_kernel;

use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

use crate::model::attention::causal_attention;
use crate::model::selective_scan::{self, ScanInputs};

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
}

/// [`Backend`] for training: an autodiff backend whose inner backend is also a [`Backend`].
pub trait AutodiffBackend: Backend + burn::tensor::backend::AutodiffBackend<InnerBackend: Backend> {}

impl<B> AutodiffBackend for B where B: Backend + burn::tensor::backend::AutodiffBackend<InnerBackend: Backend> {}

impl Backend for burn::backend::Flex {}

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

fn no_kernel(op: &str) -> ! {
    panic!("{op} is only defined for backends with the fused kernel (FUSED_SCAN / FUSED_ATTENTION)")
}
