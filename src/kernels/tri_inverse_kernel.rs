//! The UT transform's triangular inverse in Gated DeltaNet's chunked form, `T = (I + M)⁻¹` for
//! the strictly lower triangular `M = strictly_lower((β k kᵀ) ⊙ Γ)` of every chunk (fla's
//! `solve_tril`; `model/delta_rule.rs`), as two CubeCL kernels: forward substitution, and its
//! backward `dM = −Tᵀ dT Tᵀ` restricted to the strictly lower triangle.
//!
//! The plain-ops twin ([`super::tri_inverse::unit_lower_inverse`]) is blocked doubling
//! products joined by block forward substitution, 12 batched matmuls each way at C = 64 with
//! their temporaries and block copies; here it is one launch each way.
//! `tests/all/kernels.rs` checks both kernels against the twin, values and gradients.
//!
//! # Work split
//! One cube per matrix (a grid-stride loop over them), one unit per column: column `j` of `T`
//! depends only on column `j` of itself, `T[i, j] = −M[i, j] − Σ_{j<r<i} M[i, r] T[r, j]`, so the
//! units never wait for one another. The backward is column-wise too: unit `j` forms column
//! `j` of `Y = dT Tᵀ` (`Y[r, j] = Σ_{m≤j} dT[r, m] T[j, m]`), keeps it in a scratch tensor, and
//! then `dM[i, j] = −Σ_{r≥i} T[r, i] Y[r, j]` for `i > j`.

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

use super::launch::{cast, empty, f32_contiguous};

/// Forward. Layouts (contiguous): `m`, `inverse`: `[n, C, C]`. Only the strictly lower
/// triangle of `m` is read.
#[cube(launch)]
pub fn unit_lower_inverse_forward_kernel<F: Float>(
    m: &Tensor<F>,
    inverse: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let matrices = m.shape(0);
    let c = m.shape(1);
    let mut mat = CUBE_POS_X as usize;
    while mat < matrices {
        let base = mat * c * c;
        let mut j = UNIT_POS_X as usize;
        while j < c {
            for i in 0..c {
                let mut x = F::new(0.0);
                if i == j {
                    x = F::new(1.0);
                } else if i > j {
                    x = F::new(0.0) - m[base + i * c + j];
                    for r in j + 1..i {
                        x -= m[base + i * c + r] * inverse[base + r * c + j];
                    }
                }
                inverse[base + i * c + j] = x;
            }
            j += CUBE_DIM_X as usize;
        }
        mat += CUBE_COUNT_X as usize;
    }
}

/// Backward: `d_m` (`[n, C, C]`, zero on and above the diagonal) from the forward's output and
/// its gradient; `scratch` (`[n, C, C]`) holds `Y = dT Tᵀ`, each unit its own column.
#[cube(launch)]
pub fn unit_lower_inverse_backward_kernel<F: Float>(
    inverse: &Tensor<F>,
    d_inverse: &Tensor<F>,
    scratch: &mut Tensor<F>,
    d_m: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let matrices = inverse.shape(0);
    let c = inverse.shape(1);
    let mut mat = CUBE_POS_X as usize;
    while mat < matrices {
        let base = mat * c * c;
        let mut j = UNIT_POS_X as usize;
        while j < c {
            // Y[r, j] = Σ_{m ≤ j} dT[r, m] T[j, m]  (T is lower triangular).
            for r in 0..c {
                let mut y = F::new(0.0);
                for k in 0..j + 1 {
                    y += d_inverse[base + r * c + k] * inverse[base + j * c + k];
                }
                scratch[base + r * c + j] = y;
            }
            // dM[i, j] = −Σ_{r ≥ i} T[r, i] Y[r, j], strictly below the diagonal.
            for i in 0..c {
                let mut g = F::new(0.0);
                if i > j {
                    for r in i..c {
                        g -= inverse[base + r * c + i] * scratch[base + r * c + j];
                    }
                }
                d_m[base + i * c + j] = g;
            }
            j += CUBE_DIM_X as usize;
        }
        mat += CUBE_COUNT_X as usize;
    }
}

// ---------------------------------------------------------------------------------------------
// Launch (host side): grid, operand layouts and dtypes. Called by `cube.rs`.

/// Units per cube: one per column, up to this many (longer chunks loop).
const TRI_INVERSE_UNITS: usize = 64;
/// Cubes in the grid at most (a grid-stride loop covers more matrices): within every
/// backend's limit on one grid dimension.
const TRI_INVERSE_MAX_CUBES: usize = 65_535;

/// `[.., C, C]` as `[n, C, C]`, and the grid over it.
fn tri_inverse_grid(shape: &Shape) -> ([usize; 3], (CubeCount, CubeDim)) {
    let c = shape[shape.num_dims() - 1];
    let n = shape.num_elements() / (c * c).max(1);
    let cubes = n.clamp(1, TRI_INVERSE_MAX_CUBES);
    let units = c.clamp(1, TRI_INVERSE_UNITS);
    ([n, c, c], (CubeCount::Static(cubes as u32, 1, 1), CubeDim::new_1d(units as u32)))
}

pub(super) fn unit_lower_inverse_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    m: CubeTensor<R>,
) -> CubeTensor<R> {
    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let (shape, dtype) = (m.shape(), m.dtype());
    let (flat, (count, dim)) = tri_inverse_grid(&shape);
    let m = Cube::<R, F, I, BT>::float_reshape(f32_contiguous::<R, F, I, BT>(m), Shape::new(flat));
    let inverse = empty::<R>(&m, flat);
    unit_lower_inverse_forward_kernel::launch::<R>(
        &m.client,
        count,
        dim,
        m.clone().into_tensor_arg(),
        inverse.clone().into_tensor_arg(),
        DType::F32.into(),
    );
    cast::<R, F, I, BT>(Cube::<R, F, I, BT>::float_reshape(inverse, shape), dtype)
}

/// `d_m` from the forward's output and its gradient.
pub(super) fn unit_lower_inverse_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    inverse: CubeTensor<R>,
    d_inverse: CubeTensor<R>,
) -> CubeTensor<R> {
    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let (shape, dtype) = (inverse.shape(), inverse.dtype());
    let (flat, (count, dim)) = tri_inverse_grid(&shape);
    let [inverse, d_inverse] = [inverse, d_inverse]
        .map(f32_contiguous::<R, F, I, BT>)
        .map(|t| Cube::<R, F, I, BT>::float_reshape(t, Shape::new(flat)));
    let scratch = empty::<R>(&inverse, flat);
    let d_m = empty::<R>(&inverse, flat);
    unit_lower_inverse_backward_kernel::launch::<R>(
        &inverse.client,
        count,
        dim,
        inverse.clone().into_tensor_arg(),
        d_inverse.into_tensor_arg(),
        scratch.into_tensor_arg(),
        d_m.clone().into_tensor_arg(),
        DType::F32.into(),
    );
    cast::<R, F, I, BT>(Cube::<R, F, I, BT>::float_reshape(d_m, shape), dtype)
}
