//! The small building blocks every mixer uses: linear maps, embeddings and normalisation.
//!
//! Weights are created from archlab's own seeded RNG (see `init`), not the backend's global
//! RNG, so the same seed gives the same initial model on every backend and in every thread.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use super::config::NormKind;
pub use crate::kernels::tensors::{float_tensor, int_tensor};
use crate::rng::Rng;

/// Creates a parameter from a host-side generator of its values.
pub fn param<B: Backend, const D: usize>(
    shape: [usize; D],
    device: &B::Device,
    mut value: impl FnMut() -> f32,
) -> Param<Tensor<B, D>> {
    let n = shape.iter().product::<usize>();
    let data: Vec<f32> = (0..n).map(|_| value()).collect();
    Param::from_tensor(float_tensor(TensorData::new(data, shape), device))
}

/// A parameter drawn from N(0, std²).
pub fn normal_param<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f64,
    rng: &mut Rng,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    param(shape, device, || (rng.normal() * std) as f32)
}

/// `a · b`, with bf16 operands when `bf16` and the result left in bf16 (the GPU kernels
/// accumulate in fp32); `a · b` as it is otherwise. burn has no autocast, so every matmul that
/// runs in bf16 under mixed precision goes through here or [`matmul_keep_dtype`], and so does
/// every model matmul that `--matmul` may route through a forced CubeCL strategy
/// ([`crate::kernels::matmul`]).
pub fn matmul<B: crate::kernels::Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    bf16: bool,
) -> Tensor<B, D> {
    let (a, b) = if bf16 { (a.cast(DType::BF16), b.cast(DType::BF16)) } else { (a, b) };
    crate::kernels::matmul(a, b)
}

/// [`matmul`] with the result cast back to `a`'s dtype (fp32 under mixed precision), as
/// PyTorch's autocast hands a bf16 matmul's output to fp32 code.
pub fn matmul_keep_dtype<B: crate::kernels::Backend, const D: usize>(
    a: Tensor<B, D>,
    b: Tensor<B, D>,
    bf16: bool,
) -> Tensor<B, D> {
    let dtype = a.dtype();
    if bf16 { matmul(a, b, true).cast(dtype) } else { matmul(a, b, false) }
}

/// `f` applied to `x` (`[..., k]`) seen as one matrix of rows, `[rows, k]`, and its result made
/// `[..., n]` again. A linear map runs as one `[rows, k] · [k, n]` product this way, as PyTorch's
/// `addmm` does, rather than as a batched product against a broadcast weight, whose backward
/// computes a weight gradient per batch row and then sums them
/// (`bench/results/cpu-attention-rope.md`: +10 % dense, +24 % Mamba-2 on the CPU).
pub fn rows_times<B: burn::tensor::backend::Backend, const D: usize>(
    x: Tensor<B, D>,
    f: impl FnOnce(Tensor<B, 2>) -> Tensor<B, 2>,
) -> Tensor<B, D> {
    let mut dims = x.dims();
    let y = f(x.flatten::<2>(0, D - 2));
    dims[D - 1] = y.dims()[1];
    y.reshape(dims)
}

/// `y = x W + b`, with `W` stored `[d_in, d_out]` (so no transpose in the forward).
#[derive(Module, Debug)]
pub struct Linear<B: crate::kernels::Backend> {
    pub weight: Param<Tensor<B, 2>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Run the matmul in bf16 (fp32 weights are cast on the fly; the result is fp32).
    pub bf16: bool,
}

impl<B: crate::kernels::Backend> Linear<B> {
    /// Weights from N(0, std²), bias zero.
    pub fn new(d_in: usize, d_out: usize, bias: bool, std: f64, rng: &mut Rng, device: &B::Device) -> Self {
        Self {
            weight: normal_param([d_in, d_out], std, rng, device),
            bias: bias.then(|| param([d_out], device, || 0.0)),
            bf16: false,
        }
    }

    /// # Shapes
    /// - x: `[..., d_in]` → `[..., d_out]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.apply(x, true)
    }

    /// [`Self::forward`] with the result left in the compute dtype (bf16 under bf16, the bias
    /// added in bf16 as under PyTorch's autocast), for a consumer that reads bf16 itself.
    pub fn forward_compute_dtype<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.apply(x, false)
    }

    fn apply<const D: usize>(&self, x: Tensor<B, D>, keep_dtype: bool) -> Tensor<B, D> {
        let bias = |y: Tensor<B, 2>| match &self.bias {
            Some(b) if self.bf16 && !keep_dtype => y + b.val().cast(DType::BF16).unsqueeze::<2>(),
            Some(b) => y + b.val().unsqueeze::<2>(),
            None => y,
        };
        rows_times(x, |rows| {
            let w = self.weight.val();
            bias(if keep_dtype { matmul_keep_dtype(rows, w, self.bf16) } else { matmul(rows, w, self.bf16) })
        })
    }

    /// Linear maps of one shape at once: `x` `[E, rows, d_in]`, map i on `x[i]` →
    /// `[E, rows, d_out]`, as one batched matmul (an MoE's experts). The weights are stacked
    /// on each call: a copy of `E · d_in · d_out` values, next to the matmul's `rows` times
    /// as many multiply-adds. Precision as in [`Self::forward`], taken from the first map.
    ///
    /// # Panics
    /// If `linears` is empty.
    pub fn forward_stacked(linears: &[&Self], x: Tensor<B, 3>) -> Tensor<B, 3> {
        let first = linears.first().expect("at least one linear map");
        let w = Tensor::stack::<3>(linears.iter().map(|l| l.weight.val()).collect(), 0);
        let y = matmul_keep_dtype(x, w, first.bf16);
        match &first.bias {
            Some(_) => {
                let biases = linears.iter().map(|l| l.bias.as_ref().expect("every map has a bias").val());
                y + Tensor::stack::<2>(biases.collect(), 0).unsqueeze_dim::<3>(1)
            }
            None => y,
        }
    }
}

/// A lookup table `[n, d]`.
#[derive(Module, Debug)]
pub struct Embedding<B: Backend> {
    pub weight: Param<Tensor<B, 2>>,
}

impl<B: Backend> Embedding<B> {
    pub fn new(n: usize, d: usize, std: f64, rng: &mut Rng, device: &B::Device) -> Self {
        Self { weight: normal_param([n, d], std, rng, device) }
    }

    /// # Shapes
    /// - ids: `[b, t]` → `[b, t, d]`
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        let [b, t] = ids.dims();
        let d = self.weight.dims()[1];
        self.weight.val().select(0, ids.reshape([b * t])).reshape([b, t, d])
    }
}

/// RMSNorm (Zhang & Sennrich 2019) or LayerNorm (Ba et al. 2016), always computed in fp32.
/// RMSNorm runs as a fused kernel where the backend has one ([`crate::kernels::rms_norm`]).
#[derive(Module, Debug)]
pub struct Norm<B: crate::kernels::Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// true: RMSNorm; false: LayerNorm.
    pub rms: bool,
    pub eps: f64,
}

impl<B: crate::kernels::Backend> Norm<B> {
    pub fn new(kind: NormKind, d: usize, bias: bool, eps: f64, device: &B::Device) -> Self {
        let rms = kind == NormKind::Rms;
        Self {
            weight: param([d], device, || 1.0),
            // RMSNorm has no bias by definition; LayerNorm has one when the model uses biases.
            bias: (!rms && bias).then(|| param([d], device, || 0.0)),
            rms,
            eps,
        }
    }

    /// The residual add and this norm after it: `(residual + delta, norm(residual + delta))`,
    /// one kernel for RMSNorm where the backend has it ([`crate::kernels::add_rms_norm`]).
    ///
    /// # Shapes
    /// - residual, delta: `[b, t, d]` → `([b, t, d], [b, t, d])`
    pub fn forward_add(&self, residual: Tensor<B, 3>, delta: Tensor<B, 3>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        if self.rms {
            return crate::kernels::add_rms_norm(residual, delta, self.weight.val(), self.eps);
        }
        let sum = residual + delta;
        (sum.clone(), self.forward(sum))
    }

    /// # Shapes
    /// - x: `[b, t, d]` → `[b, t, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.rms {
            return crate::kernels::rms_norm(x, self.weight.val(), self.eps);
        }
        let mean = x.clone().mean_dim(2);
        let centered = x - mean;
        let var = centered.clone().powf_scalar(2.0).mean_dim(2);
        let y = centered * (var + self.eps).sqrt().recip() * self.weight.val().unsqueeze::<3>();
        match &self.bias {
            Some(b) => y + b.val().unsqueeze::<3>(),
            None => y,
        }
    }
}
