//! The intra-chunk part of Gated DeltaNet's chunked form as two CubeCL kernels: per chunk,
//! `A = strictly_lower((β k kᵀ) ⊙ Γ)`, `T = (I + A)⁻¹` and `[U | W] = T [β v | β exp(G) k]` in
//! one launch (fla's `chunk_scaled_dot_kkt`, `solve_tril` and `recompute_w_u`), and its backward
//! in another. The equations and the plain-ops twin are in `ut_transform.rs`, the backward's
//! algebra in `crates/cpu-loops/src/ut_transform.rs` (the CPU backend's host loop, the same algorithm);
//! `tests/all/kernels.rs` checks the kernels against the twin, values and gradients.
//!
//! # Work split
//! One cube per chunk (a grid-stride loop over them), in phases separated by cube barriers:
//! - forward: (1) one unit per row of `A`; (2) one unit per column of `T`, by forward
//!   substitution, `T_ij = −A_ij − Σ_{j<r<i} A_ir T_rj` (a column depends only on itself);
//!   (3) one unit per column of the output, `Out_ic = Σ_{r≤i} T_ir X_rc`.
//! - backward: (1) one unit per column of `dX = Tᵀ dOut`; (2) one unit per row `i`:
//!   `dA_ij = −dX_i·Out_j` for `j < i`, whence row `i` of `dS` (the gradient of `k kᵀ`) and of
//!   `β_i ∂A/∂β_i`, and every term of `dv_i`, `dβ_i` and `dG_i` that row `i` owns; (3) one unit per
//!   row `i`: the column sums `dG_i −= Σ_{r>i} β_r ∂A_ri/∂β_r` and
//!   `dk_i = β_i exp(G_i) dXk_i + Σ_j dS_ij k_j + Σ_j dS_ji k_j`.
//!
//! `A`, `dX`, `dS` live in scratch tensors; nothing of `C²` size is kept but `T`, which the
//! backward reads.

use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

use super::launch::{cast, empty, f32_contiguous};

/// Forward. Layouts (contiguous): `k` `[n, C, dk]`, `v` `[n, C, dv]`, `beta`, `cum` `[n, C]`;
/// `gram` (scratch) and `inverse` `[n, C, C]`; `out` `[n, C, dv + dk]`.
#[cube(launch)]
pub fn ut_transform_forward_kernel<F: Float>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    beta: &Tensor<F>,
    cum: &Tensor<F>,
    gram: &mut Tensor<F>,
    inverse: &mut Tensor<F>,
    out: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let matrices = k.shape(0);
    let c = k.shape(1);
    let dk = k.shape(2);
    let dv = v.shape(2);
    let dx = dv + dk;
    let mut mat = CUBE_POS_X as usize;
    while mat < matrices {
        let sq = mat * c * c;
        let kb = mat * c * dk;
        let vb = mat * c * dv;
        let gb = mat * c;
        let ob = mat * c * dx;
        // 1. A, row by row.
        let mut i = UNIT_POS_X as usize;
        while i < c {
            for j in 0..c {
                let mut a = F::new(0.0);
                if j < i {
                    let mut dot = F::new(0.0);
                    for e in 0..dk {
                        dot += k[kb + i * dk + e] * k[kb + j * dk + e];
                    }
                    a = beta[gb + i] * F::exp(cum[gb + i] - cum[gb + j]) * dot;
                }
                gram[sq + i * c + j] = a;
            }
            i += CUBE_DIM_X as usize;
        }
        sync_cube();
        // 2. T, column by column.
        let mut j = UNIT_POS_X as usize;
        while j < c {
            for i in 0..c {
                let mut x = F::new(0.0);
                if i == j {
                    x = F::new(1.0);
                } else if i > j {
                    x = F::new(0.0) - gram[sq + i * c + j];
                    for r in j + 1..i {
                        x -= gram[sq + i * c + r] * inverse[sq + r * c + j];
                    }
                }
                inverse[sq + i * c + j] = x;
            }
            j += CUBE_DIM_X as usize;
        }
        sync_cube();
        // 3. [U | W] = T X, column by column.
        let mut col = UNIT_POS_X as usize;
        while col < dx {
            for i in 0..c {
                let mut acc = F::new(0.0);
                for r in 0..i + 1 {
                    let mut x = beta[gb + r];
                    if col < dv {
                        x *= v[vb + r * dv + col];
                    } else {
                        x *= F::exp(cum[gb + r]) * k[kb + r * dk + col - dv];
                    }
                    acc += inverse[sq + i * c + r] * x;
                }
                out[ob + i * dx + col] = acc;
            }
            col += CUBE_DIM_X as usize;
        }
        sync_cube();
        mat += CUBE_COUNT_X as usize;
    }
}

/// Backward. Layouts as the forward's, plus `d_out` (`[n, C, dv + dk]`), the scratch `d_x`
/// (`[n, C, dv + dk]`), `d_s` and `beta_q` (`[n, C, C]`), and the gradients in their operands'
/// shapes.
#[cube(launch)]
pub fn ut_transform_backward_kernel<F: Float>(
    k: &Tensor<F>,
    v: &Tensor<F>,
    beta: &Tensor<F>,
    cum: &Tensor<F>,
    inverse: &Tensor<F>,
    out: &Tensor<F>,
    d_out: &Tensor<F>,
    d_x: &mut Tensor<F>,
    d_s: &mut Tensor<F>,
    beta_q: &mut Tensor<F>,
    d_k: &mut Tensor<F>,
    d_v: &mut Tensor<F>,
    d_beta: &mut Tensor<F>,
    d_cum: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let matrices = k.shape(0);
    let c = k.shape(1);
    let dk = k.shape(2);
    let dv = v.shape(2);
    let dx = dv + dk;
    let mut mat = CUBE_POS_X as usize;
    while mat < matrices {
        let sq = mat * c * c;
        let kb = mat * c * dk;
        let vb = mat * c * dv;
        let gb = mat * c;
        let ob = mat * c * dx;
        // 1. dX = Tᵀ dOut, column by column.
        let mut col = UNIT_POS_X as usize;
        while col < dx {
            for r in 0..c {
                let mut g = F::new(0.0);
                for i in r..c {
                    g += inverse[sq + i * c + r] * d_out[ob + i * dx + col];
                }
                d_x[ob + r * dx + col] = g;
            }
            col += CUBE_DIM_X as usize;
        }
        sync_cube();
        // 2. Row i: dA, dS and β ∂A/∂β; dv_i, dβ_i and the row's part of dG_i.
        let mut i = UNIT_POS_X as usize;
        while i < c {
            let b_i = beta[gb + i];
            let mut db = F::new(0.0);
            let mut dg = F::new(0.0);
            for j in 0..c {
                let mut ds = F::new(0.0);
                let mut bq = F::new(0.0);
                if j < i {
                    let mut da = F::new(0.0);
                    for e in 0..dx {
                        da -= d_x[ob + i * dx + e] * out[ob + j * dx + e];
                    }
                    let mut s = F::new(0.0);
                    for e in 0..dk {
                        s += k[kb + i * dk + e] * k[kb + j * dk + e];
                    }
                    let decay = F::exp(cum[gb + i] - cum[gb + j]);
                    let q = da * decay * s;
                    db += q;
                    bq = b_i * q;
                    dg += bq;
                    ds = da * b_i * decay;
                }
                d_s[sq + i * c + j] = ds;
                beta_q[sq + i * c + j] = bq;
            }
            let mut dxv_v = F::new(0.0);
            for e in 0..dv {
                let g = d_x[ob + i * dx + e];
                d_v[vb + i * dv + e] = b_i * g;
                dxv_v += g * v[vb + i * dv + e];
            }
            let mut dxk_k = F::new(0.0);
            for e in 0..dk {
                dxk_k += d_x[ob + i * dx + dv + e] * k[kb + i * dk + e];
            }
            let scale = F::exp(cum[gb + i]);
            d_beta[gb + i] = db + dxv_v + scale * dxk_k;
            d_cum[gb + i] = dg + b_i * scale * dxk_k;
            i += CUBE_DIM_X as usize;
        }
        sync_cube();
        // 3. Row i: the column sums into dG_i, and dk_i.
        let mut row = UNIT_POS_X as usize;
        while row < c {
            let i = row;
            let mut below = F::new(0.0);
            for r in i + 1..c {
                below += beta_q[sq + r * c + i];
            }
            d_cum[gb + i] = d_cum[gb + i] - below;
            let scale = beta[gb + i] * F::exp(cum[gb + i]);
            for e in 0..dk {
                let mut g = scale * d_x[ob + i * dx + dv + e];
                for j in 0..i {
                    g += d_s[sq + i * c + j] * k[kb + j * dk + e];
                }
                for j in i + 1..c {
                    g += d_s[sq + j * c + i] * k[kb + j * dk + e];
                }
                d_k[kb + i * dk + e] = g;
            }
            row += CUBE_DIM_X as usize;
        }
        sync_cube();
        mat += CUBE_COUNT_X as usize;
    }
}

// ---------------------------------------------------------------------------------------------
// Launch (host side): grid, operand layouts and dtypes. Called by `cube.rs`.

/// Units per cube at most (rows, columns and output columns beyond it loop).
const UT_UNITS: usize = 64;
/// Cubes in the grid at most (a grid-stride loop covers more chunks): within every backend's
/// limit on one grid dimension.
const UT_MAX_CUBES: usize = 65_535;

fn ut_grid(n: usize, c: usize, dx: usize) -> (CubeCount, CubeDim) {
    let cubes = n.clamp(1, UT_MAX_CUBES);
    let units = c.max(dx).clamp(1, UT_UNITS);
    (CubeCount::Static(cubes as u32, 1, 1), CubeDim::new_1d(units as u32))
}

/// `[out, inverse]`: `out` in the values' dtype, `inverse` in f32.
pub(super) fn ut_transform_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    beta: CubeTensor<R>,
    cum: CubeTensor<R>,
) -> [CubeTensor<R>; 2] {
    let dtype = v.dtype();
    let [n, c, dk] = k.shape().dims::<3>();
    let dv = v.shape().dims::<3>()[2];
    let [k, v, beta, cum] = [k, v, beta, cum].map(f32_contiguous::<R, F, I, BT>);
    let gram = empty::<R>(&k, [n, c, c]);
    let inverse = empty::<R>(&k, [n, c, c]);
    let out = empty::<R>(&k, [n, c, dv + dk]);
    let (count, dim) = ut_grid(n, c, dv + dk);
    ut_transform_forward_kernel::launch::<R>(
        &k.client,
        count,
        dim,
        k.clone().into_tensor_arg(),
        v.into_tensor_arg(),
        beta.into_tensor_arg(),
        cum.into_tensor_arg(),
        gram.into_tensor_arg(),
        inverse.clone().into_tensor_arg(),
        out.clone().into_tensor_arg(),
        DType::F32.into(),
    );
    [cast::<R, F, I, BT>(out, dtype), inverse]
}

/// `[dk, dv, dbeta, dcum]`, each in its operand's dtype.
pub(super) fn ut_transform_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    operands: [CubeTensor<R>; 4],
    inverse: CubeTensor<R>,
    out: CubeTensor<R>,
    d_out: CubeTensor<R>,
) -> [CubeTensor<R>; 4] {
    let dtypes = operands.clone().map(|t| t.dtype());
    let [n, c, dk] = operands[0].shape().dims::<3>();
    let dv = operands[1].shape().dims::<3>()[2];
    let dx = dv + dk;
    let [k, v, beta, cum] = operands.map(f32_contiguous::<R, F, I, BT>);
    let [inverse, out, d_out] = [inverse, out, d_out].map(f32_contiguous::<R, F, I, BT>);
    let d_x = empty::<R>(&k, [n, c, dx]);
    let d_s = empty::<R>(&k, [n, c, c]);
    let beta_q = empty::<R>(&k, [n, c, c]);
    let grads = [Shape::new([n, c, dk]), Shape::new([n, c, dv]), Shape::new([n, c]), Shape::new([n, c])]
        .map(|shape| empty::<R>(&k, shape));
    let (count, dim) = ut_grid(n, c, dx);
    let [d_k, d_v, d_beta, d_cum] = grads.clone();
    ut_transform_backward_kernel::launch::<R>(
        &k.client,
        count,
        dim,
        k.clone().into_tensor_arg(),
        v.into_tensor_arg(),
        beta.into_tensor_arg(),
        cum.into_tensor_arg(),
        inverse.into_tensor_arg(),
        out.into_tensor_arg(),
        d_out.into_tensor_arg(),
        d_x.into_tensor_arg(),
        d_s.into_tensor_arg(),
        beta_q.into_tensor_arg(),
        d_k.into_tensor_arg(),
        d_v.into_tensor_arg(),
        d_beta.into_tensor_arg(),
        d_cum.into_tensor_arg(),
        DType::F32.into(),
    );
    let mut dtypes = dtypes.into_iter();
    grads.map(|g| cast::<R, F, I, BT>(g, dtypes.next().expect("four dtypes")))
}
