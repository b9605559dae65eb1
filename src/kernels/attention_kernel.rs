//! Causal (optionally sliding-window) attention with grouped-query heads as three CubeCL
//! kernels: the FlashAttention-2 forward and its two backward kernels (Dao 2023,
//! arXiv:2307.08691, Algorithms 1 and 2). No `t × t` matrix exists at any point: scores are
//! recomputed tile by tile from Q and K, and the forward keeps only each row's log-sum-exp.
//!
//! The plain-ops twin is `model::attention`'s masked softmax (`kernels::plain_attention`);
//! `tests/all/kernels.rs` checks these kernels against it, values and gradients.
//!
//! # Work split
//! - forward and dQ: one unit per query row; a cube of `CUBE_DIM_X` consecutive rows of one
//!   (batch, head) loads tiles of `key_tile` keys (and values) into shared memory and every unit
//!   walks them, skipping keys outside its causal window;
//! - dK, dV: one unit per key row of one key/value head; the cube loads tiles of queries (and
//!   their output gradients) of every query head in the group that shares this key head (GQA),
//!   so the group's sum happens in registers, without atomics.
//!
//! Units compute their dot products themselves (CUDA cores, f32 accumulate); the tensor-core
//! form of these loops is the next step and is not done (docs/kernels.md, "Not written yet").
//!
//! Masked scores use a large finite negative rather than −∞ because WGSL has no −∞ literal.

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

use super::launch::{cast, empty, f32_contiguous};

/// Whether query `i` sees key `j`: causal, and within the last `window` positions when
/// `window > 0`.
#[cube]
fn visible(i: usize, j: usize, window: usize) -> bool {
    let mut ok = j <= i;
    if window > 0 && ok {
        ok = i - j < window;
    }
    ok
}

/// Forward: `out = softmax(q·kᵀ·scale + mask)·v` and `lse` = each row's log-sum-exp.
///
/// Layouts (contiguous): `q`, `out`: `[b, h, t, hd]`; `k`, `v`: `[b, kv, t, hd]`; `lse`:
/// `[b, h, t]`. Grid: x over query tiles of `CUBE_DIM_X`, y over `b · h`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn attention_forward_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<F>,
    scale: f32,
    window: u32,
    #[comptime] head_dim: usize,
    #[comptime] key_tile: usize,
    #[define(F)] _dtype: StorageType,
) {
    let heads = q.shape(1);
    let scale = F::cast_from(scale);
    let window = window as usize;
    let seq_len = q.shape(2);
    let kv_heads = k.shape(1);
    let row_block = CUBE_DIM_X as usize;
    let bh = CUBE_POS_Y as usize;
    let batch = bh / heads;
    let head = bh % heads;
    let kv_head = head / (heads / kv_heads);
    let i = CUBE_POS_X as usize * row_block + UNIT_POS_X as usize;
    let active = i < seq_len;
    let q_base = (bh * seq_len + i) * head_dim;
    let kv_base = (batch * kv_heads + kv_head) * seq_len * head_dim;

    let mut q_row = Array::<F>::new(head_dim);
    let mut acc = Array::<F>::new(head_dim);
    for e in 0..head_dim {
        q_row[e] = if active { q[q_base + e] } else { F::new(0.0) };
        acc[e] = F::new(0.0);
    }
    let mut m = F::new(-1.0e30);
    let mut l = F::new(0.0);

    let mut k_tile = SharedMemory::<F>::new(key_tile * head_dim);
    let mut v_tile = SharedMemory::<F>::new(key_tile * head_dim);
    let first_row = CUBE_POS_X as usize * row_block;
    let first_key = first_visible_key(first_row, window);
    let last_key = last_row(first_row, row_block, seq_len);
    let mut tile_start = first_key - first_key % key_tile;
    while tile_start <= last_key {
        load_rows(k, &mut k_tile, kv_base, tile_start, seq_len, key_tile, head_dim);
        load_rows(v, &mut v_tile, kv_base, tile_start, seq_len, key_tile, head_dim);
        sync_cube();
        for jj in 0..key_tile {
            let j = tile_start + jj;
            if active && j < seq_len && visible(i, j, window) {
                let mut s = F::new(0.0);
                for e in 0..head_dim {
                    s += q_row[e] * k_tile[jj * head_dim + e];
                }
                s *= scale;
                // Online softmax: rescale what was accumulated under the old maximum.
                let m_new = F::max(m, s);
                let correction = F::exp(m - m_new);
                let p = F::exp(s - m_new);
                l = l * correction + p;
                for e in 0..head_dim {
                    acc[e] = acc[e] * correction + p * v_tile[jj * head_dim + e];
                }
                m = m_new;
            }
        }
        sync_cube();
        tile_start += key_tile;
    }
    if active {
        for e in 0..head_dim {
            out[q_base + e] = acc[e] / l;
        }
        lse[bh * seq_len + i] = m + F::ln(l);
    }
}

/// dQ: `dq_i = scale · Σ_j p_ij (dO_i·v_j − D_i) k_j` with `p_ij = exp(s_ij − lse_i)` and
/// `D_i = dO_i·o_i` (`delta_rows`, `[b, h, t]`). Same layout and grid as the forward.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn attention_dq_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<F>,
    delta_rows: &Tensor<F>,
    dq: &mut Tensor<F>,
    scale: f32,
    window: u32,
    #[comptime] head_dim: usize,
    #[comptime] key_tile: usize,
    #[define(F)] _dtype: StorageType,
) {
    let heads = q.shape(1);
    let scale = F::cast_from(scale);
    let window = window as usize;
    let seq_len = q.shape(2);
    let kv_heads = k.shape(1);
    let row_block = CUBE_DIM_X as usize;
    let bh = CUBE_POS_Y as usize;
    let batch = bh / heads;
    let head = bh % heads;
    let kv_head = head / (heads / kv_heads);
    let i = CUBE_POS_X as usize * row_block + UNIT_POS_X as usize;
    let active = i < seq_len;
    let q_base = (bh * seq_len + i) * head_dim;
    let kv_base = (batch * kv_heads + kv_head) * seq_len * head_dim;

    let mut q_row = Array::<F>::new(head_dim);
    let mut do_row = Array::<F>::new(head_dim);
    let mut grad = Array::<F>::new(head_dim);
    for e in 0..head_dim {
        q_row[e] = if active { q[q_base + e] } else { F::new(0.0) };
        do_row[e] = if active { d_out[q_base + e] } else { F::new(0.0) };
        grad[e] = F::new(0.0);
    }
    let mut row = bh * seq_len + i;
    if !active {
        row = 0;
    }
    let lse_i = lse[row];
    let d_i = delta_rows[row];

    let mut k_tile = SharedMemory::<F>::new(key_tile * head_dim);
    let mut v_tile = SharedMemory::<F>::new(key_tile * head_dim);
    let first_row = CUBE_POS_X as usize * row_block;
    let first_key = first_visible_key(first_row, window);
    let last_key = last_row(first_row, row_block, seq_len);
    let mut tile_start = first_key - first_key % key_tile;
    while tile_start <= last_key {
        load_rows(k, &mut k_tile, kv_base, tile_start, seq_len, key_tile, head_dim);
        load_rows(v, &mut v_tile, kv_base, tile_start, seq_len, key_tile, head_dim);
        sync_cube();
        for jj in 0..key_tile {
            let j = tile_start + jj;
            if active && j < seq_len && visible(i, j, window) {
                let mut s = F::new(0.0);
                let mut dp = F::new(0.0);
                for e in 0..head_dim {
                    s += q_row[e] * k_tile[jj * head_dim + e];
                    dp += do_row[e] * v_tile[jj * head_dim + e];
                }
                let ds = F::exp(s * scale - lse_i) * (dp - d_i);
                for e in 0..head_dim {
                    grad[e] += ds * k_tile[jj * head_dim + e];
                }
            }
        }
        sync_cube();
        tile_start += key_tile;
    }
    if active {
        for e in 0..head_dim {
            dq[q_base + e] = grad[e] * scale;
        }
    }
}

/// dK, dV for one key/value head, summed over the query heads that share it:
/// `dv_j = Σ_i p_ij dO_i`, `dk_j = scale · Σ_i p_ij (dO_i·v_j − D_i) q_i`.
///
/// Layouts: `dk`, `dv`: `[b, kv, t, hd]`. Grid: x over key tiles of `CUBE_DIM_X`, y over `b · kv`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn attention_dkv_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    d_out: &Tensor<F>,
    lse: &Tensor<F>,
    delta_rows: &Tensor<F>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    scale: f32,
    window: u32,
    #[comptime] head_dim: usize,
    #[comptime] query_tile: usize,
    #[define(F)] _dtype: StorageType,
) {
    let heads = q.shape(1);
    let scale = F::cast_from(scale);
    let window = window as usize;
    let seq_len = q.shape(2);
    let kv_heads = k.shape(1);
    let group = heads / kv_heads;
    let key_block = CUBE_DIM_X as usize;
    let bkv = CUBE_POS_Y as usize;
    let batch = bkv / kv_heads;
    let kv_head = bkv % kv_heads;
    let j = CUBE_POS_X as usize * key_block + UNIT_POS_X as usize;
    let active = j < seq_len;
    let kv_row = (bkv * seq_len + j) * head_dim;

    let mut k_row = Array::<F>::new(head_dim);
    let mut v_row = Array::<F>::new(head_dim);
    let mut grad_k = Array::<F>::new(head_dim);
    let mut grad_v = Array::<F>::new(head_dim);
    for e in 0..head_dim {
        k_row[e] = if active { k[kv_row + e] } else { F::new(0.0) };
        v_row[e] = if active { v[kv_row + e] } else { F::new(0.0) };
        grad_k[e] = F::new(0.0);
        grad_v[e] = F::new(0.0);
    }

    let mut q_tile = SharedMemory::<F>::new(query_tile * head_dim);
    let mut do_tile = SharedMemory::<F>::new(query_tile * head_dim);
    let mut lse_tile = SharedMemory::<F>::new(query_tile);
    let mut d_tile = SharedMemory::<F>::new(query_tile);
    // Queries that see this cube's keys: from its first key to its last key + window − 1.
    let first_key = CUBE_POS_X as usize * key_block;
    let mut last_query = seq_len - 1;
    if window > 0 && first_key + key_block - 1 + window - 1 < last_query {
        last_query = first_key + key_block - 1 + window - 1;
    }
    for g in 0..group {
        let head = kv_head * group + g;
        let q_base = (batch * heads + head) * seq_len * head_dim;
        let row_base = (batch * heads + head) * seq_len;
        let mut tile_start = first_key - first_key % query_tile;
        while tile_start <= last_query {
            load_rows(q, &mut q_tile, q_base, tile_start, seq_len, query_tile, head_dim);
            load_rows(d_out, &mut do_tile, q_base, tile_start, seq_len, query_tile, head_dim);
            let mut r = UNIT_POS_X as usize;
            while r < query_tile {
                let i = tile_start + r;
                lse_tile[r] = if i < seq_len { lse[row_base + i] } else { F::new(0.0) };
                d_tile[r] = if i < seq_len { delta_rows[row_base + i] } else { F::new(0.0) };
                r += key_block;
            }
            sync_cube();
            for ii in 0..query_tile {
                let i = tile_start + ii;
                if active && i < seq_len && visible(i, j, window) {
                    let mut s = F::new(0.0);
                    let mut dp = F::new(0.0);
                    for e in 0..head_dim {
                        s += q_tile[ii * head_dim + e] * k_row[e];
                        dp += do_tile[ii * head_dim + e] * v_row[e];
                    }
                    let p = F::exp(s * scale - lse_tile[ii]);
                    let ds = p * (dp - d_tile[ii]);
                    for e in 0..head_dim {
                        grad_v[e] += p * do_tile[ii * head_dim + e];
                        grad_k[e] += ds * q_tile[ii * head_dim + e];
                    }
                }
            }
            sync_cube();
            tile_start += query_tile;
        }
    }
    if active {
        for e in 0..head_dim {
            dk[kv_row + e] = grad_k[e] * scale;
            dv[kv_row + e] = grad_v[e];
        }
    }
}

/// The first key any query of a block starting at `first_row` may see.
#[cube]
fn first_visible_key(first_row: usize, window: usize) -> usize {
    let mut first = 0;
    if window > 0 && first_row + 1 > window {
        first = first_row + 1 - window;
    }
    first
}

/// The last row of the block `[first_row, first_row + rows)` inside the sequence.
#[cube]
fn last_row(first_row: usize, rows: usize, seq_len: usize) -> usize {
    let mut last = first_row + rows - 1;
    if last >= seq_len {
        last = seq_len - 1;
    }
    last
}

/// Cooperatively copies rows `start .. start + rows` of a `[·, t, hd]` slab at `base` into
/// `tile` (zeros past the end of the sequence).
#[cube]
fn load_rows<F: Float>(
    src: &Tensor<F>,
    tile: &mut SharedMemory<F>,
    base: usize,
    start: usize,
    seq_len: usize,
    #[comptime] rows: usize,
    #[comptime] head_dim: usize,
) {
    let mut idx = UNIT_POS_X as usize;
    while idx < rows * head_dim {
        let r = idx / head_dim;
        let e = idx % head_dim;
        tile[idx] = if start + r < seq_len { src[base + (start + r) * head_dim + e] } else { F::new(0.0) };
        idx += CUBE_DIM_X as usize;
    }
}

// ---------------------------------------------------------------------------------------------
// Launch (host side): grid, operand layouts and dtypes. Called by `cube.rs`.

/// Rows per cube in the attention kernels (query rows in the forward and dQ, key rows in dK/dV).
const ATTENTION_ROWS: usize = 32;

/// Keys (or queries) per shared-memory tile: the largest power of two up to 32 whose two
/// `tile · hd` f32 tiles (plus dK/dV's two `tile` row vectors) fit the device's shared memory
/// (48 KiB on NVIDIA by default, 16 KiB under wgpu's default limits).
pub(super) fn attention_tile<R: CubeRuntime>(like: &CubeTensor<R>, head_dim: usize) -> usize {
    let limit = like.client.properties().hardware.max_shared_memory_size;
    let bytes = |tile: usize| (2 * tile * head_dim + 2 * tile) * size_of::<f32>();
    let mut tile = 32;
    while tile > 1 && bytes(tile) > limit {
        tile /= 2;
    }
    tile
}

fn attention_grid(rows: usize, slabs: usize) -> (CubeCount, CubeDim) {
    (
        CubeCount::Static(rows.div_ceil(ATTENTION_ROWS) as u32, slabs as u32, 1),
        CubeDim::new_1d(ATTENTION_ROWS as u32),
    )
}

/// `(out, lse)` of causal attention (`window` 0: unbounded).
pub(super) fn attention_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    window: usize,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let out_dtype = q.dtype();
    let [q, k, v] = [q, k, v].map(f32_contiguous::<R, F, I, BT>);
    let [b, h, t, hd] = q.shape().dims::<4>();
    let out = empty::<R>(&q, [b, h, t, hd]);
    let lse = empty::<R>(&q, [b, h, t]);
    let (count, dim) = attention_grid(t, b * h);
    attention_forward_kernel::launch::<R>(
        &q.client,
        count,
        dim,
        q.clone().into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        1.0 / (hd as f32).sqrt(),
        window as u32,
        hd,
        attention_tile(&q, hd),
        DType::F32.into(),
    );
    (cast::<R, F, I, BT>(out, out_dtype), lse)
}

/// `[dq, dk, dv]` from the forward's output and row log-sum-exps.
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    out: CubeTensor<R>,
    lse: CubeTensor<R>,
    d_out: CubeTensor<R>,
    window: usize,
) -> [CubeTensor<R>; 3] {
    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let dtypes = [q.dtype(), k.dtype(), v.dtype()];
    let [q, k, v, out, d_out] = [q, k, v, out, d_out].map(f32_contiguous::<R, F, I, BT>);
    let [b, h, t, hd] = q.shape().dims::<4>();
    let kv = k.shape().dims::<4>()[1];
    // D_i = dO_i · o_i, the softmax backward's row term (FlashAttention-2, Algorithm 2 line 4).
    let delta_rows = Cube::<R, F, I, BT>::float_reshape(
        Cube::<R, F, I, BT>::float_sum_dim(Cube::<R, F, I, BT>::float_mul(d_out.clone(), out), 3),
        Shape::new([b, h, t]),
    );
    let delta_rows = into_contiguous(delta_rows);
    let (dq, dk, dv) =
        (empty::<R>(&q, [b, h, t, hd]), empty::<R>(&q, [b, kv, t, hd]), empty::<R>(&q, [b, kv, t, hd]));
    let scale = 1.0 / (hd as f32).sqrt();
    let tile = attention_tile(&q, hd);
    let (count, dim) = attention_grid(t, b * h);
    attention_dq_kernel::launch::<R>(
        &q.client,
        count,
        dim,
        q.clone().into_tensor_arg(),
        k.clone().into_tensor_arg(),
        v.clone().into_tensor_arg(),
        d_out.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        delta_rows.clone().into_tensor_arg(),
        dq.clone().into_tensor_arg(),
        scale,
        window as u32,
        hd,
        tile,
        DType::F32.into(),
    );
    let (count, dim) = attention_grid(t, b * kv);
    let client = q.client.clone();
    attention_dkv_kernel::launch::<R>(
        &client,
        count,
        dim,
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        d_out.into_tensor_arg(),
        lse.into_tensor_arg(),
        delta_rows.into_tensor_arg(),
        dk.clone().into_tensor_arg(),
        dv.clone().into_tensor_arg(),
        scale,
        window as u32,
        hd,
        tile,
        DType::F32.into(),
    );
    let mut grads = [dq, dk, dv].into_iter().zip(dtypes).map(|(g, dtype)| cast::<R, F, I, BT>(g, dtype));
    [(); 3].map(|_| grads.next().expect("three gradients"))
}
