//! The delta rule's UT transform (archlab's `src/kernels/ut_transform.rs` has the equations
//! and the plain-ops twin) as host loops for the CPU backend, forward and backward: one chunk at a time, chunks in parallel (rayon). Each
//! chunk's result depends on its own inputs only, in a fixed order of operations, so the
//! output is the same for any number of threads.
//!
//! The plain-ops twin builds `A`, inverts it by blocked doubling products (12 batched matmuls
//! and their block copies at C = 64) and multiplies, each step a tensor of its own and its
//! autodiff node; here the chunk's `C × C` matrices stay in one scratch buffer and `T` comes
//! from forward substitution, row by row.
//!
//! # Backward
//! With `X = [β v | β exp(G) k]`, `Out = T X` and `dX = Tᵀ dOut`:
//! `dA = −Tᵀ (dOut Xᵀ) Tᵀ = −dX Outᵀ` on the strictly lower triangle (no `C³` product), then
//! through `A_ij = β_i Γ_ij (k_i·k_j)` to `k`, `β` and `G`, and through `X` to `v`, `k`, `β`
//! and `G`.

use rayon::prelude::*;

use crate::dot;

/// Sizes of one problem: `n` chunks of `c` tokens, key width `dk`, value width `dv`.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub n: usize,
    pub c: usize,
    pub dk: usize,
    pub dv: usize,
}

impl Dims {
    /// Width of a row of the output `[U | W]`.
    pub fn dx(&self) -> usize {
        self.dv + self.dk
    }
}

/// The operands as contiguous host buffers: `k` `[n, C, dk]`, `v` `[n, C, dv]`, `beta` and
/// `cum` `[n, C]`.
#[derive(Clone, Copy)]
pub struct Operands<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub beta: &'a [f32],
    pub cum: &'a [f32],
}

/// One chunk's slices of the operands.
struct Chunk<'a> {
    k: &'a [f32],
    v: &'a [f32],
    beta: &'a [f32],
    cum: &'a [f32],
}

impl<'a> Operands<'a> {
    fn chunk(&self, d: Dims, m: usize) -> Chunk<'a> {
        let (c, dk, dv) = (d.c, d.dk, d.dv);
        Chunk {
            k: &self.k[m * c * dk..(m + 1) * c * dk],
            v: &self.v[m * c * dv..(m + 1) * c * dv],
            beta: &self.beta[m * c..(m + 1) * c],
            cum: &self.cum[m * c..(m + 1) * c],
        }
    }
}

/// `(out [n, C, dv + dk], inverse [n, C, C])`.
pub fn forward(x: Operands<'_>, d: Dims) -> (Vec<f32>, Vec<f32>) {
    let (c, dk, dv, dx) = (d.c, d.dk, d.dv, d.dx());
    let mut out = vec![0f32; d.n * c * dx];
    let mut inverse = vec![0f32; d.n * c * c];
    out.par_chunks_mut(c * dx).zip(inverse.par_chunks_mut(c * c)).enumerate().for_each(|(m, (out, t))| {
        let ch = x.chunk(d, m);
        let key = |i: usize| &ch.k[i * dk..(i + 1) * dk];
        // T row by row: (I + A) T = I gives T_i = e_i − Σ_{r<i} A_ir T_r, with
        // A_ir = β_i exp(G_i − G_r) (k_i·k_r) formed as it is needed.
        for i in 0..c {
            let (done, row) = t.split_at_mut(i * c);
            let row = &mut row[..c];
            row[i] = 1.0;
            for r in 0..i {
                let a = ch.beta[i] * (ch.cum[i] - ch.cum[r]).exp() * dot(key(i), key(r));
                for (x, y) in row[..=r].iter_mut().zip(&done[r * c..r * c + r + 1]) {
                    *x -= a * y;
                }
            }
        }
        // Out_i = Σ_{r≤i} T_ir X_r.
        for r in 0..c {
            let (b, scale) = (ch.beta[r], ch.beta[r] * ch.cum[r].exp());
            for i in r..c {
                let tir = t[i * c + r];
                let row = &mut out[i * dx..(i + 1) * dx];
                for (o, v) in row[..dv].iter_mut().zip(&ch.v[r * dv..(r + 1) * dv]) {
                    *o += tir * b * v;
                }
                for (o, k) in row[dv..].iter_mut().zip(key(r)) {
                    *o += tir * scale * k;
                }
            }
        }
    });
    (out, inverse)
}

/// The gradients of the four operands given the forward's `inverse`, `out` and `d_out`:
/// `(dk, dv, dbeta, dcum)`.
pub fn backward(
    x: Operands<'_>,
    d: Dims,
    inverse: &[f32],
    out: &[f32],
    d_out: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (c, dk, dv, dx) = (d.c, d.dk, d.dv, d.dx());
    let mut dkeys = vec![0f32; d.n * c * dk];
    let mut dvalues = vec![0f32; d.n * c * dv];
    let mut dbeta = vec![0f32; d.n * c];
    let mut dcum = vec![0f32; d.n * c];
    dkeys
        .par_chunks_mut(c * dk)
        .zip(dvalues.par_chunks_mut(c * dv))
        .zip(dbeta.par_chunks_mut(c).zip(dcum.par_chunks_mut(c)))
        .enumerate()
        .for_each(|(m, ((dkm, dvm), (dbm, dgm)))| {
            let ch = x.chunk(d, m);
            let key = |i: usize| &ch.k[i * dk..(i + 1) * dk];
            let t = &inverse[m * c * c..(m + 1) * c * c];
            let out = &out[m * c * dx..(m + 1) * c * dx];
            let d_out = &d_out[m * c * dx..(m + 1) * c * dx];
            // dX_r = Σ_{i≥r} T_ir dOut_i.
            let mut dxs = vec![0f32; c * dx];
            for i in 0..c {
                for r in 0..=i {
                    let tir = t[i * c + r];
                    for (g, o) in dxs[r * dx..(r + 1) * dx].iter_mut().zip(&d_out[i * dx..(i + 1) * dx]) {
                        *g += tir * o;
                    }
                }
            }
            // Through A: dA_ij = −dX_i·Out_j, and A_ij = β_i Γ_ij S_ij with S = k kᵀ.
            for i in 0..c {
                for j in 0..i {
                    let da = -dot(&dxs[i * dx..(i + 1) * dx], &out[j * dx..(j + 1) * dx]);
                    let decay = (ch.cum[i] - ch.cum[j]).exp();
                    let q = da * decay * dot(key(i), key(j)); // ∂/∂β_i of the A_ij term
                    dbm[i] += q;
                    dgm[i] += ch.beta[i] * q;
                    dgm[j] -= ch.beta[i] * q;
                    let ds = da * ch.beta[i] * decay;
                    for e in 0..dk {
                        dkm[i * dk + e] += ds * ch.k[j * dk + e];
                        dkm[j * dk + e] += ds * ch.k[i * dk + e];
                    }
                }
            }
            // Through X.
            for r in 0..c {
                let (dxv, dxk) = dxs[r * dx..(r + 1) * dx].split_at(dv);
                let (b, e) = (ch.beta[r], ch.cum[r].exp());
                for (g, dxv) in dvm[r * dv..(r + 1) * dv].iter_mut().zip(dxv) {
                    *g = b * dxv;
                }
                let dxk_k = dot(dxk, key(r));
                dbm[r] += dot(dxv, &ch.v[r * dv..(r + 1) * dv]) + e * dxk_k;
                dgm[r] += b * e * dxk_k;
                for (g, dxk) in dkm[r * dk..(r + 1) * dk].iter_mut().zip(dxk) {
                    *g += b * e * dxk;
                }
            }
        });
    (dkeys, dvalues, dbeta, dcum)
}
