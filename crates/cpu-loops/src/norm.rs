//! RMSNorm and Mamba-2's gated RMSNorm (archlab's `src/kernels/norm.rs` has the plain-ops
//! twins, `rms_norm_kernel.rs` and `gated_rms_norm_kernel.rs` the CubeCL kernels), forward and
//! backward, for the CPU backend: one pass over each row where the twin runs a square, a mean, a
//! square root, a reciprocal and two products as tensors of their own (about twice that
//! backward).
//!
//! # Work split and determinism
//! Rows are taken in fixed blocks of [`ROWS`], one block per unit of work (rayon). The weight
//! gradient is summed per block and the blocks' sums added in block order, so the result does
//! not depend on the number of threads.

use rayon::prelude::*;

use crate::dot;

/// Rows per unit of work.
pub const ROWS: usize = 64;

/// `1 / √(mean(x²) + eps)` of one group of values.
fn rstd(x: &[f32], eps: f32) -> f32 {
    1.0 / (dot(x, x) / x.len() as f32 + eps).sqrt()
}

/// RMSNorm over rows of `d`: `(y, rstd)` with `y = x · rstd · weight` and one `rstd` per row.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let d = weight.len();
    let mut y = vec![0f32; x.len()];
    let mut r = vec![0f32; x.len() / d];
    y.par_chunks_mut(ROWS * d).zip(r.par_chunks_mut(ROWS)).zip(x.par_chunks(ROWS * d)).for_each(
        |((y, r), x)| {
            for ((y, r), x) in y.chunks_mut(d).zip(r.iter_mut()).zip(x.chunks(d)) {
                *r = rstd(x, eps);
                for ((y, x), w) in y.iter_mut().zip(x).zip(weight) {
                    *y = x * *r * w;
                }
            }
        },
    );
    (y, r)
}

/// `(dx, dweight)` of [`rms_norm`] given `dy`, with `d_x` (the gradient `x` already has from
/// its other uses, or none) added into `dx`.
pub fn rms_norm_backward(
    x: &[f32],
    weight: &[f32],
    r: &[f32],
    dy: &[f32],
    d_x: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    let d = weight.len();
    let mut dx = d_x.map_or_else(|| vec![0f32; x.len()], <[f32]>::to_vec);
    let partials: Vec<Vec<f32>> = dx
        .par_chunks_mut(ROWS * d)
        .zip(x.par_chunks(ROWS * d).zip(dy.par_chunks(ROWS * d)))
        .zip(r.par_chunks(ROWS))
        .map(|((dx, (x, dy)), r)| {
            let mut dw = vec![0f32; d];
            let mut g = vec![0f32; d];
            for (((dx, x), dy), &r) in dx.chunks_mut(d).zip(x.chunks(d)).zip(dy.chunks(d)).zip(r) {
                // With x̂ = x·r and g = dy ⊙ w: dx = r (g − x̂ · mean(g ⊙ x̂)).
                for ((g, dy), w) in g.iter_mut().zip(dy).zip(weight) {
                    *g = dy * w;
                }
                let mean = dot(&g, x) * r / d as f32;
                for (((dx, g), x), (dw, dy)) in dx.iter_mut().zip(&g).zip(x).zip(dw.iter_mut().zip(dy)) {
                    let xhat = x * r;
                    *dx += r * (g - xhat * mean);
                    *dw += dy * xhat;
                }
            }
            dw
        })
        .collect();
    (dx, sum_blocks(partials, d))
}

/// `σ(z)` and `silu(z) = z σ(z)`.
fn sigmoid_silu(z: f32) -> (f32, f32) {
    let s = 1.0 / (1.0 + (-z).exp());
    (s, z * s)
}

/// Mamba-2's gated RMSNorm over rows of `di = weight.len()` in groups of `group`:
/// `(out, rstd)` with `out = g · rstd_group · weight`, `g = y · silu(z)`, one `rstd` per group.
pub fn gated_rms_norm(y: &[f32], z: &[f32], weight: &[f32], group: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let di = weight.len();
    let groups = di / group;
    let mut out = vec![0f32; y.len()];
    let mut r = vec![0f32; y.len() / group];
    out.par_chunks_mut(ROWS * di)
        .zip(r.par_chunks_mut(ROWS * groups))
        .zip(y.par_chunks(ROWS * di).zip(z.par_chunks(ROWS * di)))
        .for_each(|((out, r), (y, z))| {
            for (i, (((out, r), y), z)) in
                out.chunks_mut(group).zip(r.iter_mut()).zip(y.chunks(group)).zip(z.chunks(group)).enumerate()
            {
                for ((o, y), z) in out.iter_mut().zip(y).zip(z) {
                    *o = y * sigmoid_silu(*z).1;
                }
                *r = rstd(out, eps);
                let w = &weight[(i % groups) * group..(i % groups + 1) * group];
                for (o, w) in out.iter_mut().zip(w) {
                    *o *= *r * w;
                }
            }
        });
    (out, r)
}

/// `(dy, dz, dweight)` of [`gated_rms_norm`] given `d_out`.
pub fn gated_rms_norm_backward(
    y: &[f32],
    z: &[f32],
    weight: &[f32],
    r: &[f32],
    d_out: &[f32],
    group: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let di = weight.len();
    let groups = di / group;
    let mut dy = vec![0f32; y.len()];
    let mut dz = vec![0f32; z.len()];
    let partials: Vec<Vec<f32>> = dy
        .par_chunks_mut(ROWS * di)
        .zip(dz.par_chunks_mut(ROWS * di))
        .zip(y.par_chunks(ROWS * di).zip(z.par_chunks(ROWS * di)))
        .zip(d_out.par_chunks(ROWS * di).zip(r.par_chunks(ROWS * groups)))
        .map(|(((dy, dz), (y, z)), (d_out, r))| {
            let mut dw = vec![0f32; di];
            let (mut gated, mut dg) = (vec![0f32; group], vec![0f32; group]);
            for (i, &r) in r.iter().enumerate() {
                let at = i * group..(i + 1) * group;
                let w = &weight[(i % groups) * group..(i % groups + 1) * group];
                for ((g, y), z) in gated.iter_mut().zip(&y[at.clone()]).zip(&z[at.clone()]) {
                    *g = y * sigmoid_silu(*z).1;
                }
                // With ĝ = g·r and h = d_out ⊙ w: dg = r (h − ĝ · mean(h ⊙ ĝ)).
                for ((h, o), w) in dg.iter_mut().zip(&d_out[at.clone()]).zip(w) {
                    *h = o * w;
                }
                let mean = dot(&dg, &gated) * r / group as f32;
                let dw = &mut dw[(i % groups) * group..(i % groups + 1) * group];
                for (k, ((h, g), o)) in dg.iter().zip(&gated).zip(&d_out[at.clone()]).enumerate() {
                    let ghat = g * r;
                    dw[k] += o * ghat;
                    let grad = r * (h - ghat * mean);
                    let (yv, zv) = (y[at.start + k], z[at.start + k]);
                    let (s, silu) = sigmoid_silu(zv);
                    dy[at.start + k] = grad * silu;
                    dz[at.start + k] = grad * yv * s * (1.0 + zv * (1.0 - s));
                }
            }
            dw
        })
        .collect();
    (dy, dz, sum_blocks(partials, di))
}

/// The blocks' partial sums added in block order.
fn sum_blocks(partials: Vec<Vec<f32>>, d: usize) -> Vec<f32> {
    let mut total = vec![0f32; d];
    for p in partials {
        for (t, p) in total.iter_mut().zip(p) {
            *t += p;
        }
    }
    total
}
