//! Causal attention of plain tensor ops: the twin of the fused FlashAttention-2 kernel
//! (`attention_kernel.rs`), and what every backend without that kernel runs.

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor, TensorData};

/// Causal attention over a whole sequence (no cache), sliding-window when `window > 0`: the
/// plain-ops twin of the fused attention kernel (`kernels::attention_kernel`).
///
/// # Shapes
/// - q: `[b, h, t, hd]`; k, v: `[b, kv, t, hd]` → `[b, h, t, hd]`
pub fn causal_attention<B: burn::tensor::backend::Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    window: usize,
) -> Tensor<B, 4> {
    let [b, h, t, hd] = q.dims();
    // Grouped-query attention: each group of h/kv query heads shares one key/value head
    // (the order of `transformers`' `repeat_kv`).
    let groups = h / k.dims()[1];
    let (k, v) = (repeat_kv(k, groups), repeat_kv(v, groups)); // [b, h, t, hd]
    if window > 0 && t > window {
        return windowed(q, k, v, window);
    }
    let scores = q.matmul(k.swap_dims(2, 3)) / (hd as f64).sqrt(); // [b, h, t, t]
    let mask = band_mask::<B>(t, 0, if window > 0 { window } else { usize::MAX }, &scores.device());
    let scores = scores.mask_fill(mask.unsqueeze::<4>().expand([b, h, t, t]), f32::NEG_INFINITY);
    softmax(scores, 3).matmul(v)
}

/// Sliding-window attention in blocks: queries in blocks of `w` attend to the keys of their own
/// block and of the block before, under a band mask: O(T·w) work and memory instead of O(T²).
///
/// # Shapes
/// - q, k, v: `[b, h, t, hd]` (positions 0..t) → `[b, h, t, hd]`
fn windowed<B: burn::tensor::backend::Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    w: usize,
) -> Tensor<B, 4> {
    let [b, h, t, hd] = q.dims();
    let device = q.device();
    let nc = t.div_ceil(w);
    let pad = |x: Tensor<B, 4>| {
        if nc * w == t { x } else { Tensor::cat(vec![x, Tensor::zeros([b, h, nc * w - t, hd], &device)], 2) }
    };
    let blocks = |x: Tensor<B, 4>| pad(x).reshape([b, h, nc, w, hd]);
    let (q, k, v) = (blocks(q), blocks(k), blocks(v));
    // Keys and values of block c − 1 beside those of block c: [b, h, nc, 2w, hd].
    let with_previous = |x: Tensor<B, 5>| {
        let previous =
            Tensor::cat(vec![Tensor::zeros([b, h, 1, w, hd], &device), x.clone().narrow(2, 0, nc - 1)], 2);
        Tensor::cat(vec![previous, x], 3)
    };
    let (k, v) = (with_previous(k), with_previous(v));
    let scores = q.matmul(k.swap_dims(3, 4)) / (hd as f64).sqrt(); // [b, h, nc, w, 2w]
    // Query i of block c sits at c·w + i, key j at (c − 1)·w + j: visible iff i < j ≤ i + w,
    // and in block 0 only keys of the block itself (j ≥ w) exist.
    let data: Vec<bool> = (0..nc)
        .flat_map(|c| {
            (0..w).flat_map(move |i| (0..2 * w).map(move |j| !(i < j && j <= i + w && (c > 0 || j >= w))))
        })
        .collect();
    let mask = Tensor::<B, 3, Bool>::from_data(TensorData::new(data, [nc, w, 2 * w]), &device);
    let scores = scores.mask_fill(mask.unsqueeze::<5>().expand([b, h, nc, w, 2 * w]), f32::NEG_INFINITY);
    let out = softmax(scores, 4).matmul(v); // [b, h, nc, w, hd]
    out.reshape([b, h, nc * w, hd]).narrow(2, 0, t)
}

/// `true` where query `i` (the `i`-th new token, after `cached` earlier keys) must not see key
/// `j`: keys after it, and keys `window` or more positions before it.
pub fn band_mask<B: burn::tensor::backend::Backend>(
    t: usize,
    cached: usize,
    window: usize,
    device: &B::Device,
) -> Tensor<B, 2, Bool> {
    let t_all = cached + t;
    let data: Vec<bool> =
        (0..t).flat_map(|i| (0..t_all).map(move |j| j > cached + i || cached + i - j >= window)).collect();
    Tensor::from_data(TensorData::new(data, [t, t_all]), device)
}

/// Each key/value head repeated for the `groups` query heads that share it.
pub fn repeat_kv<B: burn::tensor::backend::Backend>(x: Tensor<B, 4>, groups: usize) -> Tensor<B, 4> {
    if groups == 1 {
        return x;
    }
    let [b, kv, t, hd] = x.dims();
    x.unsqueeze_dim::<5>(2).expand([b, kv, groups, t, hd]).reshape([b, kv * groups, t, hd])
}
