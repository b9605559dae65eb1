//! Mamba's short causal depthwise convolution (Gu & Dao 2023, §3.4) as two CubeCL kernels,
//! forward and backward, from a zero history (training and whole-sequence evaluation; decoding
//! with a history uses the plain ops).
//!
//! The plain-ops twin is [`crate::model::conv::causal_conv`]: `k` shifted multiply-adds over a
//! zero-padded copy of the input, about `3k + 2` launches each way. `tests/kernels.rs` checks
//! these kernels against it, values and gradients.
//!
//! Why a kernel of its own and not fused into the selective scan (as issue 7 suggested "where
//! it pays"): the convolution's output feeds `x_proj`, which makes the scan's Δ, B and C, so
//! the scan cannot start before the whole convolution has run; fusing it would mean computing
//! it twice. `mamba_ssm` keeps it apart for the same reason (its `causal_conv1d` package).
//!
//! # Work split
//! One unit per (batch row, channel, block of `steps` time steps); consecutive units own
//! consecutive channels, so every read and write of the `[b, t, ch]` stream is coalesced. The
//! `k` taps of the unit's channel stay in registers. The backward also sums the weight
//! gradient over its steps in registers and writes one partial per unit
//! (`[b, ⌈t/steps⌉, ch, k]`), which the launcher adds with one tensor op: no atomics.

use cubecl::prelude::*;

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
