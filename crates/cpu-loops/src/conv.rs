//! Mamba's short causal depthwise convolution from a zero history (archlab's
//! `src/kernels/conv.rs` has the plain-ops twin, `src/kernels/conv_kernel.rs` the CubeCL
//! kernels), forward and backward, for the CPU backend.
//!
//! `y[b, t, c] = bias[c] + Σ_j weight[c, j] · x[b, t − (k − 1) + j, c]`, zero before the
//! sequence. The twin pads a copy of the input and runs `k` shifted multiply-adds over it, each
//! a tensor of its own (and as many again backward); here one pass over each batch row, the
//! channel loop innermost (contiguous, vectorised).
//!
//! # Work split and determinism
//! One unit of work per batch row, in parallel (rayon). The weight and bias gradients are
//! summed per row and the rows' partial sums added in row order, so the result does not depend
//! on the number of threads.

use rayon::prelude::*;

/// Sizes: `b` rows of `t` steps of `ch` channels, `k` taps.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub ch: usize,
    pub k: usize,
}

/// `y` (`[b, t, ch]`) from `x` (`[b, t, ch]`), `weight` (`[ch, k]`, tap `k − 1` on the current
/// step) and `bias` (`[ch]`).
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], d: Dims) -> Vec<f32> {
    let Dims { t, ch, k, .. } = d;
    let taps = transpose(weight, ch, k);
    let mut y = vec![0f32; d.b * t * ch];
    y.par_chunks_mut(t * ch).zip(x.par_chunks(t * ch)).for_each(|(y, x)| forward_row(y, x, &taps, bias, k));
    y
}

avx2_or_baseline! {
    /// One batch row of [`forward`], `taps` tap-major (`[k, ch]`).
    fn forward_row(y: &mut [f32], x: &[f32], taps: &[f32], bias: &[f32], k: usize) {
        let ch = bias.len();
        for s in 0..y.len() / ch {
            let out = &mut y[s * ch..(s + 1) * ch];
            out.copy_from_slice(bias);
            // Tap j reads step s − (k − 1) + j.
            for j in (k - 1).saturating_sub(s)..k {
                let src = &x[(s + j + 1 - k) * ch..(s + j + 2 - k) * ch];
                for ((o, w), v) in out.iter_mut().zip(&taps[j * ch..(j + 1) * ch]).zip(src) {
                    *o += w * v;
                }
            }
        }
    }
}

/// `(dx [b, t, ch], dweight [ch, k], dbias [ch])` given `dy`.
pub fn backward(x: &[f32], weight: &[f32], dy: &[f32], d: Dims) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let Dims { b, t, ch, k } = d;
    let taps = transpose(weight, ch, k);
    let mut dx = vec![0f32; b * t * ch];
    // Per row: dx, and the row's weight (tap-major) and bias gradients.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(t * ch)
        .zip(x.par_chunks(t * ch).zip(dy.par_chunks(t * ch)))
        .map(|(dx, (x, dy))| {
            let mut dtaps = vec![0f32; k * ch];
            let mut dbias = vec![0f32; ch];
            backward_row(dx, &mut dtaps, &mut dbias, x, dy, &taps);
            (dtaps, dbias)
        })
        .collect();
    let mut dtaps = vec![0f32; k * ch];
    let mut dbias = vec![0f32; ch];
    for (pt, pb) in &partials {
        for (a, p) in dtaps.iter_mut().zip(pt) {
            *a += p;
        }
        for (a, p) in dbias.iter_mut().zip(pb) {
            *a += p;
        }
    }
    (dx, transpose(&dtaps, k, ch), dbias)
}

avx2_or_baseline! {
    /// One batch row of [`backward`]: its `dx`, and its weight (tap-major, `[k, ch]`) and bias
    /// gradients.
    fn backward_row(dx: &mut [f32], dtaps: &mut [f32], dbias: &mut [f32], x: &[f32], dy: &[f32], taps: &[f32]) {
        let ch = dbias.len();
        let k = taps.len() / ch;
        for s in 0..dy.len() / ch {
            let g = &dy[s * ch..(s + 1) * ch];
            for (db, g) in dbias.iter_mut().zip(g) {
                *db += g;
            }
            for j in (k - 1).saturating_sub(s)..k {
                let at = (s + j + 1 - k) * ch;
                let w = &taps[j * ch..(j + 1) * ch];
                for ((dx, w), g) in dx[at..at + ch].iter_mut().zip(w).zip(g) {
                    *dx += w * g;
                }
                for ((dw, v), g) in dtaps[j * ch..(j + 1) * ch].iter_mut().zip(&x[at..at + ch]).zip(g) {
                    *dw += v * g;
                }
            }
        }
    }
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}
