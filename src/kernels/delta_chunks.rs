//! (Gated) DeltaNet's pass over chunks in plain tensor ops: step 2 of the chunked delta rule
//! (`model::delta_rule::chunked` has step 1 and the derivation), the twin of the CPU host loop
//! (`crates/cpu-loops/src/delta_chunks.rs`).
//!
//! Per (sequence, head), chunk by chunk, from the state `S` entering the chunk:
//!
//! ```text
//! V'_n = U_n − W_n S_n                the part of U the state does not already explain
//! O_n  = Q_n S_n + A_n V'_n           Q: q ⊙ exp(G); A: lower_incl((q kᵀ) ⊙ Γ)
//! S_{n+1} = α_n S_n + K_nᵀ V'_n       K: k ⊙ exp(G_last − G); α: exp(G_last)
//! ```

use burn::tensor::Tensor;

use super::{Backend, matmul};

/// The chunked delta rule's outputs and final state, all chunks in order.
///
/// # Shapes
/// - u: `[b, nc, h, C, dv]`; w, q, k: `[b, nc, h, C, dk]`; attn: `[b, nc, h, C, C]`;
///   decay: `[b, nc, h]`; s0: `[b, h, dk, dv]`
/// - → (`O` of every chunk `[b, nc, h, C, dv]`, the final state `[b, h, dk, dv]`)
pub fn pass_chunks<B: Backend>(
    u: Tensor<B, 5>,
    w: Tensor<B, 5>,
    q: Tensor<B, 5>,
    k: Tensor<B, 5>,
    attn: Tensor<B, 5>,
    decay: Tensor<B, 3>,
    s0: Tensor<B, 4>,
) -> (Tensor<B, 5>, Tensor<B, 4>) {
    let [b, nc, h, _, _] = u.dims();
    let nth = |v: &Tensor<B, 5>, n: usize| {
        let [b, _, h, r, w] = v.dims();
        v.clone().narrow(1, n, 1).reshape([b, h, r, w])
    };
    let mut s = s0;
    let mut outs = Vec::with_capacity(nc);
    for n in 0..nc {
        let fresh = nth(&u, n) - matmul(nth(&w, n), s.clone()); // V', [b, h, C, dv]
        outs.push(matmul(nth(&q, n), s.clone()) + matmul(nth(&attn, n), fresh.clone()));
        let alpha = decay.clone().narrow(1, n, 1).reshape([b, h, 1, 1]);
        s = s * alpha + matmul(nth(&k, n).swap_dims(2, 3), fresh);
    }
    (Tensor::stack(outs, 1), s)
}
