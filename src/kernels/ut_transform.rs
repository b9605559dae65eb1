//! The intra-chunk part of the delta rule's chunked form (`model/delta_rule.rs`) in plain
//! tensor ops: for every chunk of `C` tokens, the UT transform
//!
//! ```text
//! A = strictly_lower((β k kᵀ) ⊙ Γ),  Γ_ij = exp(G_i − G_j)      fla's chunk_scaled_dot_kkt
//! T = (I + A)⁻¹                                                   fla's solve_tril
//! [U | W] = T · [β v | β exp(G) k]                                fla's recompute_w_u
//! ```
//!
//! with `G` the chunk's cumulative log decay. This is the twin of the fused kernel
//! (`ut_transform_kernel.rs`) and of the CPU backend's host loop (`crates/cpu-loops/src/ut_transform.rs`), and
//! the oracle of their tests. `Γ` comes from differences of the cumulative decay, as fla and
//! `transformers` form it; only differences on and below the diagonal (never positive) reach
//! the `exp`.

use burn::tensor::{Bool, Tensor, TensorData};

use super::Backend;
use super::tri_inverse::unit_lower_inverse;

/// `[U | W]` (`[n, C, dv + dk]`) of every chunk: `k` `[n, C, dk]` (L2-normalised keys), `v`
/// `[n, C, dv]`, `beta` `[n, C]`, `cum` `[n, C]` (the log decay summed from the chunk's start,
/// zeros for DeltaNet). Gradients flow to all four.
pub fn ut_transform<B: Backend>(
    k: Tensor<B, 3>,
    v: Tensor<B, 3>,
    beta: Tensor<B, 2>,
    cum: Tensor<B, 2>,
) -> Tensor<B, 3> {
    let [n, c, _] = k.dims();
    let not_strictly_lower = on_and_above_diagonal::<B>(c, &k.device()).unsqueeze::<3>().expand([n, c, c]);
    let beta = beta.unsqueeze_dim::<3>(2); // [n, C, 1]
    // Γ with the entries on and above the diagonal set to exp(0) before the exp, so that no
    // positive difference is exponentiated (and none reaches the gradient).
    let diff = cum.clone().unsqueeze_dim::<3>(2) - cum.clone().unsqueeze_dim::<3>(1);
    let decay = diff.mask_fill(not_strictly_lower.clone(), 0.0).exp();
    let kb = k.clone() * beta.clone();
    let a = (super::matmul(kb.clone(), k.swap_dims(1, 2)) * decay).mask_fill(not_strictly_lower, 0.0);
    let x = Tensor::cat(vec![v * beta, kb * cum.exp().unsqueeze_dim::<3>(2)], 2);
    super::matmul(unit_lower_inverse(a), x)
}

/// `[C, C]`, true on and above the diagonal: what a strictly lower triangular matrix zeroes.
pub(crate) fn on_and_above_diagonal<B: Backend>(c: usize, device: &B::Device) -> Tensor<B, 2, Bool> {
    let data: Vec<bool> = (0..c).flat_map(|i| (0..c).map(move |j| j >= i)).collect();
    Tensor::from_data(TensorData::new(data, [c, c]), device)
}
