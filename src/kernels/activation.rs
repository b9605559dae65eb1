//! Pointwise nonlinearities, written with ops that are exact on every backend.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// SiLU (swish), `x·σ(x)`, with `σ(x) = (1 + tanh(x/2)) / 2`. burn's `sigmoid` on the CPU is
/// accurate to only ~3e-7 even in f64, which the f64 gradient checks would see; `tanh` is
/// exact there, and its derivative `1 − tanh²` cannot overflow the way `1/(1+e⁻ˣ)`'s can.
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone() * sigmoid(x)
}

/// σ(x) = (1 + tanh(x/2)) / 2 (see [`silu`] for why not burn's `sigmoid`).
pub fn sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    ((x * 0.5).tanh() + 1.0) * 0.5
}

/// GELU in its tanh form (Hendrycks & Gimpel 2016), the one GPT-2 trained with
/// (`transformers`' `gelu_new` / `gelu_pytorch_tanh`). burn's `gelu` goes through an
/// approximate `erf` (~1e-6), which would also blur the gradient checks.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let inner = (x.clone() + x.clone().powf_scalar(3.0) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
    x * (inner.tanh() + 1.0) * 0.5
}

/// softplus(x) = ln(1 + eˣ), computed as `max(x, 0) + ln(1 + e^−|x|)` so that neither branch
/// overflows. (PyTorch returns x itself above 20; the difference there is below 3e-9.)
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p()
}
