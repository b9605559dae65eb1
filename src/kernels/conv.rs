//! The causal depthwise convolution of plain tensor ops: the twin of the fused kernel
//! (`conv_kernel.rs`).

use burn::tensor::Tensor;

/// The causal depthwise convolution of plain tensor ops from a zero history; the twin of the
/// fused kernel.
///
/// # Shapes
/// - x: `[b, t, ch]`, weight: `[ch, k]`, bias: `[ch]` → `[b, t, ch]`
pub fn causal_conv<B: burn::tensor::backend::Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 3> {
    let [b, t, ch] = x.dims();
    let k = weight.dims()[1];
    let zeros = Tensor::zeros([b, k - 1, ch], (&x.device(), x.dtype()));
    taps(Tensor::cat(vec![zeros, x], 1), weight, bias, t)
}

/// `bias + Σ_j weight[:, j] · padded[:, j .. j + t]`: the `t` outputs of a sequence that
/// `padded` holds with its `k − 1` steps of history in front.
pub fn taps<B: burn::tensor::backend::Backend>(
    padded: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
    t: usize,
) -> Tensor<B, 3> {
    let [b, _, ch] = padded.dims();
    let mut y = bias.reshape([1, 1, ch]).expand([b, t, ch]);
    for tap in 0..weight.dims()[1] {
        let w = weight.clone().narrow(1, tap, 1).reshape([1, 1, ch]);
        y = y + padded.clone().narrow(1, tap, t) * w;
    }
    y
}
