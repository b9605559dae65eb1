//! SiLU, `x · σ(x)`, forward and backward in one pass each, with an `exp` the compiler
//! vectorises. As tensor ops SiLU is five element-wise passes each way and calls libm's scalar
//! `tanhf` (itself `expm1f`) per element: 17 % of a Mamba-2 training step on the CPU
//! (`bench/results/cpu-profile-2026-12-05.md`). Here [`exp`] is Cephes' `expf` in branch-free
//! arithmetic, so a block of elements runs through SIMD lanes.
//!
//! Element-wise, in blocks of [`BLOCK`] elements run in parallel (rayon): each output depends
//! on its own input only, so the result is the same for any number of threads.

use rayon::prelude::*;

/// Elements per unit of work.
const BLOCK: usize = 1 << 14;

/// `eˣ` to about 2 ulp for x in [−87.3, 88.3] (clamped there: finite and nonzero, never ∞ or
/// NaN), by Cephes' `expf`: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, a degree-6 polynomial for
/// `eʳ`, and `2ⁿ` put into the exponent bits. No branch and no libm call, so loops over it
/// vectorise.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // ln 2 split in two, so that n·LN2_HI is exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to an integer
    let x = x.clamp(-87.3, 88.3);
    let shifted = x * LOG2E + ROUND; // ROUND + n, n in [−126, 128]: n sits in the low bits
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let er = p * r * r + r + 1.0;
    // n as an integer read from the bits, not by `as i32`, whose saturating conversion the
    // compiler does not vectorise.
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    er * f32::from_bits((n_int.wrapping_add(127) as u32) << 23)
}

/// `x · σ(x)` element by element.
pub fn silu_forward(x: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(BLOCK).zip(x.par_chunks(BLOCK)).for_each(|(y, x)| silu_block(y, x));
    y
}

avx2_or_baseline! {
    fn silu_block(y: &mut [f32], x: &[f32]) {
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x / (1.0 + exp(-x));
        }
    }
}

/// `dx = dy · σ(x) · (1 + x · (1 − σ(x)))`.
pub fn silu_backward(x: &[f32], dy: &[f32]) -> Vec<f32> {
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(BLOCK)
        .zip(x.par_chunks(BLOCK).zip(dy.par_chunks(BLOCK)))
        .for_each(|(dx, (x, dy))| silu_backward_block(dx, x, dy));
    dx
}

avx2_or_baseline! {
    fn silu_backward_block(dx: &mut [f32], x: &[f32], dy: &[f32]) {
        for ((dx, &x), &dy) in dx.iter_mut().zip(x).zip(dy) {
            let s = 1.0 / (1.0 + exp(-x));
            *dx = dy * s * (1.0 + x * (1.0 - s));
        }
    }
}
