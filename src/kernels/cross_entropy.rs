//! Cross-entropy of plain tensor ops: the twin of the fused kernel (`cross_entropy_kernel.rs`).

use burn::tensor::activation::log_softmax;
use burn::tensor::{DType, Int, Tensor};

/// The plain-ops twin of the fused cross-entropy: each row's `−log softmax(logits)[target]`
/// (`logits` `[n, v]`, `targets` `[n]` → `[n]`), with half-precision logits cast to fp32 first.
pub fn token_nll<B: burn::tensor::backend::Backend>(
    logits: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let n = targets.dims()[0];
    let logits = match logits.dtype() {
        DType::BF16 | DType::F16 => logits.cast(DType::F32),
        _ => logits,
    };
    log_softmax(logits, 1).gather(1, targets.reshape([n, 1])).reshape([n]).neg()
}
