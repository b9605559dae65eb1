//! Mamba-2's SSD scan (archlab's `src/model/ssd.rs` has the equations, the recurrence oracle
//! and the chunked algorithm) as host loops for the CPU backend, forward and backward.
//!
//! The chunked SSD algorithm exists for matrix units: it turns the scan into matmuls over
//! chunks, at the price of an `L × L` decay mask per chunk and head, the B and C of every group
//! copied out to its heads, and a dozen tensor ops (each an allocation and, under autodiff, a
//! graph node) per layer. On a CPU that bookkeeping is most of a Mamba-2 training step, while
//! the recurrence itself is `O(t·heads·p·n)` multiply-adds with no `L²` term: here it is one
//! loop per batch row and head that keeps the `[p, n]` state in a small buffer. Mamba-2's decay
//! is one scalar per head and step (`exp(Δ·A)`), so a step costs one `exp` per head, not one
//! per state element as in Mamba-1 (`scan.rs`).
//!
//! # Work split and determinism
//! A unit of work is one batch row and one head; units run in parallel (rayon). Sums over
//! heads (`dB`, `dC` for the heads of one group) and over batch rows (`dA`) are added after the
//! units finish, in a fixed order, so results are bit-identical for any `RAYON_NUM_THREADS`.
//!
//! # Memory: recompute instead of storing
//! As in `scan.rs`: the forward pass saves the state entering every chunk of
//! [`checkpoint_chunk`](crate::scan::checkpoint_chunk) steps (`[b, ⌈t/L⌉, heads, p, n]`); the
//! backward pass recomputes a chunk's states from its checkpoint and runs the reverse
//! recurrence over them.

use rayon::prelude::*;

use crate::dot;
use crate::scan::checkpoint_chunk;

/// The scan's sizes: batch rows, steps, heads, head width, groups of B and C, state size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub heads: usize,
    pub p: usize,
    pub groups: usize,
    pub n: usize,
}

impl Dims {
    /// The group whose B and C head `head` reads (`transformers`' `repeat_interleave`).
    fn group(&self, head: usize) -> usize {
        head / (self.heads / self.groups)
    }

    /// Offset of `[row, step, head, 0]` in a `[b, t, heads, p]` tensor.
    fn at_x(&self, row: usize, step: usize, head: usize) -> usize {
        ((row * self.t + step) * self.heads + head) * self.p
    }

    /// Offset of `[row, step, group, 0]` in a `[b, t, groups, n]` tensor.
    fn at_bc(&self, row: usize, step: usize, group: usize) -> usize {
        ((row * self.t + step) * self.groups + group) * self.n
    }

    fn state(&self) -> usize {
        self.p * self.n
    }
}

/// Host operands and their gradients: the selective scan's five (`scan.rs`), here row-major as
/// in `archlab::model::ssd::SsdInputs`: `x` `[b, t, heads, p]`, `delta` (Δ, after softplus)
/// `[b, t, heads]`, `a` `[heads]` (negative), `b`, `c` `[b, t, groups, n]`.
pub use crate::scan::{Gradients, Operands};

/// One step of one head: `H = e·H + (Δ·x) ⊗ B`, `y = H·C`.
fn advance(h: &mut [f32], x: &[f32], dt: f32, e: f32, bt: &[f32], n: usize) {
    for (row, &u) in h.chunks_exact_mut(n).zip(x) {
        let u = dt * u;
        for (hk, &bk) in row.iter_mut().zip(bt) {
            *hk = e * *hk + u * bk;
        }
    }
}

/// Forward pass from a zero state: `y` (`[b, t, heads, p]`) and, when `save`, the state
/// entering every chunk (`[b, ⌈t/L⌉, heads, p, n]`; empty otherwise).
pub fn forward(s: Operands, dims: Dims, save: bool) -> (Vec<f32>, Vec<f32>) {
    let Dims { b, t, heads, p, n, .. } = dims;
    let (chunk, state) = (checkpoint_chunk(t), dims.state());
    let nc = t.div_ceil(chunk);
    // Each unit writes its outputs to buffers of its own ([t, p] and [nc, p, n]); they are put
    // in place afterwards, so no two threads write to one slice.
    let units: Vec<(Vec<f32>, Vec<f32>)> = (0..b * heads)
        .into_par_iter()
        .map(|unit| {
            let (row, head) = (unit / heads, unit % heads);
            let (a, g) = (s.a[head], dims.group(head));
            let mut h = vec![0f32; state];
            let mut y = vec![0f32; t * p];
            let mut saved = if save { vec![0f32; nc * state] } else { Vec::new() };
            for step in 0..t {
                if save && step % chunk == 0 {
                    saved[(step / chunk) * state..][..state].copy_from_slice(&h);
                }
                let dt = s.delta[(row * t + step) * heads + head];
                let bt = &s.b[dims.at_bc(row, step, g)..][..n];
                let ct = &s.c[dims.at_bc(row, step, g)..][..n];
                advance(&mut h, &s.x[dims.at_x(row, step, head)..][..p], dt, (dt * a).exp(), bt, n);
                for (yc, hc) in y[step * p..][..p].iter_mut().zip(h.chunks_exact(n)) {
                    *yc = dot(hc, ct);
                }
            }
            (y, saved)
        })
        .collect();

    let mut y = vec![0f32; b * t * heads * p];
    let mut checkpoints = if save { vec![0f32; b * nc * heads * state] } else { Vec::new() };
    for (unit, (unit_y, unit_saved)) in units.iter().enumerate() {
        let (row, head) = (unit / heads, unit % heads);
        for step in 0..t {
            y[dims.at_x(row, step, head)..][..p].copy_from_slice(&unit_y[step * p..][..p]);
        }
        if save {
            for c in 0..nc {
                checkpoints[((row * nc + c) * heads + head) * state..][..state]
                    .copy_from_slice(&unit_saved[c * state..][..state]);
            }
        }
    }
    (y, checkpoints)
}

/// What one unit (batch row, head) of the backward pass computes.
struct UnitGradients {
    /// `[t, p]`
    dx: Vec<f32>,
    /// `[t]`
    ddt: Vec<f32>,
    da: f32,
    /// `[t, n]`, summed over this head's channels.
    db: Vec<f32>,
    dc: Vec<f32>,
}

/// Backward pass given `dy` (`[b, t, heads, p]`) and the forward's `checkpoints`.
///
/// With `e_t = exp(Δ_t·A)` and `g` the gradient reaching `H_t` from later steps, each step back
/// computes `dH = g + dy_t ⊗ C_t`, then `dC_t += dy_tᵀ·H_t`, `dB_t += Δ_t·x_tᵀ·dH`,
/// `dx_t = Δ_t·dH·B_t`, `dΔ_t = A·e_t·⟨dH, H_{t−1}⟩ + ⟨dH, x_t ⊗ B_t⟩`,
/// `dA += Δ_t·e_t·⟨dH, H_{t−1}⟩`, and hands `g = e_t·dH` to the step before.
pub fn backward(s: Operands, dims: Dims, checkpoints: &[f32], dy: &[f32]) -> Gradients {
    let Dims { b, t, heads, p, groups, n } = dims;
    let (chunk, state) = (checkpoint_chunk(t), dims.state());
    let nc = t.div_ceil(chunk);
    let units: Vec<UnitGradients> = (0..b * heads)
        .into_par_iter()
        .map(|unit| {
            let (row, head) = (unit / heads, unit % heads);
            let (a, grp) = (s.a[head], dims.group(head));
            let mut out = UnitGradients {
                dx: vec![0f32; t * p],
                ddt: vec![0f32; t],
                da: 0.0,
                db: vec![0f32; t * n],
                dc: vec![0f32; t * n],
            };
            let mut g = vec![0f32; state];
            // states[i] is the state after step t0 + i − 1 (states[0]: the chunk's checkpoint);
            // decays[i] is e at step t0 + i.
            let mut states = vec![0f32; (chunk + 1) * state];
            let mut decays = vec![0f32; chunk];
            for c in (0..nc).rev() {
                let (t0, t1) = (c * chunk, ((c + 1) * chunk).min(t));
                states[..state]
                    .copy_from_slice(&checkpoints[((row * nc + c) * heads + head) * state..][..state]);
                for step in t0..t1 {
                    let i = step - t0;
                    let dt = s.delta[(row * t + step) * heads + head];
                    decays[i] = (dt * a).exp();
                    let (prev, next) = states.split_at_mut((i + 1) * state);
                    let next = &mut next[..state];
                    next.copy_from_slice(&prev[i * state..]);
                    let bt = &s.b[dims.at_bc(row, step, grp)..][..n];
                    advance(next, &s.x[dims.at_x(row, step, head)..][..p], dt, decays[i], bt, n);
                }
                for step in (t0..t1).rev() {
                    let i = step - t0;
                    let (dt, e) = (s.delta[(row * t + step) * heads + head], decays[i]);
                    let bt = &s.b[dims.at_bc(row, step, grp)..][..n];
                    let ct = &s.c[dims.at_bc(row, step, grp)..][..n];
                    let x = &s.x[dims.at_x(row, step, head)..][..p];
                    let dyt = &dy[dims.at_x(row, step, head)..][..p];
                    let db = &mut out.db[step * n..][..n];
                    let dc = &mut out.dc[step * n..][..n];
                    let (mut d_log_decay, mut ddt) = (0f32, 0f32); // ∂L/∂(Δ·A) / e, ∂L/∂Δ
                    for ch in 0..p {
                        let prev = &states[i * state + ch * n..][..n];
                        let cur = &states[(i + 1) * state + ch * n..][..n];
                        let dh = &mut g[ch * n..][..n];
                        let (dyv, dtu) = (dyt[ch], dt * x[ch]);
                        for k in 0..n {
                            dh[k] += dyv * ct[k];
                            dc[k] += dyv * cur[k];
                            db[k] += dtu * dh[k];
                        }
                        d_log_decay += dot(dh, prev);
                        let dh_b = dot(dh, bt);
                        out.dx[step * p + ch] = dt * dh_b;
                        ddt += x[ch] * dh_b;
                        dh.iter_mut().for_each(|v| *v *= e);
                    }
                    let d_log_decay = d_log_decay * e;
                    out.ddt[step] = ddt + d_log_decay * a;
                    out.da += d_log_decay * dt;
                }
            }
            out
        })
        .collect();

    // Put each unit's gradients in place; sums run over units in a fixed order.
    let mut grads = Gradients {
        x: vec![0f32; b * t * heads * p],
        delta: vec![0f32; b * t * heads],
        a: vec![0f32; heads],
        b: vec![0f32; b * t * groups * n],
        c: vec![0f32; b * t * groups * n],
    };
    for (unit, u) in units.iter().enumerate() {
        let (row, head) = (unit / heads, unit % heads);
        let grp = dims.group(head);
        for step in 0..t {
            grads.x[dims.at_x(row, step, head)..][..p].copy_from_slice(&u.dx[step * p..][..p]);
            grads.delta[(row * t + step) * heads + head] = u.ddt[step];
            let at = dims.at_bc(row, step, grp);
            add(&mut grads.b[at..][..n], &u.db[step * n..][..n]);
            add(&mut grads.c[at..][..n], &u.dc[step * n..][..n]);
        }
        grads.a[head] += u.da;
    }
    grads
}

fn add(into: &mut [f32], from: &[f32]) {
    into.iter_mut().zip(from).for_each(|(a, b)| *a += b);
}
