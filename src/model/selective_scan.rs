//! Mamba-1's selective scan (Gu & Dao 2023, Algorithm 2), in three forms that must agree:
//!
//! | form | use | cost |
//! |---|---|---|
//! | [`reference`] | the oracle: the recurrence, one time step per iteration | `t` sequential steps |
//! | [`chunked`] | training and prefill: a two-level scan from plain tensor ops | ≈ 2√t sequential steps |
//! | [`step`] | decoding: one token given the state | O(1) per token |
//!
//! For each channel `d` and state index `n`, with the zero-order-hold discretisation of the
//! paper (Ā = exp(ΔA), and the simplified B̄x = ΔBx that `mamba_ssm` uses):
//!
//! ```text
//! h_t = exp(Δ_t[d] · A[d, n]) · h_{t−1} + Δ_t[d] · B_t[n] · x_t[d]
//! y_t[d] = Σ_n C_t[n] · h_t[d, n]
//! ```
//!
//! The `D·x` skip and the `z` gate are applied by the mixer (`mamba.rs`), not here. A fused
//! kernel (GPU issue) will implement [`ScanInputs`] → `(y, h_last)` with the same contract and be
//! tested against [`reference`].

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The inputs of one selective scan, time-major.
#[derive(Clone, Debug)]
pub struct ScanInputs<B: Backend> {
    /// `[b, t, d]`, the sequence being scanned (the paper's u).
    pub x: Tensor<B, 3>,
    /// `[b, t, d]`, positive step sizes (after softplus).
    pub delta: Tensor<B, 3>,
    /// `[d, n]`, negative (−exp(A_log)).
    pub a: Tensor<B, 2>,
    /// `[b, t, n]`, input-dependent input matrix.
    pub b: Tensor<B, 3>,
    /// `[b, t, n]`, input-dependent output matrix.
    pub c: Tensor<B, 3>,
}

/// Which algorithm computes the scan; all give the same numbers up to rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScanAlgorithm {
    Sequential,
    /// Chunks of this many steps; 0 picks ⌈√t⌉.
    Chunked(usize),
}

/// Runs the scan from state `h0` (`[b, d, n]`, zeros when `None`); returns `y` (`[b, t, d]`)
/// and the state after the last step (`[b, d, n]`).
pub fn scan<B: Backend>(
    inputs: ScanInputs<B>,
    h0: Option<Tensor<B, 3>>,
    algorithm: ScanAlgorithm,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    match algorithm {
        ScanAlgorithm::Sequential => reference(inputs, h0),
        ScanAlgorithm::Chunked(chunk) => chunked(inputs, h0, chunk),
    }
}

/// The recurrence as written, one step at a time: the oracle the other forms are tested against.
pub fn reference<B: Backend>(s: ScanInputs<B>, h0: Option<Tensor<B, 3>>) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let [bsz, t, d] = s.x.dims();
    let n = s.a.dims()[1];
    let mut h = h0.unwrap_or_else(|| Tensor::zeros([bsz, d, n], (&s.x.device(), s.x.dtype())));
    let a = s.a.unsqueeze::<3>(); // [1, d, n]
    let mut ys = Vec::with_capacity(t);
    for i in 0..t {
        let at = |v: &Tensor<B, 3>| v.clone().narrow(1, i, 1).squeeze_dim::<2>(1);
        let (x, delta, b, c) = (at(&s.x), at(&s.delta), at(&s.b), at(&s.c)); // [b, d] or [b, n]
        let decay = (delta.clone().unsqueeze_dim::<3>(2) * a.clone()).exp(); // exp(Δ A), [b, d, n]
        let input = (delta * x).unsqueeze_dim::<3>(2) * b.unsqueeze_dim::<3>(1); // Δ x B, [b, d, n]
        h = decay * h + input;
        ys.push((h.clone() * c.unsqueeze_dim::<3>(1)).sum_dim(2).reshape([bsz, 1, d])); // Σ_n C h
    }
    (Tensor::cat(ys, 1), h)
}

/// One decoding step: advances `h` (`[b, d, n]`) by one token and returns its output.
///
/// # Shapes
/// - x, delta: `[b, d]`; a: `[d, n]`; b, c: `[b, n]`; h: `[b, d, n]` → (`[b, d]`, `[b, d, n]`)
pub fn step<B: Backend>(
    x: Tensor<B, 2>,
    delta: Tensor<B, 2>,
    a: Tensor<B, 2>,
    b: Tensor<B, 2>,
    c: Tensor<B, 2>,
    h: Tensor<B, 3>,
) -> (Tensor<B, 2>, Tensor<B, 3>) {
    let d = x.dims()[1];
    let decay = (delta.clone().unsqueeze_dim::<3>(2) * a.unsqueeze::<3>()).exp();
    let h = decay * h + (delta * x).unsqueeze_dim::<3>(2) * b.unsqueeze_dim::<3>(1);
    let y = (h.clone() * c.unsqueeze_dim::<3>(1)).sum_dim(2).reshape([h.dims()[0], d]);
    (y, h)
}

/// The two-level chunked scan. The time axis is cut into chunks of `L` steps.
///
/// 1. Inside every chunk at once (chunks are a batch dimension), scan from a zero state:
///    `L` sequential steps give the local states `h_loc`; the cumulative decay since the
///    chunk's start is `P = exp(cumsum(ΔA))`, one op.
/// 2. Across chunks, carry the true state over: `H_c = P_last[c] · H_{c−1} + h_loc_last[c]`,
///    `t / L` sequential steps on `[b, d, n]`.
/// 3. Correct every step: `h = h_loc + P · H_{c−1}`, then `y = Σ_n C h`.
///
/// With `L ≈ √t` that is ≈ 2√t sequential steps of tensor ops instead of `t`, and the same
/// O(t·d·n) work as the recurrence (no `L²` term): it runs well on a CPU, and on a GPU it is
/// the portable fallback of the fused kernel. The time axis is padded to a multiple of `L`
/// with Δ = 0 steps (decay 1, input 0), which leave the state untouched, so `h_last` is exact.
pub fn chunked<B: Backend>(
    s: ScanInputs<B>,
    h0: Option<Tensor<B, 3>>,
    chunk: usize,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let [bsz, t, d] = s.x.dims();
    let n = s.a.dims()[1];
    let chunk = if chunk == 0 { (t as f64).sqrt().ceil() as usize } else { chunk }.clamp(1, t.max(1));
    let n_chunks = t.div_ceil(chunk);
    let pad = n_chunks * chunk - t;
    let pad_time = |v: Tensor<B, 3>| {
        if pad == 0 {
            return v;
        }
        let [b, _, w] = v.dims();
        let zeros = Tensor::zeros([b, pad, w], (&v.device(), v.dtype()));
        Tensor::cat(vec![v, zeros], 1)
    };
    let (x, delta, b, c) = (pad_time(s.x), pad_time(s.delta), pad_time(s.b), pad_time(s.c));

    let shape5 = [bsz, n_chunks, chunk, d, n];
    let log_decay = delta.clone().unsqueeze_dim::<4>(3) * s.a.unsqueeze::<4>(); // ΔA, [b, T, d, n]
    let log_decay = log_decay.reshape(shape5);
    let input = ((delta * x).unsqueeze_dim::<4>(3) * b.unsqueeze_dim::<4>(2)).reshape(shape5); // ΔxB

    // 1. Local scans, every chunk at once.
    let decay = log_decay.clone().exp();
    let step_of = |v: &Tensor<B, 5>, i: usize| v.clone().narrow(2, i, 1);
    let mut h = step_of(&input, 0);
    let mut local = Vec::with_capacity(chunk);
    local.push(h.clone());
    for i in 1..chunk {
        h = step_of(&decay, i) * h + step_of(&input, i);
        local.push(h.clone());
    }
    let local = Tensor::cat(local, 2); // [b, nc, L, d, n]
    let since_start = log_decay.cumsum(2).exp(); // P, [b, nc, L, d, n]

    // 2. Carry the state across chunks.
    let last = |v: &Tensor<B, 5>| v.clone().narrow(2, chunk - 1, 1); // [b, nc, 1, d, n]
    let (chunk_decay, chunk_input) = (last(&since_start), last(&local));
    let mut carry = match h0 {
        Some(h0) => h0.reshape([bsz, 1, 1, d, n]),
        None => Tensor::zeros([bsz, 1, 1, d, n], (&local.device(), local.dtype())),
    };
    let mut entering = Vec::with_capacity(n_chunks); // the state entering each chunk
    for ci in 0..n_chunks {
        entering.push(carry.clone());
        carry = chunk_decay.clone().narrow(1, ci, 1) * carry + chunk_input.clone().narrow(1, ci, 1);
    }
    let entering = Tensor::cat(entering, 1); // [b, nc, 1, d, n]

    // 3. Correct the local states and read out.
    let h = local + since_start * entering;
    let c = c.reshape([bsz, n_chunks, chunk, 1, n]);
    let y = (h * c).sum_dim(4).reshape([bsz, n_chunks * chunk, d]).narrow(1, 0, t);
    (y, carry.reshape([bsz, d, n]))
}
