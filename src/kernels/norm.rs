//! RMSNorm and Mamba-2's gated RMSNorm of plain tensor ops: the twins of the fused kernels
//! (`rms_norm_kernel.rs`, `gated_rms_norm_kernel.rs`).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::activation::silu;

/// RMSNorm of plain tensor ops over the last axis: `x / √(mean(x²) + eps) · weight`; the twin
/// of the fused kernel (`kernels/rms_norm_kernel.rs`).
///
/// # Shapes
/// - x: `[b, t, d]`, weight: `[d]` → `[b, t, d]`
pub fn rms_norm<B: Backend>(x: Tensor<B, 3>, weight: Tensor<B, 1>, eps: f64) -> Tensor<B, 3> {
    let ms = x.clone().powf_scalar(2.0).mean_dim(2);
    x * (ms + eps).sqrt().recip() * weight.unsqueeze::<3>()
}

/// Mamba-2's gated RMSNorm in plain tensor ops, `rms_norm_g(y · silu(z)) · weight` over groups of
/// `group` channels: the twin of the fused kernel (`gated_rms_norm_kernel.rs`).
///
/// # Shapes
/// - y, z: `[b, t, di]`, weight: `[di]` (`group` divides `di`) → `[b, t, di]`
pub fn gated_rms_norm<B: burn::tensor::backend::Backend>(
    y: Tensor<B, 3>,
    z: Tensor<B, 3>,
    weight: Tensor<B, 1>,
    group: usize,
    eps: f64,
) -> Tensor<B, 3> {
    let [b, t, di] = y.dims();
    let gated = (y * silu(z)).reshape([b, t, di / group, group]);
    let ms = gated.clone().powf_scalar(2.0).mean_dim(3);
    let normed = (gated * (ms + eps).sqrt().recip()).reshape([b, t, di]);
    normed * weight.reshape([1, 1, di])
}
