//! Mamba-1's selective scan as host loops for the CPU backend: the same contract as archlab's
//! CubeCL kernel (`src/kernels/scan_kernel.rs`), tested against the same oracle
//! (`archlab::kernels::selective_scan::reference`).
//!
//! The plain-ops twin runs the recurrence as ≈ 3√t steps of tensor ops, each allocating,
//! broadcasting and (under autodiff) recording `[b, t/L, d, n]` intermediates; on a CPU that
//! bookkeeping, not the arithmetic, is most of a Mamba-1 training step. Here the recurrence is
//! one loop that keeps the state of a block of channels in a small buffer, as `mamba_ssm`'s
//! `selective_scan_fwd_kernel` keeps it in registers.
//!
//! # Work split and determinism
//! A unit of work is one batch row and one block of [`BLOCK`] consecutive channels; units run
//! in parallel (rayon). The block size is fixed, so sums over channels (`dB`, `dC`) and over
//! batch rows (`dA`) are added in the same order whatever the thread count: results are
//! bit-identical for any `RAYON_NUM_THREADS`.
//!
//! # Memory: recompute instead of storing
//! The forward pass saves only the state entering every chunk of [`checkpoint_chunk`] steps
//! (`[b, ⌈t/L⌉, d, n]`); the backward pass walks the chunks from last to first, recomputes a
//! chunk's states from its checkpoint, and runs the reverse recurrence over them.

use rayon::prelude::*;

/// Channels per unit of work.
pub const BLOCK: usize = 32;

/// The scan's sizes: batch rows, steps, channels, state size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub d: usize,
    pub n: usize,
}

impl Dims {
    fn blocks(&self) -> usize {
        self.d.div_ceil(BLOCK)
    }

    /// The channels `[d0, d0 + width)` of block `block`.
    fn block(&self, block: usize) -> (usize, usize) {
        let d0 = block * BLOCK;
        (d0, BLOCK.min(self.d - d0))
    }
}

/// Steps between saved states: ⌈√t⌉ balances the checkpoints (`t/L` states) against the
/// chunk recomputed in the backward pass (`L` states).
pub fn checkpoint_chunk(t: usize) -> usize {
    ((t as f64).sqrt().ceil() as usize).max(1)
}

/// Host operands, row-major as in `archlab::kernels::selective_scan::ScanInputs`: `x`, `delta`:
/// `[b, t, d]`; `a`: `[d, n]`; `b`, `c`: `[b, t, n]`. Mamba-2's scan (`ssd_scan.rs`) takes the
/// same five, shaped per head.
#[derive(Clone, Copy, Debug)]
pub struct Operands<'a> {
    pub x: &'a [f32],
    pub delta: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub c: &'a [f32],
}

/// The gradients of the five operands, shaped as they are.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    pub x: Vec<f32>,
    pub delta: Vec<f32>,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
    pub c: Vec<f32>,
}

/// Forward pass from a zero state: `y` (`[b, t, d]`) and, when `save`, the state entering
/// every chunk (`[b, ⌈t/L⌉, d, n]` with `L` = [`checkpoint_chunk`]; empty otherwise).
pub fn forward(s: Operands, dims: Dims, save: bool) -> (Vec<f32>, Vec<f32>) {
    let Dims { b: _, t, d, n } = dims;
    let chunk = checkpoint_chunk(t);
    let nc = t.div_ceil(chunk);
    // Each unit writes its outputs to buffers of its own ([t, width] and [nc, width, n]);
    // they are put in place afterwards, so no two threads write to one slice.
    let units: Vec<(Vec<f32>, Vec<f32>)> = (0..dims.b * dims.blocks())
        .into_par_iter()
        .map(|unit| {
            let (row, block) = (unit / dims.blocks(), unit % dims.blocks());
            let (d0, width) = dims.block(block);
            let mut h = vec![0f32; width * n];
            let mut y = vec![0f32; t * width];
            let mut saved = if save { vec![0f32; nc * width * n] } else { Vec::new() };
            for step in 0..t {
                if save && step % chunk == 0 {
                    saved[(step / chunk) * width * n..][..width * n].copy_from_slice(&h);
                }
                let bt = &s.b[(row * t + step) * n..][..n];
                let ct = &s.c[(row * t + step) * n..][..n];
                let at = (row * t + step) * d + d0;
                for ch in 0..width {
                    let (dt, u) = (s.delta[at + ch], s.x[at + ch]);
                    let a = &s.a[(d0 + ch) * n..][..n];
                    let h = &mut h[ch * n..][..n];
                    let mut acc = 0f32;
                    for k in 0..n {
                        h[k] = (dt * a[k]).exp() * h[k] + dt * u * bt[k];
                        acc += ct[k] * h[k];
                    }
                    y[step * width + ch] = acc;
                }
            }
            (y, saved)
        })
        .collect();

    let mut y = vec![0f32; dims.b * t * d];
    let mut checkpoints = if save { vec![0f32; dims.b * nc * d * n] } else { Vec::new() };
    for (unit, (unit_y, unit_saved)) in units.iter().enumerate() {
        let (row, block) = (unit / dims.blocks(), unit % dims.blocks());
        let (d0, width) = dims.block(block);
        place_columns(&mut y, unit_y, dims, row, block);
        if save {
            for c in 0..nc {
                checkpoints[((row * nc + c) * d + d0) * n..][..width * n]
                    .copy_from_slice(&unit_saved[c * width * n..][..width * n]);
            }
        }
    }
    (y, checkpoints)
}

/// What one unit of the backward pass computes.
struct UnitGradients {
    /// `[t, width]` each.
    dx: Vec<f32>,
    ddelta: Vec<f32>,
    /// `[width, n]`, summed over this unit's steps.
    da: Vec<f32>,
    /// `[t, n]`, summed over this unit's channels.
    db: Vec<f32>,
    dc: Vec<f32>,
}

/// Backward pass given `dy` (`[b, t, d]`) and the forward's `checkpoints`.
///
/// With `e_t = exp(Δ_t·A)` and `g` the gradient reaching `h_t` from later steps, each step
/// back computes `dh = g + dy_t·C_t`, then `dC_t += dy_t·h_t`, `dA += dh·h_{t−1}·e_t·Δ_t`,
/// `dΔ_t = Σ_n dh·(h_{t−1}·e_t·A + B_t·x_t)`, `dB_t += dh·Δ_t·x_t`, `dx_t = Σ_n dh·Δ_t·B_t`, and
/// hands `g = dh·e_t` to the step before.
pub fn backward(s: Operands, dims: Dims, checkpoints: &[f32], dy: &[f32]) -> Gradients {
    let Dims { b: _, t, d, n } = dims;
    let chunk = checkpoint_chunk(t);
    let nc = t.div_ceil(chunk);
    let blocks = dims.blocks();
    let units: Vec<UnitGradients> = (0..dims.b * blocks)
        .into_par_iter()
        .map(|unit| {
            let (row, block) = (unit / blocks, unit % blocks);
            let (d0, width) = dims.block(block);
            let mut out = UnitGradients {
                dx: vec![0f32; t * width],
                ddelta: vec![0f32; t * width],
                da: vec![0f32; width * n],
                db: vec![0f32; t * n],
                dc: vec![0f32; t * n],
            };
            let mut g = vec![0f32; width * n];
            // states[i] is the state after step t0 + i − 1 (states[0]: the chunk's checkpoint);
            // decays[i] is e at step t0 + i.
            let mut states = vec![0f32; (chunk + 1) * width * n];
            let mut decays = vec![0f32; chunk * width * n];
            for c in (0..nc).rev() {
                let (t0, t1) = (c * chunk, ((c + 1) * chunk).min(t));
                for ch in 0..width {
                    let src = ((row * nc + c) * d + d0 + ch) * n;
                    states[ch * n..][..n].copy_from_slice(&checkpoints[src..][..n]);
                }
                for step in t0..t1 {
                    let i = step - t0;
                    let bt = &s.b[(row * t + step) * n..][..n];
                    let at = (row * t + step) * d + d0;
                    let (prev, next) = states.split_at_mut((i + 1) * width * n);
                    let prev = &prev[i * width * n..];
                    for ch in 0..width {
                        let (dt, u) = (s.delta[at + ch], s.x[at + ch]);
                        let a = &s.a[(d0 + ch) * n..][..n];
                        let e = &mut decays[(i * width + ch) * n..][..n];
                        for k in 0..n {
                            e[k] = (dt * a[k]).exp();
                            next[ch * n + k] = e[k] * prev[ch * n + k] + dt * u * bt[k];
                        }
                    }
                }
                for step in (t0..t1).rev() {
                    let i = step - t0;
                    let bt = &s.b[(row * t + step) * n..][..n];
                    let ct = &s.c[(row * t + step) * n..][..n];
                    let db = &mut out.db[step * n..][..n];
                    let dc = &mut out.dc[step * n..][..n];
                    let at = (row * t + step) * d + d0;
                    for ch in 0..width {
                        let (dt, u, dyv) = (s.delta[at + ch], s.x[at + ch], dy[at + ch]);
                        let a = &s.a[(d0 + ch) * n..][..n];
                        let prev = &states[(i * width + ch) * n..][..n];
                        let cur = &states[((i + 1) * width + ch) * n..][..n];
                        let e = &decays[(i * width + ch) * n..][..n];
                        let g = &mut g[ch * n..][..n];
                        let da = &mut out.da[ch * n..][..n];
                        let (mut ddt, mut du) = (0f32, 0f32);
                        for k in 0..n {
                            let dh = g[k] + dyv * ct[k];
                            dc[k] += dyv * cur[k];
                            let d_log_decay = dh * prev[k] * e[k]; // ∂L/∂(Δ·A)
                            da[k] += d_log_decay * dt;
                            ddt += d_log_decay * a[k] + dh * bt[k] * u;
                            db[k] += dh * dt * u;
                            du += dh * dt * bt[k];
                            g[k] = dh * e[k];
                        }
                        out.dx[step * width + ch] = du;
                        out.ddelta[step * width + ch] = ddt;
                    }
                }
            }
            out
        })
        .collect();

    // Put each unit's gradients in place; sums run over units in a fixed order.
    let mut grads = Gradients {
        x: vec![0f32; dims.b * t * d],
        delta: vec![0f32; dims.b * t * d],
        a: vec![0f32; d * n],
        b: vec![0f32; dims.b * t * n],
        c: vec![0f32; dims.b * t * n],
    };
    for (unit, u) in units.iter().enumerate() {
        let (row, block) = (unit / blocks, unit % blocks);
        let (d0, width) = dims.block(block);
        place_columns(&mut grads.x, &u.dx, dims, row, block);
        place_columns(&mut grads.delta, &u.ddelta, dims, row, block);
        add(&mut grads.a[d0 * n..][..width * n], &u.da);
        add(&mut grads.b[row * t * n..][..t * n], &u.db);
        add(&mut grads.c[row * t * n..][..t * n], &u.dc);
    }
    grads
}

/// Writes a unit's `[t, width]` buffer into its columns of a `[b, t, d]` tensor.
fn place_columns(into: &mut [f32], unit: &[f32], dims: Dims, row: usize, block: usize) {
    let (d0, width) = dims.block(block);
    for (step, values) in unit.chunks_exact(width).enumerate() {
        into[(row * dims.t + step) * dims.d + d0..][..width].copy_from_slice(values);
    }
}

fn add(into: &mut [f32], from: &[f32]) {
    into.iter_mut().zip(from).for_each(|(a, b)| *a += b);
}
