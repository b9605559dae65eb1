//! The CubeCL backends (CUDA, wgpu): launches of the kernels in `scan_kernel.rs`.
//!
//! Kernels compute in f32 whatever the model's dtype (bf16 under mixed precision): operands
//! are cast to contiguous f32 on the way in and results back on the way out, as `mamba_ssm`
//! keeps its scan state in f32.

use burn::tensor::ops::{FloatTensor, FloatTensorOps};
use burn::tensor::{DType, FloatDType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::{CubeCount, CubeDim};

use super::attention_kernel::{attention_dkv_kernel, attention_dq_kernel, attention_forward_kernel};
use super::scan_kernel::{scan_backward_kernel, scan_forward_kernel};
use super::{Backend, ScanOperands};

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

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> Backend for CubeBackend<R, F, I, BT> {
    const FUSED_SCAN: bool = true;

    fn selective_scan(s: ScanOperands<Self>, _chunk: usize) -> FloatTensor<Self> {
        forward::<R, F, I, BT>(s, false).0
    }

    fn selective_scan_saving(s: ScanOperands<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        forward::<R, F, I, BT>(s, true)
    }

    fn selective_scan_backward(
        s: ScanOperands<Self>,
        checkpoints: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ScanOperands<Self> {
        backward::<R, F, I, BT>(s, checkpoints, dy)
    }

    const FUSED_ATTENTION: bool = true;

    fn causal_attention(
        q: CubeTensor<R>,
        k: CubeTensor<R>,
        v: CubeTensor<R>,
        window: usize,
    ) -> CubeTensor<R> {
        attention_forward::<R, F, I, BT>(q, k, v, window).0
    }

    fn causal_attention_saving(
        q: CubeTensor<R>,
        k: CubeTensor<R>,
        v: CubeTensor<R>,
        window: usize,
    ) -> (CubeTensor<R>, CubeTensor<R>) {
        attention_forward::<R, F, I, BT>(q, k, v, window)
    }

    fn causal_attention_backward(
        q: CubeTensor<R>,
        k: CubeTensor<R>,
        v: CubeTensor<R>,
        out: CubeTensor<R>,
        lse: CubeTensor<R>,
        d_out: CubeTensor<R>,
        window: usize,
    ) -> [CubeTensor<R>; 3] {
        attention_backward::<R, F, I, BT>(q, k, v, out, lse, d_out, window)
    }
}

/// `(y, checkpoints)`; the checkpoints are a 1-element placeholder unless `save`.
fn forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
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

fn backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
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

fn f32_contiguous<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    t: CubeTensor<R>,
) -> CubeTensor<R> {
    into_contiguous(cast::<R, F, I, BT>(t, DType::F32))
}

fn cast<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    t: CubeTensor<R>,
    dtype: DType,
) -> CubeTensor<R> {
    if t.dtype() == dtype {
        return t;
    }
    let float = match dtype {
        DType::F64 => FloatDType::F64,
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        _ => FloatDType::F32,
    };
    CubeBackend::<R, F, I, BT>::float_cast(t, float)
}

/// An uninitialised f32 tensor on `like`'s device; every element is written by the kernel.
fn empty<R: CubeRuntime>(like: &CubeTensor<R>, shape: impl Into<Shape>) -> CubeTensor<R> {
    empty_device_dtype::<R>(like.client.clone(), like.device.clone(), shape.into(), DType::F32)
}

/// Rows per cube in the attention kernels (query rows in the forward and dQ, key rows in dK/dV).
const ATTENTION_ROWS: usize = 32;

/// Keys (or queries) per shared-memory tile: the largest power of two up to 32 whose two
/// `tile · hd` f32 tiles (plus dK/dV's two `tile` row vectors) fit the device's shared memory
/// (48 KiB on NVIDIA by default, 16 KiB under wgpu's default limits).
fn attention_tile<R: CubeRuntime>(like: &CubeTensor<R>, head_dim: usize) -> usize {
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
