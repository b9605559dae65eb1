//! Rotary position embedding (Su et al. 2021, "RoFormer", arXiv 2104.09864) in plain tensor
//! ops, Llama's rotate-half layout (`transformers`' `apply_rotary_pos_emb`): the twin of the CPU
//! loop (`crates/cpu-loops/src/rope.rs`), and what every other backend runs.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// `x` rotated by the angles whose cosines and sines are `cos` and `sin`: channel `c` of a head
/// pairs with channel `c + r/2`, `r` the tables' last dimension (the rotary dimension); channels
/// from `r` on pass unchanged (partial RoPE).
///
/// # Shapes
/// - x: `[b, h, t, hd]`; cos, sin: `[b or 1, 1, t, r]` with `r ≤ hd` even → `[b, h, t, hd]`
pub fn rope<B: Backend>(x: Tensor<B, 4>, cos: Tensor<B, 4>, sin: Tensor<B, 4>) -> Tensor<B, 4> {
    let (hd, r) = (x.dims()[3], cos.dims()[3]);
    if r < hd {
        let rotated = rope(x.clone().narrow(3, 0, r), cos, sin);
        return Tensor::cat(vec![rotated, x.narrow(3, r, hd - r)], 3);
    }
    let x1 = x.clone().narrow(3, 0, hd / 2);
    let x2 = x.clone().narrow(3, hd / 2, hd / 2);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3); // rotate_half
    x * cos + rotated * sin
}
