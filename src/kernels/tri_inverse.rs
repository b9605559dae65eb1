//! The inverse of a unit lower triangular matrix, `(I + M)⁻¹` for strictly lower triangular
//! `M`, in plain tensor ops: the UT transform of the delta rule's chunked form
//! (`model/delta_rule.rs`), and the twin of the fused kernel (`tri_inverse_kernel.rs`).

use burn::tensor::{Tensor, TensorData};

use super::Backend;
use super::tensors::float_tensor;

/// `(I + M)⁻¹` for strictly lower triangular `M` (`[n, C, C]`), as the product
/// `(I + N)(I + N²)(I + N⁴)…` with `N = −M`, which sums `Nʲ` for `j < 2^m ≥ C`; every higher
/// power of a strictly lower triangular `C × C` matrix is zero, so the sum is the exact inverse:
/// `2(⌈log₂ C⌉ − 1)` batched matmuls instead of a loop over the rows. Entries of `M` on and
/// above the diagonal must be zero.
pub fn unit_lower_inverse<B: Backend>(m: Tensor<B, 3>) -> Tensor<B, 3> {
    let dims = m.dims();
    let c = dims[2];
    let identity = float_tensor::<B, 2>(
        TensorData::new((0..c * c).map(|i| if i / c == i % c { 1.0f32 } else { 0.0 }).collect(), [c, c]),
        &m.device(),
    )
    .unsqueeze::<3>()
    .expand(dims);
    let mut power = m.neg();
    let mut inverse = identity + power.clone();
    let mut covered = 2; // powers 0 and 1
    while covered < c {
        power = super::matmul(power.clone(), power);
        inverse = inverse.clone() + super::matmul(inverse, power.clone());
        covered *= 2;
    }
    inverse
}
