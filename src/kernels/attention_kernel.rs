//! Causal (optionally sliding-window) attention with grouped-query heads as three CubeCL
//! kernels: the FlashAttention-2 forward and its two backward kernels (Dao 2023,
//! arXiv:2307.08691, Algorithms 1 and 2). No `t × t` matrix exists at any point: scores are
//! recomputed tile by tile from Q and K, and the forward keeps only each row's log-sum-exp.
//!
//! The plain-ops twin is `model::attention`'s masked softmax (`kernels::plain_attention`);
//! `tests/kernels.rs` checks these kernels against it, values and gradients.
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
//! form of these loops is the next step and is not done (see the closing notes of issue 7).
//!
//! Masked scores use a large finite negative rather than −∞ because WGSL has no −∞ literal.

use cubecl::prelude::*;

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
