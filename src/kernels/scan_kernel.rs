//! Mamba-1's selective scan as two CubeCL kernels (forward, backward), written once for every
//! CubeCL runtime (CUDA, wgpu/Vulkan/Metal).
//!
//! The plain-ops twin is [`super::selective_scan::reference`]; `tests/all/kernels.rs`
//! checks these kernels against it, values and gradients, on random inputs of awkward sizes.
//!
//! # Work split
//! One unit (thread) owns one (batch row, channel) pair and walks the time axis keeping its
//! `n_state` states in registers: the recurrence of every (channel, state) pair is independent,
//! so no unit waits on another in the forward pass. This is the layout of `mamba_ssm`'s
//! `selective_scan_fwd_kernel` without its intra-block parallel scan over time (a later
//! speed-up; see docs/kernels.md, "Not written yet").
//!
//! # Memory: recompute instead of storing
//! Autograd through the recurrence would keep every `h_t` (`[b, t, d, n]`, the tensor that
//! made the plain-ops scan run out of memory at long T). The forward kernel instead writes
//! the state entering every chunk of `chunk` steps (`[b, t/chunk, d, n]`); the backward kernel
//! walks the chunks from last to first, recomputes the chunk's states from its checkpoint into
//! a per-unit array, and runs the reverse recurrence over them.
//!
//! # Reductions over channels
//! `dB_t[n]` and `dC_t[n]` sum over all channels. Each cube (`cube_d` consecutive channels)
//! sums its units' contributions in shared memory every `group` steps and writes one partial
//! row per cube (`[b, t, blocks, n]`); the launcher adds the `blocks` partials with one tensor
//! op. No atomics, so the result does not depend on scheduling.

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

use super::ScanOperands;
use super::launch::{cast, empty, f32_contiguous};

/// Forward pass from a zero state.
///
/// Layouts (contiguous): `x`, `delta`, `y`: `[b, t, d]`; `a`: `[d, n]`; `b`, `c`: `[b, t, n]`;
/// `checkpoints`: `[b, ⌈t/chunk⌉, d, n]`, the state entering each chunk (written only when
/// `save`). Cube grid: x over channel blocks of `CUBE_DIM_X`, y over batch rows.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn scan_forward_kernel<F: Float>(
    x: &Tensor<F>,
    delta: &Tensor<F>,
    a: &Tensor<F>,
    b: &Tensor<F>,
    c: &Tensor<F>,
    y: &mut Tensor<F>,
    checkpoints: &mut Tensor<F>,
    #[comptime] n_state: usize,
    #[comptime] chunk: usize,
    #[comptime] save: bool,
    #[define(F)] _dtype: StorageType,
) {
    let batch = CUBE_POS_Y as usize;
    let channel = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    let seq_len = x.shape(1);
    let channels = x.shape(2);
    if channel >= channels {
        terminate!();
    }
    let n_chunks = seq_len.div_ceil(chunk);

    let mut a_row = Array::<F>::new(n_state);
    let mut h = Array::<F>::new(n_state);
    for n in 0..n_state {
        a_row[n] = a[channel * n_state + n];
        h[n] = F::new(0.0);
    }
    for t in 0..seq_len {
        if save {
            if t % chunk == 0 {
                let base = ((batch * n_chunks + t / chunk) * channels + channel) * n_state;
                for n in 0..n_state {
                    checkpoints[base + n] = h[n];
                }
            }
        }
        let row = batch * seq_len + t;
        let dt = delta[row * channels + channel];
        let u = x[row * channels + channel];
        let mut out = F::new(0.0);
        for n in 0..n_state {
            // h_t = exp(Δ·A)·h_{t−1} + Δ·B_t·x_t ;  y_t = Σ_n C_t·h_t
            let next = F::exp(dt * a_row[n]) * h[n] + dt * b[row * n_state + n] * u;
            h[n] = next;
            out += c[row * n_state + n] * next;
        }
        y[row * channels + channel] = out;
    }
}

/// Backward pass: from `dy` (`[b, t, d]`) and the forward's checkpoints, the gradients of
/// `x` and `delta` (`[b, t, d]`), per-row partials of `a` (`da_part`, `[b, d, n]`) and
/// per-cube partials of `b` and `c` (`db_part`, `dc_part`, `[b, t, blocks, n]`).
///
/// For each state `n`, with `g_t = dy_t`, `λ_t = exp(Δ_t·A)` and `dh` the gradient flowing
/// into `h_t` from later steps, walking t downwards:
/// ```text
/// dh_t   = dh + C_t·g_t                 dC_t += h_t·g_t      (summed over channels)
/// dB_t  += dh_t·Δ_t·x_t (over channels) dx_t += dh_t·Δ_t·B_t
/// dΔ_t  += dh_t·(A·λ_t·h_{t−1} + B_t·x_t)
/// dA    += dh_t·Δ_t·λ_t·h_{t−1}         dh    = dh_t·λ_t     (into h_{t−1})
/// ```
/// Launched with `CUBE_DIM_X == cube_d`; every unit of a cube takes part in the shared-memory
/// reductions, including units past the last channel (they contribute zeros).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn scan_backward_kernel<F: Float>(
    x: &Tensor<F>,
    delta: &Tensor<F>,
    a: &Tensor<F>,
    b: &Tensor<F>,
    c: &Tensor<F>,
    checkpoints: &Tensor<F>,
    dy: &Tensor<F>,
    dx: &mut Tensor<F>,
    ddelta: &mut Tensor<F>,
    da_part: &mut Tensor<F>,
    db_part: &mut Tensor<F>,
    dc_part: &mut Tensor<F>,
    #[comptime] n_state: usize,
    #[comptime] chunk: usize,
    #[comptime] group: usize,
    #[comptime] cube_d: usize,
    #[define(F)] _dtype: StorageType,
) {
    let batch = CUBE_POS_Y as usize;
    let block = CUBE_POS_X as usize;
    let n_blocks = CUBE_COUNT_X as usize;
    let lane = UNIT_POS_X as usize;
    let seq_len = x.shape(1);
    let channels = x.shape(2);
    let channel = block * cube_d + lane;
    let active = channel < channels;
    // Units past the last channel compute on channel 0 and discard the result, so that every
    // unit reaches the same barriers.
    let mut ch = channel;
    if !active {
        ch = 0;
    }
    let n_chunks = seq_len.div_ceil(chunk);

    let mut shared_db = SharedMemory::<F>::new(group * cube_d * n_state);
    let mut shared_dc = SharedMemory::<F>::new(group * cube_d * n_state);
    let mut a_row = Array::<F>::new(n_state);
    let mut dh = Array::<F>::new(n_state);
    let mut da = Array::<F>::new(n_state);
    let mut h_start = Array::<F>::new(n_state);
    let mut states = Array::<F>::new(chunk * n_state);
    for n in 0..n_state {
        a_row[n] = a[ch * n_state + n];
        dh[n] = F::new(0.0);
        da[n] = F::new(0.0);
    }

    for chunk_back in 0..n_chunks {
        let chunk_index = n_chunks - 1 - chunk_back;
        let t0 = chunk_index * chunk;
        let mut len = seq_len - t0;
        if len > chunk {
            len = chunk;
        }

        // Recompute this chunk's states h_{t0} … h_{t0+len−1} from its checkpoint.
        let base = ((batch * n_chunks + chunk_index) * channels + ch) * n_state;
        for n in 0..n_state {
            h_start[n] = checkpoints[base + n];
        }
        for i in 0..len {
            let row = batch * seq_len + t0 + i;
            let dt = delta[row * channels + ch];
            let u = x[row * channels + ch];
            for n in 0..n_state {
                let prev = if i > 0 { states[(i - 1) * n_state + n] } else { h_start[n] };
                states[i * n_state + n] = F::exp(dt * a_row[n]) * prev + dt * b[row * n_state + n] * u;
            }
        }

        // The reverse recurrence over the chunk.
        for j in 0..len {
            let i = len - 1 - j;
            let t = t0 + i;
            let row = batch * seq_len + t;
            let g = dy[row * channels + ch];
            let dt = delta[row * channels + ch];
            let u = x[row * channels + ch];
            let slot = j % group;
            let mut du = F::new(0.0);
            let mut ddt = F::new(0.0);
            for n in 0..n_state {
                let h_t = states[i * n_state + n];
                let h_prev = if i > 0 { states[(i - 1) * n_state + n] } else { h_start[n] };
                let decay = F::exp(dt * a_row[n]);
                let b_n = b[row * n_state + n];
                let dh_t = dh[n] + c[row * n_state + n] * g;
                let cell = (slot * cube_d + lane) * n_state + n;
                if active {
                    shared_dc[cell] = h_t * g;
                    shared_db[cell] = dh_t * dt * u;
                } else {
                    shared_dc[cell] = F::new(0.0);
                    shared_db[cell] = F::new(0.0);
                }
                du += dh_t * dt * b_n;
                ddt += dh_t * (a_row[n] * decay * h_prev + b_n * u);
                da[n] += dh_t * dt * decay * h_prev;
                dh[n] = dh_t * decay;
            }
            if active {
                dx[row * channels + ch] = du;
                ddelta[row * channels + ch] = ddt;
            }

            // Every `group` steps (and at the chunk's first step) the cube sums its units'
            // dB/dC contributions; slot s holds time t + (slot − s).
            if slot == group - 1 || j == len - 1 {
                sync_cube();
                let filled = slot + 1;
                let mut entry = lane;
                while entry < filled * n_state {
                    let s = entry / n_state;
                    let n = entry % n_state;
                    let mut sum_db = F::new(0.0);
                    let mut sum_dc = F::new(0.0);
                    for l in 0..cube_d {
                        sum_db += shared_db[(s * cube_d + l) * n_state + n];
                        sum_dc += shared_dc[(s * cube_d + l) * n_state + n];
                    }
                    let ts = t + slot - s;
                    let out = ((batch * seq_len + ts) * n_blocks + block) * n_state + n;
                    db_part[out] = sum_db;
                    dc_part[out] = sum_dc;
                    entry += cube_d;
                }
                sync_cube();
            }
        }
    }

    if active {
        for n in 0..n_state {
            da_part[(batch * channels + channel) * n_state + n] = da[n];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Launch (host side): grid, operand layouts and dtypes. Called by `cube.rs`.

/// Units per cube along the channel axis: one warp on NVIDIA GPUs, so the backward's
/// shared-memory barriers stay within a warp.
const CUBE_D: usize = 32;

/// Steps between state checkpoints. The backward recomputes `chunk · n` states per unit into
/// a private array (≤ 1024 floats), and the checkpoints cost `1/chunk` of storing every state.
pub(super) fn chunk_len(n_state: usize) -> usize {
    (1024 / n_state).clamp(4, 64)
}

/// Steps per shared-memory reduction of dB/dC in the backward: two `group · CUBE_D · n` f32
/// buffers, at most 8 KiB, well inside every GPU's (and Metal's 32 KiB) shared memory.
fn group_len(n_state: usize) -> usize {
    (1024 / (CUBE_D * n_state)).max(1)
}

/// `(y, checkpoints)`; the checkpoints are a 1-element placeholder unless `save`.
pub(super) fn scan_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    s: ScanOperands<CubeBackend<R, F, I, BT>>,
    save: bool,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let out_dtype = s.x.dtype();
    let [x, delta, a, b, c] = [s.x, s.delta, s.a, s.b, s.c].map(f32_contiguous::<R, F, I, BT>);
    let [bsz, t, d] = x.shape().dims::<3>();
    let n = a.shape().dims::<2>()[1];
    let chunk = chunk_len(n);
    let y = empty::<R>(&x, [bsz, t, d]);
    let checkpoints = if save { empty::<R>(&x, [bsz, t.div_ceil(chunk), d, n]) } else { empty::<R>(&x, [1]) };
    scan_forward_kernel::launch::<R>(
        &x.client,
        CubeCount::Static(d.div_ceil(CUBE_D) as u32, bsz as u32, 1),
        CubeDim::new_1d(CUBE_D as u32),
        x.clone().into_tensor_arg(),
        delta.into_tensor_arg(),
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        c.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        checkpoints.clone().into_tensor_arg(),
        n,
        chunk,
        save,
        DType::F32.into(),
    );
    (cast::<R, F, I, BT>(y, out_dtype), checkpoints)
}

pub(super) fn scan_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    s: ScanOperands<CubeBackend<R, F, I, BT>>,
    checkpoints: CubeTensor<R>,
    dy: CubeTensor<R>,
) -> ScanOperands<CubeBackend<R, F, I, BT>> {
    let dtypes = [s.x.dtype(), s.delta.dtype(), s.a.dtype(), s.b.dtype(), s.c.dtype()];
    let [x, delta, a, b, c] = [s.x, s.delta, s.a, s.b, s.c].map(f32_contiguous::<R, F, I, BT>);
    let dy = f32_contiguous::<R, F, I, BT>(dy);
    let [bsz, t, d] = x.shape().dims::<3>();
    let n = a.shape().dims::<2>()[1];
    let blocks = d.div_ceil(CUBE_D);
    let (dx, ddelta) = (empty::<R>(&x, [bsz, t, d]), empty::<R>(&x, [bsz, t, d]));
    let da_part = empty::<R>(&x, [bsz, d, n]);
    let (db_part, dc_part) = (empty::<R>(&x, [bsz, t, blocks, n]), empty::<R>(&x, [bsz, t, blocks, n]));
    scan_backward_kernel::launch::<R>(
        &x.client,
        CubeCount::Static(blocks as u32, bsz as u32, 1),
        CubeDim::new_1d(CUBE_D as u32),
        x.clone().into_tensor_arg(),
        delta.into_tensor_arg(),
        a.into_tensor_arg(),
        b.into_tensor_arg(),
        c.into_tensor_arg(),
        checkpoints.into_tensor_arg(),
        dy.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        ddelta.clone().into_tensor_arg(),
        da_part.clone().into_tensor_arg(),
        db_part.clone().into_tensor_arg(),
        dc_part.clone().into_tensor_arg(),
        n,
        chunk_len(n),
        group_len(n),
        CUBE_D,
        DType::F32.into(),
    );
    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let da = Cube::<R, F, I, BT>::float_reshape(
        Cube::<R, F, I, BT>::float_sum_dim(da_part, 0),
        Shape::new([d, n]),
    );
    let across_blocks = |part| {
        Cube::<R, F, I, BT>::float_reshape(
            Cube::<R, F, I, BT>::float_sum_dim(part, 2),
            Shape::new([bsz, t, n]),
        )
    };
    let (db, dc) = (across_blocks(db_part), across_blocks(dc_part));
    let [dx, ddelta, da, db, dc] = [dx, ddelta, da, db, dc]
        .into_iter()
        .zip(dtypes)
        .map(|(g, dtype)| cast::<R, F, I, BT>(g, dtype))
        .collect::<Vec<_>>()
        .try_into()
        .expect("five gradients");
    ScanOperands { x: dx, delta: ddelta, a: da, b: db, c: dc }
}
