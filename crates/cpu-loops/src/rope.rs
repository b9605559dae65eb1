//! Rotary position embedding (Su et al. 2021, arXiv 2104.09864) in Llama's rotate-half layout,
//! for the CPU backend (archlab's `src/kernels/rope.rs` has the plain-ops twin). As tensor ops
//! it is two narrows, a negation, a concatenation, two broadcast products and a sum, each a
//! tensor of its own, and about as much again backward: a quarter of a dense CPU training step
//! at the tiny size. Here it is one pass each way.
//!
//! Channel `c < r/2` of each head pairs with channel `c + r/2` (`r` the rotary dimension) and
//! the pair turns by the angle whose cosine and sine are column `c` of the tables; channels
//! from `r` on pass unchanged (partial RoPE). The backward is the same rotation by the opposite
//! angle.
//!
//! Element-wise over fixed blocks of heads (rayon), so the result does not depend on the number
//! of threads.

use rayon::prelude::*;

/// Problem sizes: `x` is `[heads, t, hd]` for any number of heads (batch rows × heads), the
/// tables `[t, rotary]` (`rotary` even, at most `hd`).
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub t: usize,
    pub hd: usize,
    pub rotary: usize,
}

/// `x` rotated by the tables' angles, or by their opposites when `inverse` (the backward:
/// a rotation's inverse is its transpose).
pub fn rotate(x: &[f32], cos: &[f32], sin: &[f32], d: Dims, inverse: bool) -> Vec<f32> {
    let (t, hd) = (d.t, d.hd);
    let sign = if inverse { -1.0 } else { 1.0 };
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(t * hd)
        .zip(x.par_chunks(t * hd))
        .for_each(|(y, x)| rotate_head(y, x, cos, sin, d, sign));
    y
}

avx2_or_baseline! {
    /// One head's `[t, hd]` of [`rotate`], turned by `sign` times the tables' angles.
    fn rotate_head(y: &mut [f32], x: &[f32], cos: &[f32], sin: &[f32], d: Dims, sign: f32) {
        let (hd, half) = (d.hd, d.rotary / 2);
        for (pos, (y, x)) in y.chunks_mut(hd).zip(x.chunks(hd)).enumerate() {
            let (c, s) = (&cos[pos * d.rotary..pos * d.rotary + half], &sin[pos * d.rotary..pos * d.rotary + half]);
            let (x1, x2) = (&x[..half], &x[half..2 * half]);
            let (y1, rest) = y.split_at_mut(half);
            let (y2, pass) = rest.split_at_mut(half);
            for i in 0..half {
                let s = sign * s[i];
                y1[i] = x1[i] * c[i] - x2[i] * s;
                y2[i] = x2[i] * c[i] + x1[i] * s;
            }
            pass.copy_from_slice(&x[2 * half..]);
        }
    }
}
