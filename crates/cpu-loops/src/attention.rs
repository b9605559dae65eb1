//! Causal attention (sliding-window when `window > 0`, grouped-query heads), forward and
//! backward, for the CPU backend: archlab's `src/kernels/attention.rs` has the plain-ops twin,
//! `attention_kernel.rs` the CubeCL kernel (FlashAttention-2, Dao 2023, arXiv 2307.08691),
//! whose split of the work this loop follows: the forward keeps each row's log-sum-exp and the
//! backward recomputes the probabilities from it.
//!
//! As tensor ops the same attention is a `[b, h, t, t]` score matmul, a scaling, a masked fill
//! with an expanded mask, a softmax of five passes and a second matmul, each its own tensor, and
//! about twice that backward: a fifth of a dense CPU training step at the tiny size. Here query
//! rows go in blocks of [`BLOCK`], each block against only the keys it may see (for a sliding
//! window, O(t·W) work, not O(t²)); the products are `gemm`'s kernels and the mask and softmax
//! one pass over the block's scores.
//!
//! # Layout
//! Every operand is contiguous and row-major: `q`, `out` `[b, h, t, hd]`, `k`, `v`
//! `[b, kv, t, hd]`, the log-sum-exps `[b, h, t]`. Query head `i` reads key/value head
//! `i / (h / kv)` (`transformers`' `repeat_kv` order).
//!
//! # Work split and determinism
//! One unit of work per (batch row, query head), run in parallel (rayon), its products on one
//! thread. The key and value gradients are kept per query head and summed over each group of
//! heads in head order afterwards, so the result does not depend on the number of threads.

use rayon::prelude::*;

use crate::activation::exp;
use crate::dot;
use crate::matmul::Matrix;

/// Problem sizes; `window` 0 is global causal attention, `W > 0` lets query `i` see keys
/// `i − W < j ≤ i`.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub h: usize,
    pub kv: usize,
    pub t: usize,
    pub hd: usize,
    pub window: usize,
}

impl Dims {
    /// The first key query `i` sees.
    fn first_key(&self, i: usize) -> usize {
        if self.window > 0 { (i + 1).saturating_sub(self.window) } else { 0 }
    }

    /// The offset of unit `u`'s (row, query head) key/value head in `k` and `v`.
    fn kv_offset(&self, u: usize) -> usize {
        let (row, head) = (u / self.h, u % self.h);
        (row * self.kv + head / (self.h / self.kv)) * self.t * self.hd
    }

    /// `1/√hd`, the scores' scale.
    fn scale(&self) -> f32 {
        1.0 / (self.hd as f32).sqrt()
    }
}

/// Query rows per block: each block's scores against the keys it may see are one small matmul.
const BLOCK: usize = 64;

/// `c = beta · a · b` (`[m, k] · [k, n]`, `c` row-major), added to `c` when `accumulate`, on
/// this unit's thread.
fn matmul(c: &mut [f32], a: Matrix, b: Matrix, mnk: (usize, usize, usize), beta: f32, accumulate: bool) {
    crate::matmul::matmul_into(c, a, b, mnk, beta, accumulate, false);
}

/// Each query row's log-sum-exp: computed and stored into the slice (the forward), or the
/// forward's (the backward).
enum Lse<'a> {
    Compute(&'a mut [f32]),
    Known(&'a [f32]),
}

/// One block of query rows `rows` and the keys they see, `keys`.
struct Block {
    rows: std::ops::Range<usize>,
    keys: std::ops::Range<usize>,
}

impl Block {
    fn all(d: &Dims) -> impl Iterator<Item = Block> + '_ {
        (0..d.t).step_by(BLOCK).map(|i0| {
            let i1 = (i0 + BLOCK).min(d.t);
            Block { rows: i0..i1, keys: d.first_key(i0)..i1 }
        })
    }

    /// The block's softmax probabilities `[rows, keys]` into `p`, zero where a query does not
    /// see a key: `p = exp(scale · q·kᵀ − lse)`, with each row's log-sum-exp computed and stored
    /// (the forward) or the forward's read (the backward).
    fn probabilities(&self, p: &mut [f32], q: &[f32], k: &[f32], d: &Dims, mut lse: Lse) {
        let (hd, nk) = (d.hd, self.keys.len());
        let q = &q[self.rows.start * hd..self.rows.end * hd];
        let k = &k[self.keys.start * hd..self.keys.end * hd];
        matmul(
            p,
            Matrix::rows(q, hd),
            Matrix::transposed(k, hd),
            (self.rows.len(), nk, hd),
            d.scale(),
            false,
        );
        for (r, row) in p.chunks_mut(nk).take(self.rows.len()).enumerate() {
            let i = self.rows.start + r;
            let seen = d.first_key(i) - self.keys.start..i + 1 - self.keys.start;
            match &mut lse {
                Lse::Compute(lse) => lse[i] = softmax_exp(&mut row[seen.clone()], None),
                Lse::Known(lse) => _ = softmax_exp(&mut row[seen.clone()], Some(lse[i])),
            }
            row[..seen.start].fill(0.0);
            row[seen.end..].fill(0.0);
        }
    }
}

avx2_or_baseline! {
    /// `s ← exp(s − lse)` over one query row's scaled scores, `lse` their log-sum-exp, computed
    /// when `None` (the forward); returns it.
    fn softmax_exp(s: &mut [f32], lse: Option<f32>) -> f32 {
        let lse = lse.unwrap_or_else(|| {
            let max = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let sum: f32 = s.iter().map(|&x| exp(x - max)).sum();
            max + sum.ln()
        });
        for x in s.iter_mut() {
            *x = exp(*x - lse);
        }
        lse
    }
}

/// `(out, lse)`: the attention output `[b, h, t, hd]` and each query row's log-sum-exp of its
/// scaled scores `[b, h, t]`, which [`backward`] needs.
pub fn forward(q: &[f32], k: &[f32], v: &[f32], d: Dims) -> (Vec<f32>, Vec<f32>) {
    let (t, hd) = (d.t, d.hd);
    let mut out = vec![0f32; q.len()];
    let mut lse = vec![0f32; d.b * d.h * t];
    out.par_chunks_mut(t * hd).zip(lse.par_chunks_mut(t)).enumerate().for_each(|(u, (out, lse))| {
        let q = &q[u * t * hd..(u + 1) * t * hd];
        let kv = d.kv_offset(u);
        let (k, v) = (&k[kv..kv + t * hd], &v[kv..kv + t * hd]);
        let mut p = vec![0f32; BLOCK * t];
        for block in Block::all(&d) {
            block.probabilities(&mut p, q, k, &d, Lse::Compute(lse));
            let (rows, keys) = (&block.rows, &block.keys);
            matmul(
                &mut out[rows.start * hd..rows.end * hd],
                Matrix::rows(&p, keys.len()),
                Matrix::rows(&v[keys.start * hd..keys.end * hd], hd),
                (rows.len(), hd, keys.len()),
                1.0,
                false,
            );
        }
    });
    (out, lse)
}

/// `(dq, dk, dv)` of [`forward`] given `d_out`, from the forward's `out` and `lse`:
/// `dP = dO·vᵀ`, `dS = P ∘ (dP − rowsum(dO ∘ O))`, `dq = scale·dS·k`, `dk = scale·dSᵀ·q`,
/// `dv = Pᵀ·dO`.
pub fn backward(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    d_out: &[f32],
    d: Dims,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (t, hd, scale) = (d.t, d.hd, d.scale());
    let unit = t * hd;
    let mut dq = vec![0f32; q.len()];
    // Per query head; summed over each key/value head's group below.
    let mut dk_heads = vec![0f32; q.len()];
    let mut dv_heads = vec![0f32; q.len()];
    dq.par_chunks_mut(unit)
        .zip(dk_heads.par_chunks_mut(unit).zip(dv_heads.par_chunks_mut(unit)))
        .enumerate()
        .for_each(|(u, (dq, (dk, dv)))| {
            let rows = u * unit..(u + 1) * unit;
            let (q, out, d_out) = (&q[rows.clone()], &out[rows.clone()], &d_out[rows]);
            let lse = &lse[u * t..(u + 1) * t];
            let kv = d.kv_offset(u);
            let (k, v) = (&k[kv..kv + unit], &v[kv..kv + unit]);
            let (mut p, mut ds) = (vec![0f32; BLOCK * t], vec![0f32; BLOCK * t]);
            for block in Block::all(&d) {
                block.probabilities(&mut p, q, k, &d, Lse::Known(lse));
                let (rows, keys) = (&block.rows, &block.keys);
                let (m, nk) = (rows.len(), keys.len());
                let (q_rows, do_rows) =
                    (&q[rows.start * hd..rows.end * hd], &d_out[rows.start * hd..rows.end * hd]);
                let (k_seen, v_seen) =
                    (&k[keys.start * hd..keys.end * hd], &v[keys.start * hd..keys.end * hd]);
                matmul(
                    &mut ds,
                    Matrix::rows(do_rows, hd),
                    Matrix::transposed(v_seen, hd),
                    (m, nk, hd),
                    1.0,
                    false,
                ); // dP
                for (r, (ds, p)) in ds.chunks_mut(nk).zip(p.chunks(nk)).take(m).enumerate() {
                    let row = (rows.start + r) * hd..(rows.start + r + 1) * hd;
                    let delta = dot(&d_out[row.clone()], &out[row]);
                    for (ds, &p) in ds.iter_mut().zip(p) {
                        *ds = p * (*ds - delta) * scale;
                    }
                }
                let (ds, p) = (&ds[..m * nk], &p[..m * nk]);
                matmul(
                    &mut dq[rows.start * hd..rows.end * hd],
                    Matrix::rows(ds, nk),
                    Matrix::rows(k_seen, hd),
                    (m, hd, nk),
                    1.0,
                    false,
                );
                let seen = keys.start * hd..keys.end * hd;
                matmul(
                    &mut dk[seen.clone()],
                    Matrix::transposed(ds, nk),
                    Matrix::rows(q_rows, hd),
                    (nk, hd, m),
                    1.0,
                    true,
                );
                matmul(
                    &mut dv[seen],
                    Matrix::transposed(p, nk),
                    Matrix::rows(do_rows, hd),
                    (nk, hd, m),
                    1.0,
                    true,
                );
            }
        });
    let group = d.h / d.kv;
    let sum_groups = |heads: Vec<f32>| -> Vec<f32> {
        if group == 1 {
            return heads;
        }
        let mut total = vec![0f32; d.b * d.kv * unit];
        total.par_chunks_mut(unit).enumerate().for_each(|(g, total)| {
            let first = (g / d.kv) * d.h + (g % d.kv) * group;
            for head in first..first + group {
                for (t, x) in total.iter_mut().zip(&heads[head * unit..(head + 1) * unit]) {
                    *t += x;
                }
            }
        });
        total
    };
    (dq, sum_groups(dk_heads), sum_groups(dv_heads))
}
