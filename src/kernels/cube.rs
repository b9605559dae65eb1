//! The CubeCL backends (CUDA, wgpu): launches of the kernels in `scan_kernel.rs`,
//! `attention_kernel.rs` and `cross_entropy_kernel.rs`.
//!
//! The scan and attention kernels compute in f32 whatever the model's dtype (bf16 under mixed
//! precision): operands are cast to contiguous f32 on the way in and results back on the way
//! out, as `mamba_ssm` keeps its scan state in f32. The cross-entropy kernels read the logits
//! in their own dtype (an fp32 copy is what they exist to avoid) and accumulate in f32.

use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensorOps};
use burn::tensor::{DType, FloatDType, IntDType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::{CubeCount, CubeDim};

use super::attention_kernel::{attention_dkv_kernel, attention_dq_kernel, attention_forward_kernel};
use super::conv_kernel::{causal_conv_backward_kernel, causal_conv_forward_kernel};
use super::cross_entropy_kernel::{cross_entropy_backward_kernel, cross_entropy_forward_kernel};
use super::moe_route_kernel::{moe_positions_kernel, moe_top_k_kernel};
use super::rms_norm_kernel::{rms_norm_backward_kernel, rms_norm_forward_kernel};
use super::scan_kernel::{scan_backward_kernel, scan_forward_kernel};
use super::state_passing_kernel::{state_passing_backward_kernel, state_passing_forward_kernel};
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

    const FUSED_CROSS_ENTROPY: bool = true;

    fn cross_entropy(logits: CubeTensor<R>, targets: CubeTensor<R>) -> CubeTensor<R> {
        cross_entropy_forward::<R, F, I, BT>(logits, targets).0
    }

    fn cross_entropy_saving(logits: CubeTensor<R>, targets: CubeTensor<R>) -> (CubeTensor<R>, CubeTensor<R>) {
        cross_entropy_forward::<R, F, I, BT>(logits, targets)
    }

    fn cross_entropy_backward(
        logits: CubeTensor<R>,
        targets: CubeTensor<R>,
        lse: CubeTensor<R>,
        d_nll: CubeTensor<R>,
    ) -> CubeTensor<R> {
        cross_entropy_backward::<R, F, I, BT>(logits, targets, lse, d_nll)
    }

    const FUSED_RMS_NORM: bool = true;

    fn rms_norm(x: CubeTensor<R>, weight: CubeTensor<R>, eps: f64) -> CubeTensor<R> {
        rms_norm_forward::<R, F, I, BT>(x, weight, eps).0
    }

    fn rms_norm_saving(x: CubeTensor<R>, weight: CubeTensor<R>, eps: f64) -> (CubeTensor<R>, CubeTensor<R>) {
        rms_norm_forward::<R, F, I, BT>(x, weight, eps)
    }

    fn rms_norm_backward(
        x: CubeTensor<R>,
        weight: CubeTensor<R>,
        rstd: CubeTensor<R>,
        dy: CubeTensor<R>,
    ) -> [CubeTensor<R>; 2] {
        rms_norm_backward::<R, F, I, BT>(x, weight, rstd, dy)
    }

    const FUSED_CAUSAL_CONV: bool = true;

    fn causal_conv(x: CubeTensor<R>, weight: CubeTensor<R>, bias: CubeTensor<R>) -> CubeTensor<R> {
        causal_conv_forward::<R, F, I, BT>(x, weight, bias)
    }

    fn causal_conv_backward(
        x: CubeTensor<R>,
        weight: CubeTensor<R>,
        dy: CubeTensor<R>,
    ) -> [CubeTensor<R>; 3] {
        causal_conv_backward::<R, F, I, BT>(x, weight, dy)
    }

    const FUSED_STATE_PASSING: bool = true;

    fn ssd_state_passing(states: CubeTensor<R>, decay: CubeTensor<R>, h0: CubeTensor<R>) -> CubeTensor<R> {
        state_passing_forward::<R, F, I, BT>(states, decay, h0)
    }

    fn ssd_state_passing_backward(
        decay: CubeTensor<R>,
        entering: CubeTensor<R>,
        d_entering: CubeTensor<R>,
    ) -> [CubeTensor<R>; 3] {
        state_passing_backward::<R, F, I, BT>(decay, entering, d_entering)
    }

    const FUSED_MOE_ROUTE: bool = true;

    fn moe_route(logits: CubeTensor<R>, top_k: usize) -> [CubeTensor<R>; 3] {
        moe_route::<R, F, I, BT>(logits, top_k)
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

/// Units per cube of the cross-entropy kernels: a power of two, for the forward's tree
/// reduction in shared memory (2 KiB).
const CROSS_ENTROPY_UNITS: usize = 256;

/// One cube per row, at most 65 535 of them (wgpu's grid limit); the kernels loop over the
/// rows beyond.
fn cross_entropy_grid(rows: usize) -> (CubeCount, CubeDim) {
    (CubeCount::Static(rows.clamp(1, 65_535) as u32, 1, 1), CubeDim::new_1d(CROSS_ENTROPY_UNITS as u32))
}

/// `(nll, lse)`, both f32 `[n]`, of logits `[n, vocab]` read in their own dtype.
fn cross_entropy_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    logits: CubeTensor<R>,
    targets: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let logits = into_contiguous(logits);
    let targets = u32_contiguous::<R, F, I, BT>(targets);
    let n = logits.shape().dims::<2>()[0];
    let (nll, lse) = (empty::<R>(&logits, [n]), empty::<R>(&logits, [n]));
    let (count, dim) = cross_entropy_grid(n);
    let dtype = logits.dtype();
    cross_entropy_forward_kernel::launch::<R>(
        &logits.client,
        count,
        dim,
        logits.clone().into_tensor_arg(),
        targets.into_tensor_arg(),
        nll.clone().into_tensor_arg(),
        lse.clone().into_tensor_arg(),
        CROSS_ENTROPY_UNITS,
        dtype.into(),
    );
    (nll, lse)
}

/// The logits' gradient, in their dtype, from the forward's row log-sum-exps.
fn cross_entropy_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    logits: CubeTensor<R>,
    targets: CubeTensor<R>,
    lse: CubeTensor<R>,
    d_nll: CubeTensor<R>,
) -> CubeTensor<R> {
    let logits = into_contiguous(logits);
    let targets = u32_contiguous::<R, F, I, BT>(targets);
    let [lse, d_nll] = [lse, d_nll].map(f32_contiguous::<R, F, I, BT>);
    let dtype = logits.dtype();
    let d_logits =
        empty_device_dtype::<R>(logits.client.clone(), logits.device.clone(), logits.shape(), dtype);
    let (count, dim) = cross_entropy_grid(logits.shape().dims::<2>()[0]);
    cross_entropy_backward_kernel::launch::<R>(
        &logits.client,
        count,
        dim,
        logits.clone().into_tensor_arg(),
        targets.into_tensor_arg(),
        lse.into_tensor_arg(),
        d_nll.into_tensor_arg(),
        d_logits.clone().into_tensor_arg(),
        dtype.into(),
    );
    d_logits
}

/// Token ids as contiguous u32, the kernels' index type.
fn u32_contiguous<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    ids: CubeTensor<R>,
) -> CubeTensor<R> {
    let ids = if ids.dtype() == DType::U32 {
        ids
    } else {
        CubeBackend::<R, F, I, BT>::int_cast(ids, IntDType::U32)
    };
    into_contiguous(ids)
}

/// Units per cube of the RMSNorm kernels: a power of two, for the tree sum in shared memory.
const RMS_NORM_UNITS: usize = 128;

/// Cubes of the RMSNorm backward: each writes one partial row of the weight gradient, so
/// fewer cubes than rows (each loops over several) keeps that sum small.
const RMS_NORM_BACKWARD_CUBES: usize = 1024;

/// `(y, rstd)`: `y` in `x`'s shape and dtype, `rstd` f32 `[b, t]`.
fn rms_norm_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    eps: f64,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let (shape, dtype) = (x.shape(), x.dtype());
    let [x, weight] = [x, weight].map(f32_contiguous::<R, F, I, BT>);
    let [b, t, d] = shape.dims::<3>();
    let x = CubeBackend::<R, F, I, BT>::float_reshape(x, Shape::new([b * t, d]));
    let (y, rstd) = (empty::<R>(&x, [b * t, d]), empty::<R>(&x, [b, t]));
    rms_norm_forward_kernel::launch::<R>(
        &x.client,
        CubeCount::Static((b * t).clamp(1, 65_535) as u32, 1, 1),
        CubeDim::new_1d(RMS_NORM_UNITS as u32),
        x.clone().into_tensor_arg(),
        weight.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        rstd.clone().into_tensor_arg(),
        eps as f32,
        RMS_NORM_UNITS,
        DType::F32.into(),
    );
    let y = CubeBackend::<R, F, I, BT>::float_reshape(y, shape);
    (cast::<R, F, I, BT>(y, dtype), rstd)
}

/// `[dx, dweight]` from the forward's row `rstd`.
fn rms_norm_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    rstd: CubeTensor<R>,
    dy: CubeTensor<R>,
) -> [CubeTensor<R>; 2] {
    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let (shape, dtypes) = (x.shape(), [x.dtype(), weight.dtype()]);
    let [x, weight, rstd, dy] = [x, weight, rstd, dy].map(f32_contiguous::<R, F, I, BT>);
    let [b, t, d] = shape.dims::<3>();
    let rows = Shape::new([b * t, d]);
    let x = Cube::<R, F, I, BT>::float_reshape(x, rows.clone());
    let dy = Cube::<R, F, I, BT>::float_reshape(dy, rows);
    let cubes = (b * t).clamp(1, RMS_NORM_BACKWARD_CUBES);
    let (dx, dw_part) = (empty::<R>(&x, [b * t, d]), empty::<R>(&x, [cubes, d]));
    rms_norm_backward_kernel::launch::<R>(
        &x.client,
        CubeCount::Static(cubes as u32, 1, 1),
        CubeDim::new_1d(RMS_NORM_UNITS as u32),
        x.clone().into_tensor_arg(),
        weight.into_tensor_arg(),
        rstd.into_tensor_arg(),
        dy.into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        dw_part.clone().into_tensor_arg(),
        RMS_NORM_UNITS,
        d.div_ceil(RMS_NORM_UNITS),
        DType::F32.into(),
    );
    let dx = Cube::<R, F, I, BT>::float_reshape(dx, shape);
    let dw =
        Cube::<R, F, I, BT>::float_reshape(Cube::<R, F, I, BT>::float_sum_dim(dw_part, 0), Shape::new([d]));
    let [dx_dtype, dw_dtype] = dtypes;
    [cast::<R, F, I, BT>(dx, dx_dtype), cast::<R, F, I, BT>(dw, dw_dtype)]
}

/// Channels per cube of the convolution kernels (consecutive channels: coalesced access).
const CONV_CHANNELS: usize = 64;

/// Time steps per unit of the convolution kernels: enough to amortise loading the taps, few
/// enough that `[b, t/steps, ch]` units fill the GPU at short `t`.
const CONV_STEPS: usize = 32;

fn conv_grid(b: usize, t: usize, ch: usize) -> (CubeCount, CubeDim) {
    let count = CubeCount::Static(ch.div_ceil(CONV_CHANNELS) as u32, t.div_ceil(CONV_STEPS) as u32, b as u32);
    (count, CubeDim::new_1d(CONV_CHANNELS as u32))
}

fn causal_conv_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    bias: CubeTensor<R>,
) -> CubeTensor<R> {
    let dtype = x.dtype();
    let [x, weight, bias] = [x, weight, bias].map(f32_contiguous::<R, F, I, BT>);
    let [b, t, ch] = x.shape().dims::<3>();
    let taps = weight.shape().dims::<2>()[1];
    let y = empty::<R>(&x, [b, t, ch]);
    let (count, dim) = conv_grid(b, t, ch);
    causal_conv_forward_kernel::launch::<R>(
        &x.client,
        count,
        dim,
        x.clone().into_tensor_arg(),
        weight.into_tensor_arg(),
        bias.into_tensor_arg(),
        y.clone().into_tensor_arg(),
        taps,
        CONV_STEPS,
        DType::F32.into(),
    );
    cast::<R, F, I, BT>(y, dtype)
}

/// `[dx, dweight, dbias]`.
fn causal_conv_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    dy: CubeTensor<R>,
) -> [CubeTensor<R>; 3] {
    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let (x_dtype, w_dtype) = (x.dtype(), weight.dtype());
    let [x, weight, dy] = [x, weight, dy].map(f32_contiguous::<R, F, I, BT>);
    let [b, t, ch] = x.shape().dims::<3>();
    let taps = weight.shape().dims::<2>()[1];
    let blocks = t.div_ceil(CONV_STEPS);
    let (dx, dw_part) = (empty::<R>(&x, [b, t, ch]), empty::<R>(&x, [b * blocks, ch * taps]));
    let (count, dim) = conv_grid(b, t, ch);
    causal_conv_backward_kernel::launch::<R>(
        &x.client,
        count,
        dim,
        x.clone().into_tensor_arg(),
        weight.into_tensor_arg(),
        dy.clone().into_tensor_arg(),
        dx.clone().into_tensor_arg(),
        dw_part.clone().into_tensor_arg(),
        taps,
        CONV_STEPS,
        DType::F32.into(),
    );
    let dw = Cube::<R, F, I, BT>::float_reshape(
        Cube::<R, F, I, BT>::float_sum_dim(dw_part, 0),
        Shape::new([ch, taps]),
    );
    let rows = Cube::<R, F, I, BT>::float_reshape(dy, Shape::new([b * t, ch]));
    let db =
        Cube::<R, F, I, BT>::float_reshape(Cube::<R, F, I, BT>::float_sum_dim(rows, 0), Shape::new([ch]));
    [cast::<R, F, I, BT>(dx, x_dtype), cast::<R, F, I, BT>(dw, w_dtype), cast::<R, F, I, BT>(db, w_dtype)]
}

/// Units per cube of the state-passing kernels: a power of two, for the backward's sum.
const STATE_PASSING_UNITS: usize = 128;

/// `[b, nc, h, p, n]` seen as `[b, nc, h, p·n]` and the grid over it.
fn state_passing_grid(shape: &Shape) -> (usize, (CubeCount, CubeDim)) {
    let [b, _, h, p, n] = shape.dims::<5>();
    let blocks = (p * n).div_ceil(STATE_PASSING_UNITS);
    (
        blocks,
        (CubeCount::Static(blocks as u32, (b * h) as u32, 1), CubeDim::new_1d(STATE_PASSING_UNITS as u32)),
    )
}

fn state_passing_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    states: CubeTensor<R>,
    decay: CubeTensor<R>,
    h0: CubeTensor<R>,
) -> CubeTensor<R> {
    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let (shape, dtype) = (states.shape(), states.dtype());
    let [b, nc, h, p, n] = shape.dims::<5>();
    let [states, decay, h0] = [states, decay, h0].map(f32_contiguous::<R, F, I, BT>);
    let states = Cube::<R, F, I, BT>::float_reshape(states, Shape::new([b, nc, h, p * n]));
    let h0 = Cube::<R, F, I, BT>::float_reshape(h0, Shape::new([b, h, p * n]));
    let entering = empty::<R>(&states, [b, nc, h, p * n]);
    let (_, (count, dim)) = state_passing_grid(&shape);
    state_passing_forward_kernel::launch::<R>(
        &states.client,
        count,
        dim,
        states.clone().into_tensor_arg(),
        decay.into_tensor_arg(),
        h0.into_tensor_arg(),
        entering.clone().into_tensor_arg(),
        DType::F32.into(),
    );
    cast::<R, F, I, BT>(Cube::<R, F, I, BT>::float_reshape(entering, shape), dtype)
}

/// `[d_states, d_decay, d_h0]` from the forward's output.
fn state_passing_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    decay: CubeTensor<R>,
    entering: CubeTensor<R>,
    d_entering: CubeTensor<R>,
) -> [CubeTensor<R>; 3] {
    type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;
    let (shape, dtypes) = (entering.shape(), [entering.dtype(), decay.dtype()]);
    let [b, nc, h, p, n] = shape.dims::<5>();
    let flat = Shape::new([b, nc, h, p * n]);
    let [decay, entering, d_entering] = [decay, entering, d_entering].map(f32_contiguous::<R, F, I, BT>);
    let entering = Cube::<R, F, I, BT>::float_reshape(entering, flat.clone());
    let d_entering = Cube::<R, F, I, BT>::float_reshape(d_entering, flat);
    let (blocks, (count, dim)) = state_passing_grid(&shape);
    let d_states = empty::<R>(&entering, [b, nc, h, p * n]);
    let d_decay_part = empty::<R>(&entering, [b, nc, h, blocks]);
    let d_h0 = empty::<R>(&entering, [b, h, p * n]);
    state_passing_backward_kernel::launch::<R>(
        &entering.client,
        count,
        dim,
        decay.into_tensor_arg(),
        entering.clone().into_tensor_arg(),
        d_entering.into_tensor_arg(),
        d_states.clone().into_tensor_arg(),
        d_decay_part.clone().into_tensor_arg(),
        d_h0.clone().into_tensor_arg(),
        STATE_PASSING_UNITS,
        DType::F32.into(),
    );
    let d_decay = Cube::<R, F, I, BT>::float_reshape(
        Cube::<R, F, I, BT>::float_sum_dim(d_decay_part, 3),
        Shape::new([b, nc, h]),
    );
    let d_states = Cube::<R, F, I, BT>::float_reshape(d_states, shape);
    let d_h0 = Cube::<R, F, I, BT>::float_reshape(d_h0, Shape::new([b, h, p, n]));
    let [states_dtype, decay_dtype] = dtypes;
    [
        cast::<R, F, I, BT>(d_states, states_dtype),
        cast::<R, F, I, BT>(d_decay, decay_dtype),
        cast::<R, F, I, BT>(d_h0, states_dtype),
    ]
}

/// Units per cube of the MoE routing kernels (a power of two: the positions kernel's scan).
const MOE_ROUTE_UNITS: usize = 256;

/// `[choices [n, k], positions [n · k], counts [E]]` in the backend's int dtype.
fn moe_route<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    logits: CubeTensor<R>,
    top_k: usize,
) -> [CubeTensor<R>; 3] {
    let logits = f32_contiguous::<R, F, I, BT>(logits);
    let [n, experts] = logits.shape().dims::<2>();
    let u32_empty = |shape: Shape| {
        empty_device_dtype::<R>(logits.client.clone(), logits.device.clone(), shape, DType::U32)
    };
    let choices = u32_empty(Shape::new([n, top_k]));
    let positions = u32_empty(Shape::new([n * top_k]));
    let counts = u32_empty(Shape::new([experts]));
    moe_top_k_kernel::launch::<R>(
        &logits.client,
        CubeCount::Static(n.div_ceil(MOE_ROUTE_UNITS).clamp(1, 65_535) as u32, 1, 1),
        CubeDim::new_1d(MOE_ROUTE_UNITS as u32),
        logits.clone().into_tensor_arg(),
        choices.clone().into_tensor_arg(),
    );
    moe_positions_kernel::launch::<R>(
        &logits.client,
        CubeCount::Static(experts.clamp(1, 65_535) as u32, 1, 1),
        CubeDim::new_1d(MOE_ROUTE_UNITS as u32),
        choices.clone().into_tensor_arg(),
        positions.clone().into_tensor_arg(),
        counts.clone().into_tensor_arg(),
        MOE_ROUTE_UNITS,
    );
    let int = <I as burn::tensor::Element>::dtype().into();
    [choices, positions, counts].map(|t| CubeBackend::<R, F, I, BT>::int_cast(t, int))
}
