//! RMSNorm (Zhang & Sennrich 2019, arXiv:1910.07467) as two CubeCL kernels: one pass over each
//! row forward and one backward, where the plain-ops form is a square, a mean, a square root,
//! a reciprocal and two products forward, and about twice that backward, each a launch that
//! reads and writes the whole activation.
//!
//! The plain-ops twin is [`super::norm::rms_norm`]; `tests/all/kernels.rs` checks these
//! kernels against it, values and gradients.
//!
//! # Work split
//! One cube per row (a grid-stride loop over rows); its units stride over the channels and sum
//! their squares by a tree in shared memory. The backward keeps each unit's share of the
//! weight gradient `dw_j = Σ_rows dy·x̂` in registers across all the rows its cube visits and
//! writes one partial row per cube (`[cubes, d]`); the launcher adds the partials with one
//! tensor op. No atomics, so the result does not depend on scheduling.
//!
//! # The residual add, fused
//! In a pre-norm stack every norm but the first reads `x + branch`, the sum that the block
//! before it has just written (mamba_ssm's `fused_add_norm`, its `layer_norm_fn` with a
//! residual). [`add_rms_norm_forward_kernel`] forms that sum and normalises it in one pass:
//! two reads and two writes of the row where an add kernel and a norm kernel make three and
//! two. Backward, the sum's gradient has two sources, the norm and the residual path onward;
//! the backward kernel adds the second (`d_sum`) into the first as it writes it, instead of a
//! separate add of two whole activations.

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

use super::launch::{cast, empty, f32_contiguous};

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

/// Forward with the residual add: `sum = residual + delta`, then `y`, `rstd` of `sum` as in
/// [`rms_norm_forward_kernel`]. Each unit keeps its `cols` = ⌈d / units⌉ sums in registers
/// between the two passes over the row.
///
/// Layouts (contiguous): `residual`, `delta`, `sum`, `y`: `[n, d]`; `weight`: `[d]`;
/// `rstd`: `[n]`. Grid as the forward.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn add_rms_norm_forward_kernel<F: Float>(
    residual: &Tensor<F>,
    delta: &Tensor<F>,
    weight: &Tensor<F>,
    sum: &mut Tensor<F>,
    y: &mut Tensor<F>,
    rstd: &mut Tensor<F>,
    eps: f32,
    #[comptime] units: usize,
    #[comptime] cols: usize,
    #[define(F)] _dtype: StorageType,
) {
    let rows = residual.shape(0);
    let d = residual.shape(1);
    let unit = UNIT_POS_X as usize;
    let mut buffer = SharedMemory::<F>::new(units);
    let mut row_sum = Array::<F>::new(cols);
    let mut row = CUBE_POS_X as usize;
    while row < rows {
        let base = row * d;
        let mut squares = F::new(0.0);
        for c in 0..cols {
            let j = unit + c * units;
            if j < d {
                let v = residual[base + j] + delta[base + j];
                sum[base + j] = v;
                row_sum[c] = v;
                squares += v * v;
            }
        }
        let mean = cube_sum::<F>(&mut buffer, squares) / F::cast_from(d as u32);
        let r = F::new(1.0) / F::sqrt(mean + F::cast_from(eps));
        for c in 0..cols {
            let j = unit + c * units;
            if j < d {
                y[base + j] = row_sum[c] * r * weight[j];
            }
        }
        if unit == 0 {
            rstd[row] = r;
        }
        row += CUBE_COUNT_X as usize;
    }
}

/// Backward, with `x̂ = x · rstd` and `g = dy · w`:
/// `dx = rstd · (g − x̂ · mean_j(g · x̂)) (+ d_sum)`, and
/// `dw_part[cube, j] = Σ_{rows of this cube} dy · x̂`. With `accumulate`, `d_sum` (`[n, d]`) is
/// the gradient `x` already has from its other uses (the residual path), added in; without,
/// `d_sum` is not read.
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
    d_sum: &Tensor<F>,
    dx: &mut Tensor<F>,
    dw_part: &mut Tensor<F>,
    #[comptime] units: usize,
    #[comptime] cols: usize,
    #[comptime] accumulate: bool,
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
                let mut g = r * (dy[base + j] * weight[j] - x[base + j] * r * mean);
                if accumulate {
                    g += d_sum[base + j];
                }
                dx[base + j] = g;
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

// ---------------------------------------------------------------------------------------------
// Launch (host side): grid, operand layouts and dtypes. Called by `cube.rs`.

/// Units per cube of the RMSNorm kernels: a power of two, for the tree sum in shared memory.
const RMS_NORM_UNITS: usize = 128;

/// Cubes of the RMSNorm backward: each writes one partial row of the weight gradient, so
/// fewer cubes than rows (each loops over several) keeps that sum small.
const RMS_NORM_BACKWARD_CUBES: usize = 1024;

/// `(y, rstd)`: `y` in `x`'s shape and dtype, `rstd` f32 `[b, t]`.
pub(super) fn rms_norm_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    eps: f64,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (shape, dtype) = (x.shape(), x.dtype());
    let [x, weight] = [x, weight].map(f32_contiguous::<R, F, I, BT>);
    let [b, t, d] = shape.dims::<3>();
    let x = CubeBackend::<R, F, I, BT>::float_reshape(x, Shape::new([b * t, d]));
    let (y, rstd) = (empty::<R>(&x, [b * t, d]), empty::<R>(&x, [b, t]));
    rms_norm_forward_kernel::launch::<R>(
        &x.client,
        CubeCount::Static((b * t).clamp(1, 65_535) as u32, 1, 1),
        CubeDim::new_1d(RMS_NORM_UNITS as u32),
        x.clone().into_tensor_arg(),
        weight.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        eps as f32,
        RMS_NORM_UNITS,
        DType::F32.into(),
    );
    let y = CubeBackend::<R, F, I, BT>::float_reshape(y, shape);
    (cast::<R, F, I, BT>(y, dtype), rstd)
}

/// `(sum, y, rstd)` of `residual + delta`: `sum` and `y` in `residual`'s shape and dtype,
/// `rstd` f32 `[b, t]`.
pub(super) fn add_rms_norm_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    residual: CubeTensor<R>,
    delta: CubeTensor<R>,
    weight: CubeTensor<R>,
    eps: f64,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let (shape, dtype) = (residual.shape(), residual.dtype());
    let [residual, delta, weight] = [residual, delta, weight].map(f32_contiguous::<R, F, I, BT>);
    let [b, t, d] = shape.dims::<3>();
    let rows = Shape::new([b * t, d]);
    let residual = Cube::<R, F, I, BT>::float_reshape(residual, rows.clone());
    let delta = Cube::<R, F, I, BT>::float_reshape(delta, rows);
    let [sum, y] = [0, 1].map(|_| empty::<R>(&residual, [b * t, d]));
    let rstd = empty::<R>(&residual, [b, t]);
    add_rms_norm_forward_kernel::launch::<R>(
        &residual.client,
        CubeCount::Static((b * t).clamp(1, 65_535) as u32, 1, 1),
        CubeDim::new_1d(RMS_NORM_UNITS as u32),
        residual.clone().into_tensor_arg(),
        delta.into_tensor_arg(),
        weight.into_tensor_arg(),
        sum.clone().into_tensor_arg(),
        y.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        eps as f32,
        RMS_NORM_UNITS,
        d.div_ceil(RMS_NORM_UNITS),
        DType::F32.into(),
    );
    let [sum, y] =
        [sum, y].map(|o| cast::<R, F, I, BT>(Cube::<R, F, I, BT>::float_reshape(o, shape.clone()), dtype));
    (sum, y, rstd)
}

/// `[dx, dweight]` from the forward's row `rstd`; `d_sum`, when given, is added into `dx`
/// (the gradient `x` has from its other uses).
pub(super) fn rms_norm_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    rstd: CubeTensor<R>,
    dy: CubeTensor<R>,
    d_sum: Option<CubeTensor<R>>,
) -> [CubeTensor<R>; 2] {
    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let (shape, dtypes) = (x.shape(), [x.dtype(), weight.dtype()]);
    let [x, weight, rstd, dy] = [x, weight, rstd, dy].map(f32_contiguous::<R, F, I, BT>);
    let [b, t, d] = shape.dims::<3>();
    let rows = Shape::new([b * t, d]);
    let x = Cube::<R, F, I, BT>::float_reshape(x, rows.clone());
    let dy = Cube::<R, F, I, BT>::float_reshape(dy, rows.clone());
    let accumulate = d_sum.is_some();
    // Without `accumulate` the kernel does not read `d_sum`; `dy` stands in for it.
    let d_sum = match d_sum {
        Some(g) => Cube::<R, F, I, BT>::float_reshape(f32_contiguous::<R, F, I, BT>(g), rows),
        None => dy.clone(),
    };
    let cubes = (b * t).clamp(1, RMS_NORM_BACKWARD_CUBES);
    let (dx, dw_part) = (empty::<R>(&x, [b * t, d]), empty::<R>(&x, [cubes, d]));
    rms_norm_backward_kernel::launch::<R>(
        &x.client,
        CubeCount::Static(cubes as u32, 1, 1),
        CubeDim::new_1d(RMS_NORM_UNITS as u32),
        x.clone().into_tensor_arg(),
        weight.into_tensor_arg(),
        rstd.into_tensor_arg(),
        dy.into_tensor_arg(),
        d_sum.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        dw_part.clone().into_tensor_arg(),
        RMS_NORM_UNITS,
        d.div_ceil(RMS_NORM_UNITS),
        accumulate,
        DType::F32.into(),
    );
    let dx = Cube::<R, F, I, BT>::float_reshape(dx, shape);
    let dw =
        Cube::<R, F, I, BT>::float_reshape(Cube::<R, F, I, BT>::float_sum_dim(dw_part, 0), Shape::new([d]));
    let [dx_dtype, dw_dtype] = dtypes;
    [cast::<R, F, I, BT>(dx, dx_dtype), cast::<R, F, I, BT>(dw, dw_dtype)]
}
