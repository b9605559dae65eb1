//! The gated delta rule (Yang, Kautz & Hatamizadeh 2024, "Gated Delta Networks", arXiv
//! 2412.06464), the recurrence inside Gated DeltaNet and DeltaNet, in three forms that must
//! agree: [`reference`] (one token per iteration, the oracle), [`chunked`] (the WY / UT-transform
//! algorithm for training and prefill) and [`step`] (decoding, O(1) in the context).
//!
//! Per value head, with state `S: [dk, dv]` (fla's and `transformers`' orientation), unit-norm
//! keys, `α_t = exp(g_t) ∈ (0, 1]` and `β_t`:
//!
//! ```text
//! S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ      o_t = S_tᵀ q_t
//! ```
//!
//! Read as online regression: `S_{t−1}ᵀ k_t` is what the memory predicts for `k_t`; the update
//! writes `β_t (v_t − prediction)` at key `k_t` after decaying everything by `α_t`. DeltaNet
//! (Yang et al. 2024, arXiv 2406.06484) is the same rule with `g ≡ 0`.
//!
//! Everything here runs in f32 (or f64): the cumulative decays, the triangular inverse and the
//! state are the parts `transformers`' Qwen3-Next code also keeps in f32 under bf16.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::layers::matmul_keep_dtype;
use super::ssd::segsum;
use crate::kernels::selective_scan::pad_time;

/// The inputs of one delta-rule scan, time-major, keys and queries already mapped to the value
/// heads (value head `j` of a group of `r` reads key head `j / r`).
#[derive(Clone, Debug)]
pub struct DeltaInputs<B: Backend> {
    /// `[b, t, h, dk]`, L2-normalised and scaled by `dk^-1/2`.
    pub q: Tensor<B, 4>,
    /// `[b, t, h, dk]`, L2-normalised.
    pub k: Tensor<B, 4>,
    /// `[b, t, h, dv]`
    pub v: Tensor<B, 4>,
    /// `[b, t, h]`, the log decay `g ≤ 0` (zeros for DeltaNet).
    pub g: Tensor<B, 3>,
    /// `[b, t, h]`, the write strength β (in (0, 1), or (0, 2) with negative eigenvalues).
    pub beta: Tensor<B, 3>,
}

/// One decoding step: decay, predict, write the correction, read.
///
/// # Shapes
/// - q, k: `[b, h, dk]`; v: `[b, h, dv]`; g, beta: `[b, h]`; s: `[b, h, dk, dv]`
///   → (`[b, h, dv]`, `[b, h, dk, dv]`)
pub fn step<B: Backend>(
    q: Tensor<B, 3>,
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    g: Tensor<B, 2>,
    beta: Tensor<B, 2>,
    s: Tensor<B, 4>,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let [b, h, dk] = k.dims();
    let dv = v.dims()[2];
    let s = s * g.exp().reshape([b, h, 1, 1]);
    let k_row = k.reshape([b, h, 1, dk]);
    let prediction = k_row.clone().matmul(s.clone()); // Sᵀk as a row, [b, h, 1, dv]
    let correction = (v.reshape([b, h, 1, dv]) - prediction) * beta.reshape([b, h, 1, 1]);
    let s = s + k_row.swap_dims(2, 3).matmul(correction); // rank-1 write k ⊗ correction
    let o = q.reshape([b, h, 1, dk]).matmul(s.clone()).reshape([b, h, dv]);
    (o, s)
}

/// The recurrence, one token per iteration. Returns `o` (`[b, t, h, dv]`) and the final state
/// (`[b, h, dk, dv]`).
pub fn reference<B: Backend>(x: DeltaInputs<B>, s0: Option<Tensor<B, 4>>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [b, t, h, dk] = x.k.dims();
    let dv = x.v.dims()[3];
    let mut s = s0.unwrap_or_else(|| Tensor::zeros([b, h, dk, dv], (&x.v.device(), x.v.dtype())));
    let mut outs = Vec::with_capacity(t);
    let at = |v: &Tensor<B, 4>, i: usize| {
        let [b, _, h, w] = v.dims();
        v.clone().narrow(1, i, 1).reshape([b, h, w])
    };
    for i in 0..t {
        let g = x.g.clone().narrow(1, i, 1).reshape([b, h]);
        let beta = x.beta.clone().narrow(1, i, 1).reshape([b, h]);
        let (o, next) = step(at(&x.q, i), at(&x.k, i), at(&x.v, i), g, beta, s);
        s = next;
        outs.push(o.reshape([b, 1, h, dv]));
    }
    (Tensor::cat(outs, 1), s)
}

/// The chunked form (the WY representation of a product of generalised Householder matrices,
/// fla's `chunk_gated_delta_rule`; `transformers`' `torch_chunk_gated_delta_rule` is the same
/// algorithm). Per head and chunk of `C` tokens, with `G` the cumulative log decay inside the
/// chunk and `Γ[i, j] = exp(G_i − G_j)` for `j ≤ i`:
///
/// 1. `M = strictly_lower((β k kᵀ) ⊙ Γ)` and `T = (I + M)⁻¹` (the UT transform), for every
///    chunk at once; then the pseudo-values `U = T (β v)` and `W = T (β k ⊙ exp(G))`;
/// 2. chunk by chunk (`⌈t / C⌉` iterations, never one per token): the part of `U` the entering
///    state does not already explain, `V' = U − W S`; the output
///    `O = (q ⊙ exp(G)) S + lower_incl((q kᵀ) ⊙ Γ) V'`; and the state
///    `S ← exp(G_last) S + (k ⊙ exp(G_last − G))ᵀ V'`.
///
/// The time axis is padded to a multiple of `C` with `k = v = q = 0`, `g = β = 0` tokens, which
/// leave the state as it is. Step 1 is [`crate::kernels::ut_transform`]: one fused kernel each
/// way on a GPU, a host loop per chunk on the CPU, and as plain tensor ops elsewhere (the
/// triangular inverse by doubling products on 16-row blocks joined by block forward
/// substitution, `kernels/tri_inverse.rs`, never a loop over the chunk's rows). Step 2 is
/// [`crate::kernels::delta_chunks`]: a host loop per (sequence, head) on the CPU, its plain-ops
/// twin's batched matmuls elsewhere.
pub fn chunked<B: crate::kernels::Backend>(
    x: DeltaInputs<B>,
    s0: Option<Tensor<B, 4>>,
    chunk: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [bsz, t, h, dk] = x.k.dims();
    let dv = x.v.dims()[3];
    let (device, dtype) = (x.v.device(), x.v.dtype());
    let c = chunk.clamp(1, t.max(1));
    let nc = t.div_ceil(c);
    let pad = nc * c - t;

    // To chunk-major, heads before time: [b, nc, h, C, ·], stored so (`kernels::contiguous`: the
    // element-wise ops below would otherwise walk the swapped views element by element on the
    // CPU).
    let chunk_major = |v: Tensor<B, 5>| crate::kernels::contiguous(v.swap_dims(2, 3));
    let to_chunks = |v: Tensor<B, 4>, w: usize| chunk_major(pad_time(v, pad).reshape([bsz, nc, c, h, w]));
    let gates = |v: Tensor<B, 3>| {
        let v = pad_time(v, pad).reshape([bsz, nc, c, h]).swap_dims(2, 3); // [b, nc, h, C]
        crate::kernels::contiguous(v)
    };
    let beta = gates(x.beta);
    let g = gates(x.g);
    let (q, k, v) = (to_chunks(x.q, dk), to_chunks(x.k, dk), to_chunks(x.v, dv));

    let cum = g.clone().cumsum(3); // G, [b, nc, h, C]
    let decay = segsum(g).exp(); // Γ, zero above the diagonal, [b, nc, h, C, C]

    // 1. The UT transform, all chunks at once (fused where the backend has a kernel or a
    //    host loop; `kernels/ut_transform.rs` has the plain-ops twin).
    let flat = |v: Tensor<B, 5>, w: usize| v.reshape([bsz * nc * h, c, w]);
    let uw = crate::kernels::ut_transform(
        flat(k.clone(), dk),
        flat(v, dv),
        beta.reshape([bsz * nc * h, c]),
        cum.clone().reshape([bsz * nc * h, c]),
    )
    .reshape([bsz, nc, h, c, dv + dk]);
    let u = crate::kernels::contiguous(uw.clone().narrow(4, 0, dv)); // [b, nc, h, C, dv]
    let w = crate::kernels::contiguous(uw.narrow(4, dv, dk)); // [b, nc, h, C, dk]
    let attn = mm(q.clone(), k.clone().swap_dims(3, 4)) * decay; // [b, nc, h, C, C], lower incl.
    let q_decayed = q * cum.clone().exp().unsqueeze_dim::<5>(4);
    let last = cum.clone().narrow(3, c - 1, 1); // [b, nc, h, 1]
    let k_to_end = k * (last.clone() - cum).exp().unsqueeze_dim::<5>(4);
    let chunk_decay = last.exp(); // [b, nc, h, 1]

    // 2. State passing, one chunk after the other (fused where the backend has a host loop;
    //    `kernels/delta_chunks.rs` has the plain-ops twin).
    let s0 = s0.unwrap_or_else(|| Tensor::zeros([bsz, h, dk, dv], (&device, dtype)));
    let decay = chunk_decay.reshape([bsz, nc, h]);
    let (o, s) = crate::kernels::delta_chunks(u, w, q_decayed, k_to_end, attn, decay, s0);
    let o = crate::kernels::contiguous(o.swap_dims(2, 3)) // [b, nc, C, h, dv]
        .reshape([bsz, nc * c, h, dv])
        .narrow(1, 0, t);
    (o, s)
}

/// A matmul through archlab's dispatch (`--matmul` applies), always in f32.
fn mm<B: crate::kernels::Backend, const D: usize>(a: Tensor<B, D>, b: Tensor<B, D>) -> Tensor<B, D> {
    matmul_keep_dtype(a, b, false)
}

/// `x / sqrt(Σ x² + 1e-6)` over the last axis (fla's and `transformers`' `l2norm`: the epsilon
/// is on the sum, not the mean).
pub fn l2_normalize<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let sum_sq = x.clone().powf_scalar(2.0).sum_dim(3);
    x * (sum_sq + 1e-6).sqrt().recip()
}
