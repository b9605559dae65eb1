//! Mamba-2's gated RMSNorm (`mamba_ssm`'s `RMSNormGated`, `norm_before_gate=False`) as two
//! CubeCL kernels: `out = rms_norm_per_group(y · silu(z)) · w`, the step between the SSD and
//! `out_proj`. In plain ops it is a sigmoid, three products, a square, a mean, a square root and
//! a reciprocal forward, and about twice that backward, each reading and writing `[b, t, di]`;
//! here it is one pass each way that reads `y` and `z` and recomputes the gate.
//!
//! The plain-ops twin is [`super::norm::gated_rms_norm`]; `tests/all/kernels.rs` checks
//! these kernels against it, values and gradients.
//!
//! # Work split
//! A work item is one group of one row (`groups` per row, `group` channels each: the norm
//! does not mix groups). One cube per item (grid-stride); its units stride over the group's
//! channels and sum squares by a tree in shared memory, as in `rms_norm_kernel.rs`. The
//! backward launches a multiple of `groups` cubes, so every item a cube visits is of the same
//! group, and each unit keeps its channels' weight gradient in registers across them; the
//! launcher sums the per-cube partial rows with one tensor op. No atomics.

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

use super::launch::{cast, empty, f32_contiguous};
use super::reduce::cube_sum;

/// `σ(z)`.
#[cube]
fn sigmoid<F: Float>(z: F) -> F {
    F::new(1.0) / (F::new(1.0) + F::exp(-z))
}

/// Forward: `g = y · z·σ(z)`, `rstd[item] = 1/√(mean_group g² + eps)`, `out = g · rstd · w`.
///
/// Layouts (contiguous): `y`, `z`, `out`: `[n, groups · group]`; `weight`: `[groups · group]`;
/// `rstd`: `[n · groups]`. Grid: x over items (grid-stride), `units` units per cube, a power of
/// two; `cols` = ⌈group / units⌉.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn gated_rms_norm_forward_kernel<F: Float>(
    y: &Tensor<F>,
    z: &Tensor<F>,
    weight: &Tensor<F>,
    out: &mut Tensor<F>,
    rstd: &mut Tensor<F>,
    group: u32,
    eps: f32,
    #[comptime] units: usize,
    #[comptime] cols: usize,
    #[define(F)] _dtype: StorageType,
) {
    let group = group as usize;
    let items = rstd.len();
    let unit = UNIT_POS_X as usize;
    let mut buffer = SharedMemory::<F>::new(units);
    let mut gated = Array::<F>::new(cols);
    let mut item = CUBE_POS_X as usize;
    while item < items {
        // Items are row-major over (row, group), so item · group is the group's first element.
        let base = item * group;
        let mut squares = F::new(0.0);
        for c in 0..cols {
            let j = unit + c * units;
            if j < group {
                let zv = z[base + j];
                let g = y[base + j] * zv * sigmoid::<F>(zv);
                gated[c] = g;
                squares += g * g;
            }
        }
        let mean = cube_sum::<F>(&mut buffer, squares) / F::cast_from(group as u32);
        let r = F::new(1.0) / F::sqrt(mean + F::cast_from(eps));
        let channel0 = base % weight.len();
        for c in 0..cols {
            let j = unit + c * units;
            if j < group {
                out[base + j] = gated[c] * r * weight[channel0 + j];
            }
        }
        if unit == 0 {
            rstd[item] = r;
        }
        item += CUBE_COUNT_X as usize;
    }
}

/// Backward, with `ĝ = g · rstd` and `h = dout · w`: `dg = rstd · (h − ĝ · mean_group(h · ĝ))`,
/// `dy = dg · z·σ(z)`, `dz = dg · y · σ(z)·(1 + z·(1 − σ(z)))`, and
/// `dw_part[cube, j] = Σ_{items of this cube} dout · ĝ` over the cube's group's channels `j`.
///
/// Same layouts as the forward; `dw_part`: `[cubes, group]`. The cube count is a multiple of
/// `groups`, so cube `c` only visits items of group `c mod groups`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn gated_rms_norm_backward_kernel<F: Float>(
    y: &Tensor<F>,
    z: &Tensor<F>,
    weight: &Tensor<F>,
    rstd: &Tensor<F>,
    d_out: &Tensor<F>,
    dy: &mut Tensor<F>,
    dz: &mut Tensor<F>,
    dw_part: &mut Tensor<F>,
    group: u32,
    #[comptime] units: usize,
    #[comptime] cols: usize,
    #[define(F)] _dtype: StorageType,
) {
    let group = group as usize;
    let items = rstd.len();
    let unit = UNIT_POS_X as usize;
    let mut buffer = SharedMemory::<F>::new(units);
    let mut dw = Array::<F>::new(cols);
    for c in 0..cols {
        dw[c] = F::new(0.0);
    }
    // Per channel, between the two passes: the gate σ(z), the normalised gated value ĝ and
    // h = dout · w. Registers, as in the forward, so the second pass computes no exp.
    let mut gate = Array::<F>::new(cols);
    let mut g_hat = Array::<F>::new(cols);
    let mut h = Array::<F>::new(cols);
    let mut item = CUBE_POS_X as usize;
    while item < items {
        let base = item * group;
        let channel0 = base % weight.len();
        let r = rstd[item];
        let mut dot = F::new(0.0);
        for c in 0..cols {
            let j = unit + c * units;
            if j < group {
                let zv = z[base + j];
                let s = sigmoid::<F>(zv);
                let dout = d_out[base + j];
                gate[c] = s;
                g_hat[c] = y[base + j] * zv * s * r;
                h[c] = dout * weight[channel0 + j];
                dot += h[c] * g_hat[c];
                dw[c] += dout * g_hat[c];
            }
        }
        let mean = cube_sum::<F>(&mut buffer, dot) / F::cast_from(group as u32);
        for c in 0..cols {
            let j = unit + c * units;
            if j < group {
                let (yv, zv, s) = (y[base + j], z[base + j], gate[c]);
                let dg = r * (h[c] - g_hat[c] * mean);
                dy[base + j] = dg * zv * s;
                dz[base + j] = dg * yv * s * (F::new(1.0) + zv * (F::new(1.0) - s));
            }
        }
        item += CUBE_COUNT_X as usize;
    }
    let part = CUBE_POS_X as usize * group;
    for c in 0..cols {
        let j = unit + c * units;
        if j < group {
            dw_part[part + j] = dw[c];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Launch (host side): grid, operand layouts and dtypes. Called by `cube.rs`.

/// Units per cube: a power of two, for the tree sum in shared memory.
const UNITS: usize = 128;

/// Backward cubes per group, at most: each writes one partial row of its group's weight
/// gradient, so fewer cubes than items keeps that sum small.
const BACKWARD_CUBES: usize = 1024;

/// `(out, rstd)`: `out` in `y`'s shape and dtype, `rstd` f32 `[b, t, groups]`.
pub(super) fn gated_rms_norm_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    y: CubeTensor<R>,
    z: CubeTensor<R>,
    weight: CubeTensor<R>,
    group: usize,
    eps: f64,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (shape, dtype) = (y.shape(), y.dtype());
    let [y, z, weight] = [y, z, weight].map(f32_contiguous::<R, F, I, BT>);
    let [b, t, di] = shape.dims::<3>();
    let items = b * t * (di / group);
    let (out, rstd) = (empty::<R>(&y, [b, t, di]), empty::<R>(&y, [b, t, di / group]));
    let client = y.client.clone();
    gated_rms_norm_forward_kernel::launch::<R>(
        &client,
        CubeCount::Static(items.clamp(1, 65_535) as u32, 1, 1),
        CubeDim::new_1d(UNITS as u32),
        y.into_tensor_arg(),
        z.into_tensor_arg(),
        weight.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        group as u32,
        eps as f32,
        UNITS,
        group.div_ceil(UNITS),
        DType::F32.into(),
    );
    (cast::<R, F, I, BT>(out, dtype), rstd)
}

/// `[dy, dz, dweight]` from the forward's `rstd`.
pub(super) fn gated_rms_norm_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    y: CubeTensor<R>,
    z: CubeTensor<R>,
    weight: CubeTensor<R>,
    rstd: CubeTensor<R>,
    d_out: CubeTensor<R>,
    group: usize,
) -> [CubeTensor<R>; 3] {
    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let (shape, dtypes) = (y.shape(), [y.dtype(), z.dtype(), weight.dtype()]);
    let [y, z, weight, rstd, d_out] = [y, z, weight, rstd, d_out].map(f32_contiguous::<R, F, I, BT>);
    let [b, t, di] = shape.dims::<3>();
    let groups = di / group;
    // A multiple of `groups`, so that each cube stays in one group (see the kernel).
    let cubes = groups * (BACKWARD_CUBES / groups).clamp(1, b * t);
    let (dy, dz) = (empty::<R>(&y, [b, t, di]), empty::<R>(&y, [b, t, di]));
    let dw_part = empty::<R>(&y, [cubes, group]);
    let client = y.client.clone();
    gated_rms_norm_backward_kernel::launch::<R>(
        &client,
        CubeCount::Static(cubes as u32, 1, 1),
        CubeDim::new_1d(UNITS as u32),
        y.into_tensor_arg(),
        z.into_tensor_arg(),
        weight.into_tensor_arg(),
        rstd.into_tensor_arg(),
        d_out.into_tensor_arg(),
        dy.clone().into_tensor_arg(),
        dz.clone().into_tensor_arg(),
        dw_part.clone().into_tensor_arg(),
        group as u32,
        UNITS,
        group.div_ceil(UNITS),
        DType::F32.into(),
    );
    // Partial rows `[k · groups, group]` → `[k, di]`, summed over the k cubes of each group.
    let dw_part = Cube::<R, F, I, BT>::float_reshape(dw_part, Shape::new([cubes / groups, di]));
    let dw =
        Cube::<R, F, I, BT>::float_reshape(Cube::<R, F, I, BT>::float_sum_dim(dw_part, 0), Shape::new([di]));
    let [y_dtype, z_dtype, w_dtype] = dtypes;
    [cast::<R, F, I, BT>(dy, y_dtype), cast::<R, F, I, BT>(dz, z_dtype), cast::<R, F, I, BT>(dw, w_dtype)]
}
