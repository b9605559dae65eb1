//! Mamba-2's state space dual (SSD) scan (Dao & Gu 2024, "Transformers are SSMs", §6), in
//! three forms that must agree: [`reference`] (the recurrence, the oracle), [`chunked`] (the
//! SSD algorithm: matmuls inside chunks, state passing between them) and [`step`] (decoding).
//!
//! Per head `h` with scalar `A[h] < 0`, head dimension `p` and state size `n`; B and C are
//! shared by groups of heads (head `i` uses group `i / (heads / groups)`, `transformers`'
//! `repeat_interleave`):
//!
//! ```text
//! H_t = exp(Δ_t A) · H_{t−1} + Δ_t · x_t ⊗ B_t        H: [p, n]
//! y_t = H_t · C_t                                      y: [p]
//! ```
//!
//! The `D·x` skip and the gated norm are the mixer's (`mamba2.rs`).

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor, TensorData};

use super::layers::matmul_keep_dtype;
use crate::kernels::selective_scan::pad_time;

/// The inputs of one SSD scan, time-major.
#[derive(Clone, Debug)]
pub struct SsdInputs<B: Backend> {
    /// `[b, t, heads, p]`
    pub x: Tensor<B, 4>,
    /// `[b, t, heads]`, positive step sizes (after softplus).
    pub dt: Tensor<B, 3>,
    /// `[heads]`, negative.
    pub a: Tensor<B, 1>,
    /// `[b, t, groups, n]`
    pub b: Tensor<B, 4>,
    /// `[b, t, groups, n]`
    pub c: Tensor<B, 4>,
}

/// Repeats each group's B or C for the heads that share it: `[.., g, n] → [.., heads, n]`.
pub(crate) fn groups_to_heads<B: Backend, const D: usize, const D1: usize>(
    v: Tensor<B, D>,
    heads: usize,
) -> Tensor<B, D> {
    let dims = v.dims();
    let g = dims[D - 2];
    let mut expanded = [0; D1];
    expanded[..D - 1].copy_from_slice(&dims[..D - 1]);
    expanded[D - 1] = heads / g;
    expanded[D] = dims[D - 1];
    let mut out = dims;
    out[D - 2] = heads;
    v.unsqueeze_dim::<D1>(D - 1).expand(expanded).reshape(out)
}

/// The recurrence, one time step per iteration. Returns `y` (`[b, t, heads, p]`) and the
/// final state (`[b, heads, p, n]`).
pub fn reference<B: Backend>(s: SsdInputs<B>, h0: Option<Tensor<B, 4>>) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [bsz, t, heads, p] = s.x.dims();
    let n = s.b.dims()[3];
    let (b, c) = (groups_to_heads::<B, 4, 5>(s.b, heads), groups_to_heads::<B, 4, 5>(s.c, heads));
    let mut h = h0.unwrap_or_else(|| Tensor::zeros([bsz, heads, p, n], (&s.x.device(), s.x.dtype())));
    let a = s.a.reshape([1, heads]);
    let mut ys = Vec::with_capacity(t);
    for i in 0..t {
        let x = s.x.clone().narrow(1, i, 1).reshape([bsz, heads, p]);
        let dt = s.dt.clone().narrow(1, i, 1).reshape([bsz, heads]);
        let b = b.clone().narrow(1, i, 1).reshape([bsz, heads, 1, n]);
        let c = c.clone().narrow(1, i, 1).reshape([bsz, heads, 1, n]);
        let decay = (dt.clone() * a.clone()).exp().reshape([bsz, heads, 1, 1]);
        let input = (x * dt.reshape([bsz, heads, 1])).reshape([bsz, heads, p, 1]) * b; // Δ x ⊗ B
        h = decay * h + input;
        ys.push((h.clone() * c).sum_dim(3).reshape([bsz, 1, heads, p]));
    }
    (Tensor::cat(ys, 1), h)
}

/// One decoding step.
///
/// # Shapes
/// - x: `[b, heads, p]`; dt: `[b, heads]`; a: `[heads]`; b, c: `[b, groups, n]`;
///   h: `[b, heads, p, n]` → (`[b, heads, p]`, `[b, heads, p, n]`)
pub fn step<B: Backend>(
    x: Tensor<B, 3>,
    dt: Tensor<B, 2>,
    a: Tensor<B, 1>,
    b: Tensor<B, 3>,
    c: Tensor<B, 3>,
    h: Tensor<B, 4>,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let [bsz, heads, p] = x.dims();
    let n = b.dims()[2];
    let b = groups_to_heads::<B, 3, 4>(b, heads).reshape([bsz, heads, 1, n]);
    let c = groups_to_heads::<B, 3, 4>(c, heads).reshape([bsz, heads, 1, n]);
    let decay = (dt.clone() * a.reshape([1, heads])).exp().reshape([bsz, heads, 1, 1]);
    let h = decay * h + (x * dt.reshape([bsz, heads, 1])).reshape([bsz, heads, p, 1]) * b;
    let y = (h.clone() * c).sum_dim(3).reshape([bsz, heads, p]);
    (y, h)
}

/// The chunked SSD algorithm (`ssd_minimal_discrete` of the paper's reference code), chunks of
/// `L` steps:
///
/// 1. inside each chunk, the quadratic "attention-like" form: `Y_diag = (C Bᵀ ∘ L) · (Δx)`,
///    where `L[i, j] = exp(Σ_{j<k≤i} Δ_k A)` is the causal decay mask (matmuls);
/// 2. each chunk's final state from a zero start: `S_c = (Δx)ᵀ · (B ∘ decay to chunk end)`;
/// 3. the states entering each chunk, `t / L` sequential multiply-adds on `[b, heads, p, n]`;
/// 4. their contribution: `Y_off = (C · H_enteringᵀ) ∘ exp(cumsum(ΔA))`.
///
/// The time axis is padded to a multiple of `L` with Δ = 0 steps, which change nothing.
///
/// With `bf16`, the four matmuls (`C Bᵀ`, its product with Δx, the chunk states and `C Hᵀ`)
/// take bf16 operands and accumulate in fp32, on tensor cores on a GPU, as `mamba_ssm`'s
/// Triton kernels do under autocast; the decays, the cumulative sums and the state passing
/// stay fp32.
pub fn chunked<B: crate::kernels::Backend>(
    s: SsdInputs<B>,
    h0: Option<Tensor<B, 4>>,
    chunk: usize,
    bf16: bool,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let mm = |a, b| matmul_keep_dtype(a, b, bf16);
    let [bsz, t, heads, p] = s.x.dims();
    let [_, _, groups, n] = s.b.dims();
    let chunk = chunk.clamp(1, t.max(1));
    let nc = t.div_ceil(chunk);
    let pad = nc * chunk - t;
    let (device, dtype) = (s.x.device(), s.x.dtype());
    let dt = pad_time(s.dt, pad);
    let (x, b, c) = (pad_time(s.x, pad), pad_time(s.b, pad), pad_time(s.c, pad));

    // To chunk-major, heads before time: [b, nc, heads, L, ·].
    let to_chunks = |v: Tensor<B, 4>, k: usize, w: usize| v.reshape([bsz, nc, chunk, k, w]).swap_dims(2, 3);
    let xdt = to_chunks(x * dt.clone().unsqueeze_dim::<4>(3), heads, p); // Δx
    let b_g = to_chunks(b, groups, n); // [b, nc, g, L, n]
    let c_g = to_chunks(c, groups, n);
    let b_h = groups_to_heads::<B, 5, 6>(b_g.clone().swap_dims(2, 3), heads).swap_dims(2, 3); // [b, nc, h, L, n]
    let c_h = groups_to_heads::<B, 5, 6>(c_g.clone().swap_dims(2, 3), heads).swap_dims(2, 3);
    let a_dt = (dt * s.a.reshape([1, 1, heads])).reshape([bsz, nc, chunk, heads]).swap_dims(2, 3); // [b, nc, h, L]
    let a_cumsum = a_dt.clone().cumsum(3);

    // 1. Within chunks.
    let decay_mask = segsum(a_dt).exp(); // [b, nc, h, L, L]
    let scores = mm(c_g, b_g.swap_dims(3, 4)); // C Bᵀ per group, [b, nc, g, L, L]
    let scores = groups_to_heads::<B, 4, 5>(scores.reshape([bsz, nc, groups, chunk * chunk]), heads)
        .reshape([bsz, nc, heads, chunk, chunk]);
    let y_diag = mm(scores * decay_mask, xdt.clone()); // [b, nc, h, L, p]

    // 2. Each chunk's final state from zero.
    let last = a_cumsum.clone().narrow(3, chunk - 1, 1); // [b, nc, h, 1]
    let to_end = (last.clone() - a_cumsum.clone()).exp().unsqueeze_dim::<5>(4); // [b, nc, h, L, 1]
    let states = mm(xdt.swap_dims(3, 4), b_h * to_end); // [b, nc, h, p, n]

    // 3. Pass states across chunks (a fused kernel where the backend has one); the final
    //    state is the last chunk's, advanced once more.
    let chunk_decay = last.exp().reshape([bsz, nc, heads]);
    let h0 = h0.unwrap_or_else(|| Tensor::zeros([bsz, heads, p, n], (&device, dtype)));
    let entering = crate::kernels::ssd_state_passing(states.clone(), chunk_decay.clone(), h0); // [b, nc, h, p, n]
    let last_decay = chunk_decay.narrow(1, nc - 1, 1).reshape([bsz, 1, heads, 1, 1]);
    let carry = last_decay * entering.clone().narrow(1, nc - 1, 1) + states.narrow(1, nc - 1, 1);

    // 4. The entering states' contribution.
    let from_start = a_cumsum.exp().unsqueeze_dim::<5>(4); // [b, nc, h, L, 1]
    let y_off = mm(c_h, entering.swap_dims(3, 4)) * from_start; // [b, nc, h, L, p]

    let y = (y_diag + y_off).swap_dims(2, 3).reshape([bsz, nc * chunk, heads, p]).narrow(1, 0, t);
    (y, carry.reshape([bsz, heads, p, n]))
}

/// `out[.., i, j] = Σ_{j<k≤i} x[.., k]` for `j ≤ i`, −∞ above the diagonal: the log of the
/// causal decay between steps `j` and `i`. Summed with a masked cumsum rather than as a
/// difference of cumsums, so it stays exact however long the chunk (the paper's `segsum`).
pub(crate) fn segsum<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 5> {
    let [b, nc, h, l] = x.dims();
    let device = x.device();
    let full = [b, nc, h, l, l];
    let mask = |keep: fn(usize, usize) -> bool| {
        let data: Vec<bool> = (0..l).flat_map(|i| (0..l).map(move |j| !keep(i, j))).collect();
        Tensor::<B, 2, Bool>::from_data(TensorData::new(data, [l, l]), &device).unsqueeze::<5>().expand(full)
    };
    let rows = x.unsqueeze_dim::<5>(4).expand(full); // rows[.., i, j] = x[i]
    let rows = rows.mask_fill(mask(|i, j| j < i), 0.0);
    rows.cumsum(3).mask_fill(mask(|i, j| j <= i), f32::NEG_INFINITY)
}
