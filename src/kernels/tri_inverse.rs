//! The inverse of a unit lower triangular matrix, `(I + M)⁻¹` for strictly lower triangular
//! `M`, in plain tensor ops: the UT transform of the delta rule's chunked form
//! (`model/delta_rule.rs`), inside the plain-ops twin of the fused UT transform (`ut_transform.rs`).

use burn::tensor::{Tensor, TensorData};

use super::Backend;
use super::tensors::float_tensor;

/// Rows per diagonal block of [`unit_lower_inverse`].
const BLOCK: usize = 16;

/// `(I + M)⁻¹` for strictly lower triangular `M` (`[n, C, C]`); entries of `M` on and above
/// the diagonal must be zero.
///
/// Blocked: the diagonal `16 × 16` blocks by [`doubling_inverse`], then block forward
/// substitution down the block rows, `X_ij = −X_ii Σ_k M_ik X_kj`: one pair of matmuls per
/// block row. The doubling product alone is exact in real arithmetic but not in float32 over
/// long chunks: when the keys of a chunk point the same way (as they can in a trained model), the
/// entries of `Nʲ` grow like binomial coefficients and cancel, and at C = 64 the result can be
/// wrong in every digit. Within 16 rows they stay small (a test holds both to an f64
/// reference). fla's `solve_tril` merges 16-row blocks the same way.
pub fn unit_lower_inverse<B: Backend>(m: Tensor<B, 3>) -> Tensor<B, 3> {
    let [n, c, _] = m.dims();
    if c <= BLOCK {
        return doubling_inverse(m);
    }
    let rows = |i: usize| i * BLOCK..((i + 1) * BLOCK).min(c);
    let blocks = c.div_ceil(BLOCK);
    // The diagonal blocks' inverses, the full-size ones in one batched product.
    let full = c / BLOCK;
    let mut diagonal: Vec<Tensor<B, 3>> = doubling_inverse(Tensor::cat(
        (0..full).map(|i| m.clone().slice([0..n, rows(i), rows(i)])).collect(),
        0,
    ))
    .chunk(full, 0);
    if full < blocks {
        diagonal.push(doubling_inverse(m.clone().slice([0..n, rows(full), rows(full)])));
    }
    let mut diagonal = diagonal.into_iter();
    let mut inverse = diagonal.next().expect("at least one block");
    for (i, x_ii) in (1..blocks).zip(diagonal) {
        let (r, start) = (rows(i), i * BLOCK);
        let left = super::matmul(m.clone().slice([0..n, r.clone(), 0..start]), inverse.clone());
        let below = super::matmul(x_ii.clone(), left).neg();
        // Above the new diagonal block the inverse is zero, as `M` is there.
        let zeros = m.clone().slice([0..n, 0..start, r]).zeros_like();
        inverse =
            Tensor::cat(vec![Tensor::cat(vec![inverse, zeros], 2), Tensor::cat(vec![below, x_ii], 2)], 1);
    }
    inverse
}

/// `(I + M)⁻¹` for strictly lower triangular `M` (`[n, C, C]`), as the product
/// `(I + N)(I + N²)(I + N⁴)…` with `N = −M`, which sums `Nʲ` for `j < 2^m ≥ C`; every higher
/// power of a strictly lower triangular `C × C` matrix is zero, so the sum is the exact inverse:
/// `2(⌈log₂ C⌉ − 1)` batched matmuls instead of a loop over the rows. Entries of `M` on and
/// above the diagonal must be zero.
fn doubling_inverse<B: Backend>(m: Tensor<B, 3>) -> Tensor<B, 3> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::CpuBackend;
    use crate::rng::Rng;

    /// `M = strictly_lower(β k kᵀ ⊙ Γ)` of one chunk whose `c` unit keys lie around one
    /// direction (`align` of the way), with gates β in (0, 1) and a slow decay Γ.
    fn chunk_matrix(c: usize, align: f64, seed: u64) -> Vec<f64> {
        let (d, mut rng) = (16, Rng::new(seed));
        let base: Vec<f64> = (0..d).map(|_| rng.normal()).collect();
        let keys: Vec<Vec<f64>> = (0..c)
            .map(|_| {
                let k: Vec<f64> = base.iter().map(|b| align * b + (1.0 - align) * rng.normal()).collect();
                let norm = k.iter().map(|x| x * x).sum::<f64>().sqrt();
                k.into_iter().map(|x| x / norm).collect()
            })
            .collect();
        let beta: Vec<f64> = (0..c).map(|_| 1.0 / (1.0 + (-rng.normal()).exp())).collect();
        let mut cum = vec![0.0; c];
        for i in 0..c {
            cum[i] = if i == 0 { 0.0 } else { cum[i - 1] } - 0.05 * rng.normal().abs();
        }
        let mut m = vec![0.0; c * c];
        for i in 0..c {
            for j in 0..i {
                let dot: f64 = keys[i].iter().zip(&keys[j]).map(|(a, b)| a * b).sum();
                m[i * c + j] = beta[i] * dot * (cum[i] - cum[j]).exp();
            }
        }
        m
    }

    /// `(I + M)⁻¹` by forward substitution in f64.
    fn reference(m: &[f64], c: usize) -> Vec<f64> {
        let mut x = vec![0.0; c * c];
        for i in 0..c {
            x[i * c + i] = 1.0;
            for j in 0..i {
                x[i * c + j] = -(j..i).map(|k| m[i * c + k] * x[k * c + j]).sum::<f64>();
            }
        }
        x
    }

    /// Largest error relative to the largest entry of the exact inverse (at least 1).
    fn error(inverse: impl Fn(Tensor<CpuBackend, 3>) -> Tensor<CpuBackend, 3>, m: &[f64], c: usize) -> f64 {
        let data = TensorData::new(m.iter().map(|&v| v as f32).collect::<Vec<_>>(), [1, c, c]);
        let got: Vec<f32> =
            inverse(Tensor::from_data(data, &Default::default())).into_data().to_vec().unwrap();
        let want = reference(m, c);
        let scale = want.iter().fold(1.0f64, |a, v| a.max(v.abs()));
        got.iter().zip(&want).map(|(g, w)| (f64::from(*g) - w).abs()).fold(0.0, f64::max) / scale
    }

    #[test]
    fn blocked_inverse_stays_accurate_where_the_doubling_product_does_not() {
        for (c, align) in [(16, 0.9), (50, 0.9), (64, 0.0), (64, 0.5), (64, 0.9), (64, 0.99), (100, 0.9)] {
            for seed in 0..4 {
                let m = chunk_matrix(c, align, seed);
                let blocked = error(unit_lower_inverse, &m, c);
                assert!(blocked < 1e-4, "C = {c}, alignment {align}, seed {seed}: error {blocked:e}");
                if c == 64 && align >= 0.9 {
                    // The case the blocking exists for: the plain doubling product fails it.
                    let doubling = error(doubling_inverse, &m, c);
                    assert!(doubling > 1e-2, "C = {c}, alignment {align}: doubling error only {doubling:e}");
                }
            }
        }
    }
}
