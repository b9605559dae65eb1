//! Cross-entropy over the vocabulary as two CubeCL kernels that read the logits in the
//! model's compute dtype (bf16 under mixed precision) and never write an fp32 copy of them.
//!
//! The plain-ops twin ([`super::cross_entropy::token_nll`]) casts the logits to fp32 and keeps the
//! `[n, vocab]` log-softmax for its backward: at batch 32 × 512 tokens and a 32K vocabulary
//! that is 2 GiB, the largest tensor of a small model's training step. Here the forward keeps
//! one float per row (the log-sum-exp), and the backward writes `softmax − one-hot` straight
//! into the gradient, in the logits' dtype. (The same idea as Liger-Kernel's fused linear
//! cross-entropy, without fusing the head matmul; `tests/all/kernels.rs` checks both kernels
//! against the twin.)
//!
//! # Work split
//! One cube per row (a grid-stride loop over rows, so any number of rows fits the grid): the
//! units stride over the vocabulary, coalesced, each keeping a running maximum and a sum of
//! exponentials rescaled to it (the online softmax of Milakov & Gimelshein 2018), and the cube
//! merges the units' pairs by a tree in shared memory.

use burn::tensor::TensorMetadata;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

use super::launch::{empty, f32_contiguous, u32_contiguous};

/// Forward: `lse[r] = log Σ_j exp(logits[r, j])` and `nll[r] = lse[r] − logits[r, targets[r]]`.
///
/// Layouts (contiguous): `logits`: `[n, vocab]`; `targets`, `nll`, `lse`: `[n]`. Targets must be
/// below `vocab` (token ids are checked when data is loaded); a larger one is not read.
/// Grid: x over rows (grid-stride), `units` units per cube, a power of two.
#[cube(launch)]
pub fn cross_entropy_forward_kernel<F: Float>(
    logits: &Tensor<F>,
    targets: &Tensor<u32>,
    nll: &mut Tensor<f32>,
    lse: &mut Tensor<f32>,
    #[comptime] units: usize,
    #[define(F)] _dtype: StorageType,
) {
    let rows = logits.shape(0);
    let vocab = logits.shape(1);
    let unit = UNIT_POS_X as usize;
    let mut maxima = SharedMemory::<f32>::new(units);
    let mut sums = SharedMemory::<f32>::new(units);
    let mut row = CUBE_POS_X as usize;
    while row < rows {
        let base = row * vocab;
        // This unit's share: running maximum m and Σ exp(x − m).
        let mut m = f32::new(-1.0e30);
        let mut s = f32::new(0.0);
        let mut j = unit;
        while j < vocab {
            let x = f32::cast_from(logits[base + j]);
            if x > m {
                s = s * f32::exp(m - x) + f32::new(1.0);
                m = x;
            } else {
                s += f32::exp(x - m);
            }
            j += units;
        }
        maxima[unit] = m;
        sums[unit] = s;
        sync_cube();
        // A runtime value (a comptime `units / 2` would not change inside the runtime loop).
        let mut stride = CUBE_DIM_X as usize / 2;
        while stride > 0 {
            if unit < stride {
                let (m1, m2) = (maxima[unit], maxima[unit + stride]);
                let top = f32::max(m1, m2);
                sums[unit] = sums[unit] * f32::exp(m1 - top) + sums[unit + stride] * f32::exp(m2 - top);
                maxima[unit] = top;
            }
            sync_cube();
            stride /= 2;
        }
        if unit == 0 {
            let row_lse = maxima[0] + f32::ln(sums[0]);
            lse[row] = row_lse;
            let target = targets[row] as usize;
            if target < vocab {
                nll[row] = row_lse - f32::cast_from(logits[base + target]);
            }
        }
        // The next row reuses the shared buffers.
        sync_cube();
        row += CUBE_COUNT_X as usize;
    }
}

/// Backward: `d_logits[r, j] = d_nll[r] · (exp(logits[r, j] − lse[r]) − [j = targets[r]])`,
/// written in the logits' dtype. Same layout and grid as the forward.
#[cube(launch)]
pub fn cross_entropy_backward_kernel<F: Float>(
    logits: &Tensor<F>,
    targets: &Tensor<u32>,
    lse: &Tensor<f32>,
    d_nll: &Tensor<f32>,
    d_logits: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let rows = logits.shape(0);
    let vocab = logits.shape(1);
    let units = CUBE_DIM_X as usize;
    let mut row = CUBE_POS_X as usize;
    while row < rows {
        let base = row * vocab;
        let (row_lse, grad) = (lse[row], d_nll[row]);
        let target = targets[row] as usize;
        let mut j = UNIT_POS_X as usize;
        while j < vocab {
            let p = f32::exp(f32::cast_from(logits[base + j]) - row_lse);
            let one_hot = if j == target { f32::new(1.0) } else { f32::new(0.0) };
            d_logits[base + j] = F::cast_from(grad * (p - one_hot));
            j += units;
        }
        row += CUBE_COUNT_X as usize;
    }
}

// ---------------------------------------------------------------------------------------------
// Launch (host side): grid, operand layouts and dtypes. Called by `cube.rs`.

/// Units per cube of the cross-entropy kernels: a power of two, for the forward's tree
/// reduction in shared memory (2 KiB).
const CROSS_ENTROPY_UNITS: usize = 256;

/// One cube per row, at most 65 535 of them (wgpu's grid limit); the kernels loop over the
/// rows beyond.
fn cross_entropy_grid(rows: usize) -> (CubeCount, CubeDim) {
    (CubeCount::Static(rows.clamp(1, 65_535) as u32, 1, 1), CubeDim::new_1d(CROSS_ENTROPY_UNITS as u32))
}

/// `(nll, lse)`, both f32 `[n]`, of logits `[n, vocab]` read in their own dtype.
pub(super) fn cross_entropy_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    logits: CubeTensor<R>,
    targets: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let logits = into_contiguous(logits);
    let targets = u32_contiguous::<R, F, I, BT>(targets);
    let n = logits.shape().dims::<2>()[0];
    let (nll, lse) = (empty::<R>(&logits, [n]), empty::<R>(&logits, [n]));
    let (count, dim) = cross_entropy_grid(n);
    let dtype = logits.dtype();
    cross_entropy_forward_kernel::launch::<R>(
        &logits.client,
        count,
        dim,
        logits.clone().into_tensor_arg(),
        targets.into_tensor_arg(),
        nll.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        CROSS_ENTROPY_UNITS,
        dtype.into(),
    );
    (nll, lse)
}

/// The logits' gradient, in their dtype, from the forward's row log-sum-exps.
pub(super) fn cross_entropy_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    logits: CubeTensor<R>,
    targets: CubeTensor<R>,
    lse: CubeTensor<R>,
    d_nll: CubeTensor<R>,
) -> CubeTensor<R> {
    let logits = into_contiguous(logits);
    let targets = u32_contiguous::<R, F, I, BT>(targets);
    let [lse, d_nll] = [lse, d_nll].map(f32_contiguous::<R, F, I, BT>);
    let dtype = logits.dtype();
    let d_logits =
        empty_device_dtype::<R>(logits.client.clone(), logits.device.clone(), logits.shape(), dtype);
    let (count, dim) = cross_entropy_grid(logits.shape().dims::<2>()[0]);
    cross_entropy_backward_kernel::launch::<R>(
        &logits.client,
        count,
        dim,
        logits.clone().into_tensor_arg(),
        targets.into_tensor_arg(),
        lse.into_tensor_arg(),
        d_nll.into_tensor_arg(),
        d_logits.clone().into_tensor_arg(),
        dtype.into(),
    );
    d_logits
}
