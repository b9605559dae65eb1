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
//! The `D·x` skip and the `z` gate are applied by the mixer (`mamba.rs`), not here. On a
//! CubeCL backend the fused kernel (`kernels/scan_kernel.rs`) implements [`ScanInputs`] →
//! `(y, h_last)` with the same contract and is tested against [`reference`].

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

/// The two-level chunked scan. The time axis is cut into chunks of `L` steps, which become a
/// batch dimension (`[b, nc, L, ·]`).
///
/// 1. Inside every chunk at once, scan from a zero state: `L` sequential steps on
///    `[b, nc, d, n]` give the local outputs `Σ_n C·h_loc` and each chunk's final local state.
/// 2. Across chunks, carry the true state over: `H_c = exp(A·ΣΔ_c) · H_{c−1} + h_loc_last[c]`,
///    `t / L` sequential steps on `[b, d, n]`.
/// 3. Add what the state entering each chunk contributes at step `i` of it:
///    `Σ_n C_i · exp(A · Σ_{k≤i} Δ_k) · H_{c−1}`, another `L` steps on `[b, nc, d, n]`.
///
/// With `L ≈ √t` that is ≈ 3√t sequential steps of tensor ops instead of `t`, with the same
/// O(t·d·n) work as the recurrence (no `L²` term). No `[b, t, d, n]` tensor is materialised
/// or sliced: each step builds its `[b, nc, d, n]` operands from `[b, nc, d]` and `[b, nc, n]`
/// slices (slicing a full-size tensor step by step would make the backward pass allocate a
/// full-size zero gradient per slice). The time axis is padded to a multiple of `L` with
/// Δ = 0 steps (decay 1, input 0), which leave the state untouched, so `h_last` is exact.
pub fn chunked<B: Backend>(
    s: ScanInputs<B>,
    h0: Option<Tensor<B, 3>>,
    chunk: usize,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let [bsz, t, d] = s.x.dims();
    let n = s.a.dims()[1];
    let chunk = if chunk == 0 { (t as f64).sqrt().ceil() as usize } else { chunk }.clamp(1, t.max(1));
    let nc = t.div_ceil(chunk);
    let pad = nc * chunk - t;
    let to_chunks = |v: Tensor<B, 3>| {
        let [b, _, w] = v.dims();
        pad_time(v, pad).reshape([b, nc, chunk, w])
    };
    let (x, delta, b, c) = (to_chunks(s.x), to_chunks(s.delta), to_chunks(s.b), to_chunks(s.c));
    let a = s.a.reshape([1, 1, d, n]);
    let since_start = delta.clone().cumsum(2); // Σ Δ from the chunk's start, [b, nc, L, d]
    let step = |v: &Tensor<B, 4>, i: usize| v.clone().narrow(2, i, 1).squeeze_dim::<3>(2); // [b, nc, ·]
    let decay = |log_scale: Tensor<B, 3>| (log_scale.unsqueeze_dim::<4>(3) * a.clone()).exp(); // exp(ΔA), [b, nc, d, n]
    let over_n =
        |h: Tensor<B, 4>, c: Tensor<B, 3>| (h * c.unsqueeze_dim::<4>(2)).sum_dim(3).squeeze_dim::<3>(3); // [b, nc, d]

    // 1. Local scans, every chunk at once.
    let mut h_local: Option<Tensor<B, 4>> = None;
    let mut y = Vec::with_capacity(chunk);
    for i in 0..chunk {
        let delta_i = step(&delta, i);
        let input = (delta_i.clone() * step(&x, i)).unsqueeze_dim::<4>(3) * step(&b, i).unsqueeze_dim::<4>(2);
        let h = match h_local {
            None => input,
            Some(h) => decay(delta_i) * h + input,
        };
        y.push(over_n(h.clone(), step(&c, i)));
        h_local = Some(h);
    }
    let h_local = h_local.expect("at least one step");

    // 2. Carry the state across chunks.
    let chunk_decay = decay(step(&since_start, chunk - 1)); // [b, nc, d, n]
    let mut carry = match h0 {
        Some(h0) => h0.reshape([bsz, 1, d, n]),
        None => Tensor::zeros([bsz, 1, d, n], (&h_local.device(), h_local.dtype())),
    };
    let mut entering = Vec::with_capacity(nc);
    for ci in 0..nc {
        entering.push(carry.clone());
        carry = chunk_decay.clone().narrow(1, ci, 1) * carry + h_local.clone().narrow(1, ci, 1);
    }
    let entering = Tensor::cat(entering, 1); // [b, nc, d, n]

    // 3. The entering states' contribution at every step.
    let y: Vec<Tensor<B, 4>> = y
        .into_iter()
        .enumerate()
        .map(|(i, y_local)| {
            let from_entering = over_n(decay(step(&since_start, i)) * entering.clone(), step(&c, i));
            (y_local + from_entering).unsqueeze_dim::<4>(2) // [b, nc, 1, d]
        })
        .collect();
    let y = Tensor::cat(y, 2).reshape([bsz, nc * chunk, d]).narrow(1, 0, t);
    (y, carry.reshape([bsz, d, n]))
}

/// Appends `pad` zero steps to the time axis (axis 1) of a scan operand. The chunked scans pad
/// to a whole number of chunks; zero Δ steps leave the state untouched.
pub(crate) fn pad_time<B: Backend, const D: usize>(v: Tensor<B, D>, pad: usize) -> Tensor<B, D> {
    if pad == 0 {
        return v;
    }
    let mut shape = v.dims();
    shape[1] = pad;
    let zeros = Tensor::zeros(shape, (&v.device(), v.dtype()));
    Tensor::cat(vec![v, zeros], 1)
}
