//! Cross-entropy over the vocabulary, forward and backward, for the CPU backend (archlab's
//! `src/kernels/cross_entropy.rs` has the plain-ops twin, `cross_entropy_kernel.rs` the CubeCL
//! kernel). As tensor ops it is a log-softmax of several passes over the `[n, vocab]` logits
//! and a gather, and backward as many again; here it is one pass over each row each way, with
//! each row's log-sum-exp kept for the backward.
//!
//! Rows in fixed blocks of [`ROWS`], one block per unit of work (rayon): each row's result
//! depends on its own logits only, so it is the same for any number of threads.

use rayon::prelude::*;

use crate::activation::exp;

/// Rows per unit of work.
const ROWS: usize = 16;

/// `(nll, lse)`: each row's `−log softmax(logits)[target]` and log-sum-exp of its `vocab`
/// logits (`logits` `[n, vocab]`, `targets` `[n]`, each below `vocab`).
pub fn forward(logits: &[f32], targets: &[usize], vocab: usize) -> (Vec<f32>, Vec<f32>) {
    let n = targets.len();
    let (mut nll, mut lse) = (vec![0f32; n], vec![0f32; n]);
    nll.par_chunks_mut(ROWS)
        .zip(lse.par_chunks_mut(ROWS))
        .zip(logits.par_chunks(ROWS * vocab).zip(targets.par_chunks(ROWS)))
        .for_each(|((nll, lse), (logits, targets))| forward_rows(nll, lse, logits, targets));
    (nll, lse)
}

/// The logits' gradient given each row's `d_nll`: `(softmax(logits) − onehot(target)) · d_nll`.
pub fn backward(logits: &[f32], targets: &[usize], lse: &[f32], d_nll: &[f32], vocab: usize) -> Vec<f32> {
    let mut dx = vec![0f32; logits.len()];
    dx.par_chunks_mut(ROWS * vocab)
        .zip(logits.par_chunks(ROWS * vocab))
        .zip(targets.par_chunks(ROWS).zip(lse.par_chunks(ROWS).zip(d_nll.par_chunks(ROWS))))
        .for_each(|((dx, logits), (targets, (lse, d_nll)))| backward_rows(dx, logits, targets, lse, d_nll));
    dx
}

avx2_or_baseline! {
    /// [`forward`] on a block of rows.
    fn forward_rows(nll: &mut [f32], lse: &mut [f32], logits: &[f32], targets: &[usize]) {
        let vocab = logits.len() / targets.len();
        for (((nll, lse), x), &target) in nll.iter_mut().zip(lse.iter_mut()).zip(logits.chunks(vocab)).zip(targets) {
            let max = x.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let sum: f32 = x.iter().map(|&x| exp(x - max)).sum();
            *lse = max + sum.ln();
            *nll = *lse - x[target];
        }
    }
}

avx2_or_baseline! {
    /// [`backward`] on a block of rows.
    fn backward_rows(dx: &mut [f32], logits: &[f32], targets: &[usize], lse: &[f32], d_nll: &[f32]) {
        let vocab = logits.len() / targets.len();
        for ((dx, x), ((&target, &lse), &g)) in
            dx.chunks_mut(vocab).zip(logits.chunks(vocab)).zip(targets.iter().zip(lse).zip(d_nll))
        {
            for (dx, &x) in dx.iter_mut().zip(x) {
                *dx = exp(x - lse) * g;
            }
            dx[target] -= g;
        }
    }
}
