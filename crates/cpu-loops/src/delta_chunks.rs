//! The delta rule's pass over chunks (archlab's `src/kernels/delta_chunks.rs` has the equations
//! and the plain-ops twin) as host loops for the CPU backend, forward and backward: one
//! (sequence, head) at a time, its chunks in order, sequences and heads in parallel (rayon).
//! Each unit's result depends on its own inputs only, in a fixed order of operations, so the
//! output is the same for any number of threads.
//!
//! The plain-ops twin runs five small batched matmuls and as many element-wise ops per chunk,
//! each a tensor and an autodiff node, and reads each chunk out of its operands with a copy
//! whose gradient is a zero-filled tensor of the whole operand; here a unit's `dk × dv` state
//! stays in one buffer and the chunk products are `gemm` calls on slices.
//!
//! # Backward
//! With `V'_n = U_n − W_n S_n`, `O_n = Q_n S_n + A_n V'_n`, `S_{n+1} = α_n S_n + K_nᵀ V'_n` and
//! `dS` the gradient of `S_{n+1}`, chunks last to first:
//! `dV' = A_nᵀ dO_n + K_n dS`, `dA_n = dO_n V'ᵀ`, `dQ_n = dO_n S_nᵀ`, `dK_n = V' dSᵀ`,
//! `dα_n = Σ S_n ⊙ dS`, `dU_n = dV'`, `dW_n = −dV' S_nᵀ`, and
//! `dS ← α_n dS + Q_nᵀ dO_n − W_nᵀ dV'`; the gradient of `S_0` is the last `dS`.

use rayon::prelude::*;

use crate::matmul::{Matrix, matmul_into};

/// Sizes of one problem: `b` sequences of `h` heads (`b · h` units), `nc` chunks of `c` tokens,
/// key width `dk`, value width `dv`.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub h: usize,
    pub nc: usize,
    pub c: usize,
    pub dk: usize,
    pub dv: usize,
}

impl Dims {
    /// (sequence, head) pairs, each a unit of work.
    pub fn units(&self) -> usize {
        self.b * self.h
    }

    /// Where chunk `n` of unit `m` starts in a chunk-major buffer, in chunks.
    fn at(&self, m: usize, n: usize) -> usize {
        let (seq, head) = (m / self.h, m % self.h);
        (seq * self.nc + n) * self.h + head
    }

    /// Floats of one unit's output: every chunk's `O` (`nc · C · dv`), then the final state
    /// (`dk · dv`).
    pub fn out_len(&self) -> usize {
        self.nc * self.c * self.dv + self.dk * self.dv
    }
}

/// The operands as contiguous host buffers, chunk-major as the chunked form builds them: `u`
/// `[b, nc, h, C, dv]`, `w`, `q`, `k` `[b, nc, h, C, dk]`, `attn` `[b, nc, h, C, C]`, `decay`
/// `[b, nc, h]`; `s0` `[b, h, dk, dv]`.
#[derive(Clone, Copy)]
pub struct Operands<'a> {
    pub u: &'a [f32],
    pub w: &'a [f32],
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub attn: &'a [f32],
    pub decay: &'a [f32],
    pub s0: &'a [f32],
}

/// Chunk `n` of unit `m` of a `[b, nc, h, rows, cols]` buffer, as a row-major matrix.
fn chunk(values: &[f32], d: Dims, m: usize, n: usize, rows: usize, cols: usize) -> Matrix<'_> {
    Matrix { values, offset: d.at(m, n) * rows * cols, row_stride: cols, col_stride: 1 }
}

/// The transpose of chunk `n` of unit `m` (`[cols, rows]` seen from a `[rows, cols]` chunk).
fn chunk_t(values: &[f32], d: Dims, m: usize, n: usize, rows: usize, cols: usize) -> Matrix<'_> {
    Matrix { values, offset: d.at(m, n) * rows * cols, row_stride: 1, col_stride: cols }
}

/// `V' = U_n − W_n S` of unit `m`, chunk `n`, into `fresh` (`[C, dv]`).
fn fresh_values(x: &Operands<'_>, d: Dims, m: usize, n: usize, s: &[f32], fresh: &mut [f32]) {
    let (c, dk, dv) = (d.c, d.dk, d.dv);
    let at = d.at(m, n) * c * dv;
    fresh.copy_from_slice(&x.u[at..at + c * dv]);
    matmul_into(fresh, chunk(x.w, d, m, n, c, dk), Matrix::rows(s, dv), (c, dv, dk), -1.0, true, false);
}

/// `(out [b, h, nc · C · dv + dk · dv], states [b, h, nc, dk, dv])`: each unit's outputs and
/// final state, and the state entering each chunk (for the backward).
pub fn forward(x: Operands<'_>, d: Dims) -> (Vec<f32>, Vec<f32>) {
    let (nc, c, dk, dv) = (d.nc, d.c, d.dk, d.dv);
    let mut out = vec![0f32; d.units() * d.out_len()];
    let mut states = vec![0f32; d.units() * nc * dk * dv];
    out.par_chunks_mut(d.out_len()).zip(states.par_chunks_mut(nc * dk * dv)).enumerate().for_each(
        |(m, (out, entering))| {
            let (o, s) = out.split_at_mut(nc * c * dv);
            s.copy_from_slice(&x.s0[m * dk * dv..(m + 1) * dk * dv]);
            let mut fresh = vec![0f32; c * dv];
            for n in 0..nc {
                entering[n * dk * dv..(n + 1) * dk * dv].copy_from_slice(s);
                fresh_values(&x, d, m, n, s, &mut fresh);
                let o = &mut o[n * c * dv..(n + 1) * c * dv];
                let state = Matrix::rows(s, dv);
                matmul_into(o, chunk(x.q, d, m, n, c, dk), state, (c, dv, dk), 1.0, false, false);
                matmul_into(
                    o,
                    chunk(x.attn, d, m, n, c, c),
                    Matrix::rows(&fresh, dv),
                    (c, dv, c),
                    1.0,
                    true,
                    false,
                );
                let alpha = x.decay[d.at(m, n)];
                s.iter_mut().for_each(|v| *v *= alpha);
                let keys = chunk_t(x.k, d, m, n, c, dk);
                matmul_into(s, keys, Matrix::rows(&fresh, dv), (dk, dv, c), 1.0, true, false);
            }
        },
    );
    (out, states)
}

/// The gradients of the seven operands, given the forward's `states` and the gradient of its
/// output: `[du, dw, dq, dk, dattn, ddecay, ds0]`, unit-major (`[b, h, nc, C, ·]`, `ddecay`
/// `[b, h, nc]`: each unit writes one block; the caller sees them chunk-major as views) and
/// `ds0` `[b, h, dk, dv]`.
pub fn backward(x: Operands<'_>, d: Dims, states: &[f32], d_out: &[f32]) -> [Vec<f32>; 7] {
    let (nc, c, dk, dv) = (d.nc, d.c, d.dk, d.dv);
    let (ck, cv) = (nc * c * dk, nc * c * dv);
    let units = d.units();
    let mut du = vec![0f32; units * cv];
    let mut dw = vec![0f32; units * ck];
    let mut dq = vec![0f32; units * ck];
    let mut dkeys = vec![0f32; units * ck];
    let mut dattn = vec![0f32; units * nc * c * c];
    let mut ddecay = vec![0f32; units * nc];
    let mut ds0 = vec![0f32; units * dk * dv];
    (du.par_chunks_mut(cv), dw.par_chunks_mut(ck), dq.par_chunks_mut(ck), dkeys.par_chunks_mut(ck))
        .into_par_iter()
        .zip((dattn.par_chunks_mut(nc * c * c), ddecay.par_chunks_mut(nc), ds0.par_chunks_mut(dk * dv)))
        .enumerate()
        .for_each(|(m, ((du, dw, dq, dkeys), (dattn, ddecay, ds)))| {
            let d_out = &d_out[m * d.out_len()..(m + 1) * d.out_len()];
            // `ds` holds dS, the gradient of the state leaving the chunk at hand.
            ds.copy_from_slice(&d_out[cv..]);
            let (mut fresh, mut d_fresh) = (vec![0f32; c * dv], vec![0f32; c * dv]);
            let mut ds_next = vec![0f32; dk * dv];
            for n in (0..nc).rev() {
                let s = &states[(m * nc + n) * dk * dv..(m * nc + n + 1) * dk * dv];
                let state_t = Matrix::transposed(s, dv);
                let d_o = Matrix::rows(&d_out[n * c * dv..(n + 1) * c * dv], dv);
                fresh_values(&x, d, m, n, s, &mut fresh);
                let keys = chunk(x.k, d, m, n, c, dk);
                // dV' = A_nᵀ dO_n + K_n dS.
                matmul_into(&mut d_fresh, chunk_t(x.attn, d, m, n, c, c), d_o, (c, dv, c), 1.0, false, false);
                matmul_into(&mut d_fresh, keys, Matrix::rows(ds, dv), (c, dv, dk), 1.0, true, false);
                let (cc, cdk) = (n * c * c..(n + 1) * c * c, n * c * dk..(n + 1) * c * dk);
                let fresh_t = Matrix::transposed(&fresh, dv);
                matmul_into(&mut dattn[cc], d_o, fresh_t, (c, c, dv), 1.0, false, false);
                matmul_into(&mut dq[cdk.clone()], d_o, state_t, (c, dk, dv), 1.0, false, false);
                let ds_t = Matrix::transposed(ds, dv);
                matmul_into(
                    &mut dkeys[cdk.clone()],
                    Matrix::rows(&fresh, dv),
                    ds_t,
                    (c, dk, dv),
                    1.0,
                    false,
                    false,
                );
                ddecay[n] = s.iter().zip(ds.iter()).map(|(a, b)| a * b).sum();
                du[n * c * dv..(n + 1) * c * dv].copy_from_slice(&d_fresh);
                let d_fresh_m = Matrix::rows(&d_fresh, dv);
                matmul_into(&mut dw[cdk], d_fresh_m, state_t, (c, dk, dv), -1.0, false, false);
                // dS ← α_n dS + Q_nᵀ dO_n − W_nᵀ dV'.
                let alpha = x.decay[d.at(m, n)];
                ds_next.iter_mut().zip(ds.iter()).for_each(|(a, b)| *a = alpha * b);
                matmul_into(&mut ds_next, chunk_t(x.q, d, m, n, c, dk), d_o, (dk, dv, c), 1.0, true, false);
                matmul_into(
                    &mut ds_next,
                    chunk_t(x.w, d, m, n, c, dk),
                    d_fresh_m,
                    (dk, dv, c),
                    -1.0,
                    true,
                    false,
                );
                ds.copy_from_slice(&ds_next);
            }
        });
    [du, dw, dq, dkeys, dattn, ddecay, ds0]
}
