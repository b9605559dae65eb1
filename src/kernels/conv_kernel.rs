//! Mamba's short causal depthwise convolution (Gu & Dao 2023, §3.4) as two CubeCL kernels,
//! forward and backward, from a zero history (training and whole-sequence evaluation; decoding
//! with a history uses the plain ops).
//!
//! The plain-ops twin is [`super::conv::causal_conv`]: `k` shifted multiply-adds over a
//! zero-padded copy of the input, about `3k + 2` launches each way. `tests/all/kernels.rs` checks
//! these kernels against it, values and gradients.
//!
//! Why a kernel of its own and not fused into the selective scan, which would save a pass over
//! the stream: the convolution's output feeds `x_proj`, which makes the scan's Δ, B and C, so
//! the scan cannot start before the whole convolution has run; fusing it would mean computing
//! it twice. `mamba_ssm` keeps it apart for the same reason (its `causal_conv1d` package).
//!
//! # Work split
//! One unit per (batch row, channel, block of `steps` time steps); consecutive units own
//! consecutive channels, so every read and write of the `[b, t, ch]` stream is coalesced. The
//! `k` taps of the unit's channel stay in registers. The backward also sums the weight
//! gradient over its steps in registers and writes one partial per unit
//! (`[b, ⌈t/steps⌉, ch, k]`), which the launcher adds with one tensor op: no atomics.

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

use super::launch::{cast, empty, f32_contiguous};

/// Forward: `y[b, t, c] = bias[c] + Σ_j weight[c, j] · x[b, t − (k − 1) + j, c]`, zero before
/// the sequence.
///
/// Layouts (contiguous): `x`, `y`: `[b, t, ch]`; `weight`: `[ch, k]`; `bias`: `[ch]`. Grid: x
/// over channel blocks of `CUBE_DIM_X`, y over blocks of `steps` steps, z over batch rows.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn causal_conv_forward_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    bias: &Tensor<F>,
    y: &mut Tensor<F>,
    #[comptime] taps: usize,
    #[comptime] steps: usize,
    #[define(F)] _dtype: StorageType,
) {
    let seq_len = x.shape(1);
    let channels = x.shape(2);
    let channel = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    if channel >= channels {
        terminate!();
    }
    let first_row = CUBE_POS_Z as usize * seq_len;
    let mut w = Array::<F>::new(taps);
    for j in 0..taps {
        w[j] = weight[channel * taps + j];
    }
    let start = CUBE_POS_Y as usize * steps;
    let mut end = start + steps;
    if end > seq_len {
        end = seq_len;
    }
    for t in start..end {
        let mut acc = bias[channel];
        for j in 0..taps {
            // Tap j reads step t − (k − 1) + j; steps before 0 are the zero history.
            if t + j + 1 >= taps {
                acc += w[j] * x[(first_row + t + j + 1 - taps) * channels + channel];
            }
        }
        y[(first_row + t) * channels + channel] = acc;
    }
}

/// Backward: `dx[b, t, c] = Σ_j weight[c, j] · dy[b, t + (k − 1) − j, c]` (steps past the end
/// contribute nothing) and `dw_part[b, block, c, j] = Σ_{t in block} dy[b, t, c] · x[b, t − (k − 1) + j, c]`.
///
/// Same layout and grid as the forward; `dw_part`: `[b, ⌈t/steps⌉, ch, k]`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn causal_conv_backward_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    dy: &Tensor<F>,
    dx: &mut Tensor<F>,
    dw_part: &mut Tensor<F>,
    #[comptime] taps: usize,
    #[comptime] steps: usize,
    #[define(F)] _dtype: StorageType,
) {
    let seq_len = x.shape(1);
    let channels = x.shape(2);
    let channel = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    if channel >= channels {
        terminate!();
    }
    let first_row = CUBE_POS_Z as usize * seq_len;
    let mut w = Array::<F>::new(taps);
    let mut dw = Array::<F>::new(taps);
    for j in 0..taps {
        w[j] = weight[channel * taps + j];
        dw[j] = F::new(0.0);
    }
    let start = CUBE_POS_Y as usize * steps;
    let mut end = start + steps;
    if end > seq_len {
        end = seq_len;
    }
    for t in start..end {
        let grad = dy[(first_row + t) * channels + channel];
        let mut acc = F::new(0.0);
        for j in 0..taps {
            // x[t] reaches y[t + (k − 1) − j] through tap j.
            let out = t + taps - 1 - j;
            if out < seq_len {
                acc += w[j] * dy[(first_row + out) * channels + channel];
            }
            if t + j + 1 >= taps {
                dw[j] += grad * x[(first_row + t + j + 1 - taps) * channels + channel];
            }
        }
        dx[(first_row + t) * channels + channel] = acc;
    }
    let blocks = (seq_len + steps - 1) / steps;
    let part = ((CUBE_POS_Z as usize * blocks + CUBE_POS_Y as usize) * channels + channel) * taps;
    for j in 0..taps {
        dw_part[part + j] = dw[j];
    }
}

// ---------------------------------------------------------------------------------------------
// Launch (host side): grid, operand layouts and dtypes. Called by `cube.rs`.

/// Channels per cube of the convolution kernels (consecutive channels: coalesced access).
const CONV_CHANNELS: usize = 64;

/// Time steps per unit of the convolution kernels: enough to amortise loading the taps, few
/// enough that `[b, t/steps, ch]` units fill the GPU at short `t`.
const CONV_STEPS: usize = 32;

fn conv_grid(b: usize, t: usize, ch: usize) -> (CubeCount, CubeDim) {
    let count = CubeCount::Static(ch.div_ceil(CONV_CHANNELS) as u32, t.div_ceil(CONV_STEPS) as u32, b as u32);
    (count, CubeDim::new_1d(CONV_CHANNELS as u32))
}

pub(super) fn causal_conv_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    bias: CubeTensor<R>,
) -> CubeTensor<R> {
    let dtype = x.dtype();
    let [x, weight, bias] = [x, weight, bias].map(f32_contiguous::<R, F, I, BT>);
    let [b, t, ch] = x.shape().dims::<3>();
    let taps = weight.shape().dims::<2>()[1];
    let y = empty::<R>(&x, [b, t, ch]);
    let (count, dim) = conv_grid(b, t, ch);
    causal_conv_forward_kernel::launch::<R>(
        &x.client,
        count,
        dim,
        x.clone().into_tensor_arg(),
        weight.into_tensor_arg(),
        bias.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        taps,
        CONV_STEPS,
        DType::F32.into(),
    );
    cast::<R, F, I, BT>(y, dtype)
}

/// `[dx, dweight, dbias]`.
pub(super) fn causal_conv_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    dy: CubeTensor<R>,
) -> [CubeTensor<R>; 3] {
    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let (x_dtype, w_dtype) = (x.dtype(), weight.dtype());
    let [x, weight, dy] = [x, weight, dy].map(f32_contiguous::<R, F, I, BT>);
    let [b, t, ch] = x.shape().dims::<3>();
    let taps = weight.shape().dims::<2>()[1];
    let blocks = t.div_ceil(CONV_STEPS);
    let (dx, dw_part) = (empty::<R>(&x, [b, t, ch]), empty::<R>(&x, [b * blocks, ch * taps]));
    let (count, dim) = conv_grid(b, t, ch);
    causal_conv_backward_kernel::launch::<R>(
        &x.client,
        count,
        dim,
        x.clone().into_tensor_arg(),
        weight.into_tensor_arg(),
        dy.clone().into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        dw_part.clone().into_tensor_arg(),
        taps,
        CONV_STEPS,
        DType::F32.into(),
    );
    let dw = Cube::<R, F, I, BT>::float_reshape(
        Cube::<R, F, I, BT>::float_sum_dim(dw_part, 0),
        Shape::new([ch, taps]),
    );
    let rows = Cube::<R, F, I, BT>::float_reshape(dy, Shape::new([b * t, ch]));
    let db =
        Cube::<R, F, I, BT>::float_reshape(Cube::<R, F, I, BT>::float_sum_dim(rows, 0), Shape::new([ch]));
    [cast::<R, F, I, BT>(dx, x_dtype), cast::<R, F, I, BT>(dw, w_dtype), cast::<R, F, I, BT>(db, w_dtype)]
}
