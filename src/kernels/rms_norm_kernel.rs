//! RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467) as two CubeCL kernels: one pass over each
//! row forward and one backward, where the plain-ops form is a square, a mean, a square root,
//! a reciprocal and two products forward, and about twice that backward, each a launch that
//! reads and writes the whole activation.
//!
//! The plain-ops twin is [`crate::model::layers::rms_norm`]; `tests/kernels.rs` checks these
//! kernels against it, values and gradients.
//!
//! # Work split
//! One cube per row (a grid-stride loop over rows); its units stride over the channels and sum
//! their squares by a tree in shared memory. The backward keeps each unit's share of the
//! weight gradient `dw_j = Σ_rows dy·x̂` in registers across all the rows its cube visits and
//! writes one partial row per cube (`[cubes, d]`); the launcher adds the partials with one
//! tensor op. No atomics, so the result does not depend on scheduling.

use cubecl::prelude::*;

use super::reduce::cube_sum;

/// Forward: `y[r, :] = x[r, :] · rstd[r] · w` with `rstd[r] = 1/√(mean_j x[r, j]² + eps)`.
///
/// Layouts (contiguous): `x`, `y`: `[n, d]`; `weight`: `[d]`; `rstd`: `[n]`. Grid: x over rows
/// (grid-stride), `units` units per cube, a power of two.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_forward_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    y: &mut Tensor<F>,
    rstd: &mut Tensor<F>,
    eps: f32,
    #[comptime] units: usize,
    #[define(F)] _dtype: StorageType,
) {
    let rows = x.shape(0);
    let d = x.shape(1);
    let unit = UNIT_POS_X as usize;
    let mut buffer = SharedMemory::<F>::new(units);
    let mut row = CUBE_POS_X as usize;
    while row < rows {
        let base = row * d;
        let mut squares = F::new(0.0);
        let mut j = unit;
        while j < d {
            let v = x[base + j];
            squares += v * v;
            j += units;
        }
        let mean = cube_sum::<F>(&mut buffer, squares) / F::cast_from(d as u32);
        let r = F::new(1.0) / F::sqrt(mean + F::cast_from(eps));
        let mut j = unit;
        while j < d {
            y[base + j] = x[base + j] * r * weight[j];
            j += units;
        }
        if unit == 0 {
            rstd[row] = r;
        }
        row += CUBE_COUNT_X as usize;
    }
}

/// Backward, with `x̂ = x · rstd` and `g = dy · w`:
/// `dx = rstd · (g − x̂ · mean_j(g · x̂))`, and `dw_part[cube, j] = Σ_{rows of this cube} dy · x̂`.
///
/// Same layout and grid as the forward; `dw_part`: `[cubes, d]`; `cols` = ⌈d / units⌉, the
/// channels each unit owns.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_backward_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    rstd: &Tensor<F>,
    dy: &Tensor<F>,
    dx: &mut Tensor<F>,
    dw_part: &mut Tensor<F>,
    #[comptime] units: usize,
    #[comptime] cols: usize,
    #[define(F)] _dtype: StorageType,
) {
    let rows = x.shape(0);
    let d = x.shape(1);
    let unit = UNIT_POS_X as usize;
    let mut buffer = SharedMemory::<F>::new(units);
    let mut dw = Array::<F>::new(cols);
    for c in 0..cols {
        dw[c] = F::new(0.0);
    }
    let mut row = CUBE_POS_X as usize;
    while row < rows {
        let base = row * d;
        let r = rstd[row];
        let mut dot = F::new(0.0);
        for c in 0..cols {
            let j = unit + c * units;
            if j < d {
                let x_hat = x[base + j] * r;
                dot += dy[base + j] * weight[j] * x_hat;
                dw[c] += dy[base + j] * x_hat;
            }
        }
        let mean = cube_sum::<F>(&mut buffer, dot) / F::cast_from(d as u32);
        for c in 0..cols {
            let j = unit + c * units;
            if j < d {
                dx[base + j] = r * (dy[base + j] * weight[j] - x[base + j] * r * mean);
            }
        }
        row += CUBE_COUNT_X as usize;
    }
    let part = CUBE_POS_X as usize * d;
    for c in 0..cols {
        let j = unit + c * units;
        if j < d {
            dw_part[part + j] = dw[c];
        }
    }
}
