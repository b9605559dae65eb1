//! The CPU backend (burn's Flex): `kernels::Backend` implemented with host loops where a fused
//! loop beats the chain of tensor ops (`crates/cpu-loops`, one module per operation); every
//! other operation is its plain-ops twin.
//!
//! Operands are copied to contiguous f32 host buffers on the way in and results are made into
//! tensors of the operands' dtype on the way out; the copies are O(b·t·d), the loops they feed
//! O(b·t·d·n).

use burn::backend::Flex;
use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};
use burn::tensor::{DType, Int, Shape, Tensor, TensorData, TensorMetadata, TensorPrimitive};

use super::scan_cpu::{self, Dims, Operands};
use super::{Backend, DeltaChunkOperands, ScanOperands, SsdOperands};
use super::{
    activation_cpu, attention_cpu, conv_cpu, cross_entropy_cpu, delta_chunks_cpu, matmul_cpu, norm_cpu,
    rope_cpu, ssd_scan_cpu, ut_transform_cpu,
};

impl Backend for Flex {
    const FUSED_SCAN: bool = true;

    fn selective_scan(s: ScanOperands<Self>, _chunk: usize) -> FloatTensor<Self> {
        let host = HostScan::new(s);
        let (y, _) = scan_cpu::forward(host.operands(), host.dims, false);
        host.output(y, [host.dims.b, host.dims.t, host.dims.d])
    }

    fn selective_scan_saving(s: ScanOperands<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let host = HostScan::new(s);
        let Dims { b, t, d, n } = host.dims;
        let (y, checkpoints) = scan_cpu::forward(host.operands(), host.dims, true);
        let nc = t.div_ceil(scan_cpu::checkpoint_chunk(t));
        // The checkpoints stay f32 whatever the model's dtype, as the state does in the loop.
        (host.output(y, [b, t, d]), f32_tensor(checkpoints, [b, nc, d, n]))
    }

    fn selective_scan_backward(
        s: ScanOperands<Self>,
        checkpoints: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ScanOperands<Self> {
        let host = HostScan::new(s);
        let Dims { b, t, d, n } = host.dims;
        let g = scan_cpu::backward(
            host.operands(),
            host.dims,
            &host_f32::<4>(checkpoints).0,
            &host_f32::<3>(dy).0,
        );
        ScanOperands {
            x: host.output(g.x, [b, t, d]),
            delta: host.output(g.delta, [b, t, d]),
            a: host.output(g.a, [d, n]),
            b: host.output(g.b, [b, t, n]),
            c: host.output(g.c, [b, t, n]),
        }
    }

    const FUSED_ATTENTION: bool = true;

    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        window: usize,
    ) -> FloatTensor<Self> {
        Self::causal_attention_saving(q, k, v, window).0
    }

    fn causal_attention_saving(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        window: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let ((q, shape, dtype), k, v) = (host_f32::<4>(q), host_f32::<4>(k).0, host_f32::<4>(v).0);
        let dims = attention_dims(shape, k.len(), window);
        let (out, lse) = attention_cpu::forward(&q, &k, &v, dims);
        // The output goes on to `swap_dims(1, 2)` and a merge of its heads; the log-sum-exps stay
        // f32 whatever the model's dtype, as in the GPU kernel.
        (heads_view(out, shape, dtype), f32_tensor(lse, [dims.b, dims.h, dims.t]))
    }

    fn causal_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        window: usize,
    ) -> [FloatTensor<Self>; 3] {
        // Each gradient is laid out as its input was, so that its way back through the input's
        // `swap_dims` costs nothing.
        let like = [&q, &k, &v].map(is_heads_view);
        let ((q, shape, dtype), (k, kv_shape, _)) = (host_f32::<4>(q), host_f32::<4>(k));
        let dims = attention_dims(shape, k.len(), window);
        let (dq, dk, dv) = attention_cpu::backward(
            &q,
            &k,
            &host_f32::<4>(v).0,
            &host_f32::<4>(out).0,
            &host_f32::<3>(lse).0,
            &host_f32::<4>(d_out).0,
            dims,
        );
        [
            output_like(dq, shape, dtype, like[0]),
            output_like(dk, kv_shape, dtype, like[1]),
            output_like(dv, kv_shape, dtype, like[2]),
        ]
    }

    fn own_matmul() -> bool {
        true
    }

    /// 2-D f32 products on `gemm` with rayon's threads (`crates/cpu-loops/src/matmul.rs` says
    /// why); any other product is burn-flex's.
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let plain_2d = |p: &FloatTensor<Flex>| {
            p.shape().num_dims() == 2
                && p.dtype() == DType::F32
                && p.layout().strides().iter().all(|&s| s >= 0)
        };
        if !(plain_2d(&lhs) && plain_2d(&rhs)) {
            return Flex::float_matmul(lhs, rhs);
        }
        let ([m, k], [_, n]) = (lhs.shape().dims(), rhs.shape().dims());
        f32_tensor(matmul_cpu::matmul(matrix_view(&lhs), matrix_view(&rhs), (m, n, k)), [m, n])
    }

    const FUSED_CROSS_ENTROPY: bool = true;

    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        Self::cross_entropy_saving(logits, targets).0
    }

    fn cross_entropy_saving(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (logits, [n, vocab], _) = host_f32::<2>(logits);
        let (nll, lse) = cross_entropy_cpu::forward(&logits, &host_targets(targets, vocab), vocab);
        // f32 whatever the logits' dtype, as the GPU kernel's.
        (f32_tensor(nll, [n]), f32_tensor(lse, [n]))
    }

    fn cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        d_nll: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (logits, shape @ [_, vocab], dtype) = host_f32::<2>(logits);
        let targets = host_targets(targets, vocab);
        let dx = cross_entropy_cpu::backward(
            &logits,
            &targets,
            &host_f32::<1>(lse).0,
            &host_f32::<1>(d_nll).0,
            vocab,
        );
        output(dx, shape, dtype)
    }

    fn contiguous(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if x.is_contiguous() || x.dtype() != DType::F32 {
            return x;
        }
        let values = gather_f32(&x);
        Flex::float_reshape(f32_tensor(values, [x.shape().num_elements()]), x.shape())
    }

    const FUSED_ROPE: bool = true;

    fn rope(x: FloatTensor<Self>, cos: FloatTensor<Self>, sin: FloatTensor<Self>) -> FloatTensor<Self> {
        rope_on_host(x, cos, sin, false)
    }

    fn rope_backward(
        dy: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        rope_on_host(dy, cos, sin, true)
    }

    const FUSED_SILU: bool = true;

    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, shape, dtype) = host_flat(x);
        Flex::float_reshape(output(activation_cpu::silu_forward(&x), [x.len()], dtype), shape)
    }

    fn silu_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, shape, dtype) = host_flat(x);
        let dx = activation_cpu::silu_backward(&x, &host_flat(dy).0);
        Flex::float_reshape(output(dx, [x.len()], dtype), shape)
    }

    const FUSED_SSD_SCAN: bool = true;

    fn ssd_scan(s: SsdOperands<Self>, _chunk: usize) -> FloatTensor<Self> {
        let host = HostSsd::new(s);
        let (y, _) = ssd_scan_cpu::forward(host.operands(), host.dims, false);
        host.output(y, host.x_shape())
    }

    fn ssd_scan_saving(s: SsdOperands<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let host = HostSsd::new(s);
        let ssd_scan_cpu::Dims { b, t, heads, p, n, .. } = host.dims;
        let (y, checkpoints) = ssd_scan_cpu::forward(host.operands(), host.dims, true);
        let nc = t.div_ceil(scan_cpu::checkpoint_chunk(t));
        // The checkpoints stay f32 whatever the model's dtype, as the state does in the loop.
        (host.output(y, host.x_shape()), f32_tensor(checkpoints, [b, nc, heads, p, n]))
    }

    fn ssd_scan_backward(
        s: SsdOperands<Self>,
        checkpoints: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> SsdOperands<Self> {
        let host = HostSsd::new(s);
        let ssd_scan_cpu::Dims { b, t, heads, groups, n, .. } = host.dims;
        let g = ssd_scan_cpu::backward(
            host.operands(),
            host.dims,
            &host_f32::<5>(checkpoints).0,
            &host_f32::<4>(dy).0,
        );
        SsdOperands {
            x: host.output(g.x, host.x_shape()),
            dt: host.output(g.delta, [b, t, heads]),
            a: host.output(g.a, [heads]),
            b: host.output(g.b, [b, t, groups, n]),
            c: host.output(g.c, [b, t, groups, n]),
        }
    }

    const FUSED_RMS_NORM: bool = true;

    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        Self::rms_norm_saving(x, weight, eps).0
    }

    fn rms_norm_saving(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (x, [b, t, d], dtype) = host_f32::<3>(x);
        let (y, rstd) = norm_cpu::rms_norm(&x, &host_f32::<1>(weight).0, eps as f32);
        (output(y, [b, t, d], dtype), f32_tensor(rstd, [b, t]))
    }

    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2] {
        rms_norm_backward_on_host(x, weight, rstd, dy, None)
    }

    fn add_rms_norm(
        residual: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> [FloatTensor<Self>; 2] {
        let [sum, y, _] = Self::add_rms_norm_saving(residual, delta, weight, eps);
        [sum, y]
    }

    fn add_rms_norm_saving(
        residual: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> [FloatTensor<Self>; 3] {
        let (mut sum, [b, t, d], dtype) = host_f32::<3>(residual);
        for (s, v) in sum.iter_mut().zip(host_f32::<3>(delta).0) {
            *s += v;
        }
        let (y, rstd) = norm_cpu::rms_norm(&sum, &host_f32::<1>(weight).0, eps as f32);
        [output(sum, [b, t, d], dtype), output(y, [b, t, d], dtype), f32_tensor(rstd, [b, t])]
    }

    fn rms_norm_backward_accumulate(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        d_x: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2] {
        rms_norm_backward_on_host(x, weight, rstd, dy, Some(d_x))
    }

    fn gated_rms_norm(
        y: FloatTensor<Self>,
        z: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        group: usize,
        eps: f64,
    ) -> FloatTensor<Self> {
        let [out, _] = Self::gated_rms_norm_saving(y, z, weight, group, eps);
        out
    }

    fn gated_rms_norm_saving(
        y: FloatTensor<Self>,
        z: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        group: usize,
        eps: f64,
    ) -> [FloatTensor<Self>; 2] {
        let (y, [b, t, di], dtype) = host_f32::<3>(y);
        let (out, rstd) =
            norm_cpu::gated_rms_norm(&y, &host_f32::<3>(z).0, &host_f32::<1>(weight).0, group, eps as f32);
        [output(out, [b, t, di], dtype), f32_tensor(rstd, [b, t, di / group])]
    }

    fn gated_rms_norm_backward(
        y: FloatTensor<Self>,
        z: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        group: usize,
    ) -> [FloatTensor<Self>; 3] {
        let (y, [b, t, di], dtype) = host_f32::<3>(y);
        let (weight, _, w_dtype) = host_f32::<1>(weight);
        let (dy, dz, dweight) = norm_cpu::gated_rms_norm_backward(
            &y,
            &host_f32::<3>(z).0,
            &weight,
            &host_f32::<3>(rstd).0,
            &host_f32::<3>(d_out).0,
            group,
        );
        [output(dy, [b, t, di], dtype), output(dz, [b, t, di], dtype), output(dweight, [di], w_dtype)]
    }

    const FUSED_CAUSAL_CONV: bool = true;

    fn causal_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let (x, [b, t, ch], dtype) = host_f32::<3>(x);
        let (weight, [_, k], _) = host_f32::<2>(weight);
        let d = conv_cpu::Dims { b, t, ch, k };
        output(conv_cpu::forward(&x, &weight, &host_f32::<1>(bias).0, d), [b, t, ch], dtype)
    }

    fn causal_conv_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let (x, [b, t, ch], dtype) = host_f32::<3>(x);
        let (weight, [_, k], w_dtype) = host_f32::<2>(weight);
        let d = conv_cpu::Dims { b, t, ch, k };
        let (dx, dweight, dbias) = conv_cpu::backward(&x, &weight, &host_f32::<3>(dy).0, d);
        [output(dx, [b, t, ch], dtype), output(dweight, [ch, k], w_dtype), output(dbias, [ch], w_dtype)]
    }

    const FUSED_UT_TRANSFORM: bool = true;

    fn ut_transform(
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        cum: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let [out, _] = Self::ut_transform_saving(k, v, beta, cum);
        out
    }

    fn ut_transform_saving(
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        cum: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2] {
        let host = HostUt::new(k, v, beta, cum);
        let d = host.dims;
        let (out, inverse) = ut_transform_cpu::forward(host.operands(), d);
        // The inverse stays f32 whatever the model's dtype, as it is computed.
        [output(out, [d.n, d.c, d.dx()], host.dtype), f32_tensor(inverse, [d.n, d.c, d.c])]
    }

    fn ut_transform_backward(
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        cum: FloatTensor<Self>,
        inverse: FloatTensor<Self>,
        out: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 4] {
        let host = HostUt::new(k, v, beta, cum);
        let d = host.dims;
        let (dk, dv, dbeta, dcum) = ut_transform_cpu::backward(
            host.operands(),
            d,
            &host_f32::<3>(inverse).0,
            &host_f32::<3>(out).0,
            &host_f32::<3>(d_out).0,
        );
        [
            output(dk, [d.n, d.c, d.dk], host.dtype),
            output(dv, [d.n, d.c, d.dv], host.dtype),
            output(dbeta, [d.n, d.c], host.dtype),
            output(dcum, [d.n, d.c], host.dtype),
        ]
    }

    const FUSED_DELTA_CHUNKS: bool = true;

    fn delta_chunks(x: DeltaChunkOperands<Self>) -> FloatTensor<Self> {
        let [out, _] = Self::delta_chunks_saving(x);
        out
    }

    fn delta_chunks_saving(x: DeltaChunkOperands<Self>) -> [FloatTensor<Self>; 2] {
        let host = HostDelta::new(x);
        let d = host.dims;
        let (out, states) = delta_chunks_cpu::forward(host.operands(), d);
        // The states stay f32 whatever the model's dtype, as they are computed.
        [host.output(out, [d.b, d.h, d.out_len()]), f32_tensor(states, [d.b, d.h, d.nc, d.dk, d.dv])]
    }

    fn delta_chunks_backward(
        x: DeltaChunkOperands<Self>,
        states: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
    ) -> DeltaChunkOperands<Self> {
        let host = HostDelta::new(x);
        let d = host.dims;
        let [du, dw, dq, dk, dattn, ddecay, ds0] =
            delta_chunks_cpu::backward(host.operands(), d, &host_f32::<5>(states).0, &host_f32::<3>(d_out).0);
        let (b, h, nc, c) = (d.b, d.h, d.nc, d.c);
        // Unit-major as computed, stored chunk-major as the operands are (one copy in runs: a
        // strided view would send every element-wise op after it down burn-flex's slow path).
        let chunks = |values: Vec<f32>, w: usize| {
            let t = Tensor::<Flex, 5>::from_primitive(TensorPrimitive::Float(
                host.output(values, [b, h, nc, c, w]),
            ));
            Self::contiguous(t.swap_dims(1, 2).into_primitive().tensor())
        };
        let decay =
            Tensor::<Flex, 3>::from_primitive(TensorPrimitive::Float(host.output(ddecay, [b, h, nc])));
        DeltaChunkOperands {
            u: chunks(du, d.dv),
            w: chunks(dw, d.dk),
            q: chunks(dq, d.dk),
            k: chunks(dk, d.dk),
            attn: chunks(dattn, c),
            decay: Self::contiguous(decay.swap_dims(1, 2).into_primitive().tensor()),
            s0: host.output(ds0, [b, h, d.dk, d.dv]),
        }
    }
}

/// `[dx, dweight]` of an RMSNorm, with `d_x` added into `dx` when given.
fn rms_norm_backward_on_host(
    x: FloatTensor<Flex>,
    weight: FloatTensor<Flex>,
    rstd: FloatTensor<Flex>,
    dy: FloatTensor<Flex>,
    d_x: Option<FloatTensor<Flex>>,
) -> [FloatTensor<Flex>; 2] {
    let (x, [b, t, d], dtype) = host_f32::<3>(x);
    let (weight, _, w_dtype) = host_f32::<1>(weight);
    let d_x = d_x.map(|g| host_f32::<3>(g).0);
    let (dx, dweight) = norm_cpu::rms_norm_backward(
        &x,
        &weight,
        &host_f32::<2>(rstd).0,
        &host_f32::<3>(dy).0,
        d_x.as_deref(),
    );
    [output(dx, [b, t, d], dtype), output(dweight, [d], w_dtype)]
}

/// The UT transform's operands as host f32 buffers, and the dtype its results are returned in.
struct HostUt {
    k: Vec<f32>,
    v: Vec<f32>,
    beta: Vec<f32>,
    cum: Vec<f32>,
    dims: ut_transform_cpu::Dims,
    dtype: DType,
}

impl HostUt {
    fn new(
        k: FloatTensor<Flex>,
        v: FloatTensor<Flex>,
        beta: FloatTensor<Flex>,
        cum: FloatTensor<Flex>,
    ) -> Self {
        let (k, [n, c, dk], dtype) = host_f32::<3>(k);
        let (v, [_, _, dv], _) = host_f32::<3>(v);
        Self {
            k,
            v,
            beta: host_f32::<2>(beta).0,
            cum: host_f32::<2>(cum).0,
            dims: ut_transform_cpu::Dims { n, c, dk, dv },
            dtype,
        }
    }

    fn operands(&self) -> ut_transform_cpu::Operands<'_> {
        ut_transform_cpu::Operands { k: &self.k, v: &self.v, beta: &self.beta, cum: &self.cum }
    }
}

/// The delta rule's chunk operands as host f32 buffers, and the dtype its results are returned
/// in.
struct HostDelta {
    u: Vec<f32>,
    w: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    attn: Vec<f32>,
    decay: Vec<f32>,
    s0: Vec<f32>,
    dims: delta_chunks_cpu::Dims,
    dtype: DType,
}

impl HostDelta {
    fn new(x: DeltaChunkOperands<Flex>) -> Self {
        let (u, [b, nc, h, c, dv], dtype) = host_f32::<5>(x.u);
        let (w, [_, _, _, _, dk], _) = host_f32::<5>(x.w);
        Self {
            u,
            w,
            q: host_f32::<5>(x.q).0,
            k: host_f32::<5>(x.k).0,
            attn: host_f32::<5>(x.attn).0,
            decay: host_f32::<3>(x.decay).0,
            s0: host_f32::<4>(x.s0).0,
            dims: delta_chunks_cpu::Dims { b, h, nc, c, dk, dv },
            dtype,
        }
    }

    fn operands(&self) -> delta_chunks_cpu::Operands<'_> {
        delta_chunks_cpu::Operands {
            u: &self.u,
            w: &self.w,
            q: &self.q,
            k: &self.k,
            attn: &self.attn,
            decay: &self.decay,
            s0: &self.s0,
        }
    }

    fn output<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> FloatTensor<Flex> {
        output(values, shape, self.dtype)
    }
}

/// The scan's operands as host f32 buffers, and the dtype its results are returned in.
struct HostScan {
    x: Vec<f32>,
    delta: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    dims: Dims,
    dtype: DType,
}

impl HostScan {
    fn new(s: ScanOperands<Flex>) -> Self {
        let (x, [b, t, d], dtype) = host_f32::<3>(s.x);
        let (a, [_, n], _) = host_f32::<2>(s.a);
        Self {
            x,
            delta: host_f32::<3>(s.delta).0,
            a,
            b: host_f32::<3>(s.b).0,
            c: host_f32::<3>(s.c).0,
            dims: Dims { b, t, d, n },
            dtype,
        }
    }

    fn operands(&self) -> Operands<'_> {
        Operands { x: &self.x, delta: &self.delta, a: &self.a, b: &self.b, c: &self.c }
    }

    fn output<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> FloatTensor<Flex> {
        output(values, shape, self.dtype)
    }
}

/// The SSD scan's operands on the host, contiguous f32.
struct HostSsd {
    x: Vec<f32>,
    dt: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    dims: ssd_scan_cpu::Dims,
    dtype: DType,
}

impl HostSsd {
    fn new(s: SsdOperands<Flex>) -> Self {
        let (x, [b, t, heads, p], dtype) = host_f32::<4>(s.x);
        let (bm, [_, _, groups, n], _) = host_f32::<4>(s.b);
        Self {
            x,
            dt: host_f32::<3>(s.dt).0,
            a: host_f32::<1>(s.a).0,
            b: bm,
            c: host_f32::<4>(s.c).0,
            dims: ssd_scan_cpu::Dims { b, t, heads, p, groups, n },
            dtype,
        }
    }

    fn operands(&self) -> ssd_scan_cpu::Operands<'_> {
        ssd_scan_cpu::Operands { x: &self.x, delta: &self.dt, a: &self.a, b: &self.b, c: &self.c }
    }

    fn x_shape(&self) -> [usize; 4] {
        let d = self.dims;
        [d.b, d.t, d.heads, d.p]
    }

    fn output<const D: usize>(&self, values: Vec<f32>, shape: [usize; D]) -> FloatTensor<Flex> {
        output(values, shape, self.dtype)
    }
}

/// A 2-D f32 tensor with non-negative strides as a `gemm` operand, read in place.
fn matrix_view(p: &FloatTensor<Flex>) -> matmul_cpu::Matrix<'_> {
    let layout = p.layout();
    let strides = layout.strides();
    matmul_cpu::Matrix {
        values: p.storage::<f32>(),
        offset: layout.start_offset(),
        row_stride: strides[0] as usize,
        col_stride: strides[1] as usize,
    }
}

/// The attention loop's sizes from `q`'s shape `[b, h, t, hd]` and `k`'s length.
fn attention_dims([b, h, t, hd]: [usize; 4], k_len: usize, window: usize) -> attention_cpu::Dims {
    attention_cpu::Dims { b, h, kv: k_len / (b * t * hd), t, hd, window }
}

/// [`Backend::rope`] (or its backward, the rotation by the opposite angles) on host copies.
fn rope_on_host(
    x: FloatTensor<Flex>,
    cos: FloatTensor<Flex>,
    sin: FloatTensor<Flex>,
    inverse: bool,
) -> FloatTensor<Flex> {
    // Laid out as `x` is (see `heads_view`).
    let like = is_heads_view(&x);
    let ((x, shape, dtype), (cos, [t, rotary], _)) = (host_f32::<4>(x), host_f32::<2>(cos));
    let dims = rope_cpu::Dims { t, hd: shape[3], rotary };
    output_like(rope_cpu::rotate(&x, &cos, &host_f32::<2>(sin).0, dims, inverse), shape, dtype, like)
}

/// Token ids as indices into a vocabulary of `vocab`.
///
/// # Panics
/// On an id outside the vocabulary (the data pipeline checks ids against the vocabulary before
/// training starts, so this is a bug, not bad input).
fn host_targets(targets: IntTensor<Flex>, vocab: usize) -> Vec<usize> {
    let ids = Tensor::<Flex, 1, Int>::from_primitive(targets).into_data().convert::<i64>();
    let ids = ids.into_vec::<i64>().expect("i64 after convert");
    ids.into_iter()
        .map(|id| {
            usize::try_from(id)
                .ok()
                .filter(|&id| id < vocab)
                .unwrap_or_else(|| panic!("token id {id} outside the vocabulary of {vocab}"))
        })
        .collect()
}

/// Host values as a tensor of `dtype`.
fn output<const D: usize>(values: Vec<f32>, shape: [usize; D], dtype: DType) -> FloatTensor<Flex> {
    let t = Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(f32_tensor(values, shape)));
    if dtype == DType::F32 { t } else { t.cast(dtype) }.into_primitive().tensor()
}

/// A tensor's values as contiguous f32, its shape and its dtype.
fn host_f32<const D: usize>(p: FloatTensor<Flex>) -> (Vec<f32>, [usize; D], DType) {
    let (values, shape, dtype) = host_flat(p);
    (values, shape.dims(), dtype)
}

/// A tensor's values of any rank as contiguous f32 in row-major order, its shape and its dtype.
fn host_flat(p: FloatTensor<Flex>) -> (Vec<f32>, Shape, DType) {
    let (shape, dtype) = (p.shape(), p.dtype());
    let values = if dtype == DType::F32 && !p.is_contiguous() {
        gather_f32(&p)
    } else {
        let numel = shape.num_elements();
        let flat =
            Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(Flex::float_reshape(p, [numel].into())));
        flat.into_data().convert::<f32>().into_vec::<f32>().expect("f32 after convert")
    };
    (values, shape, dtype)
}

/// A strided f32 tensor's values in row-major order, each run along the last axis copied whole
/// where that axis is contiguous: a permuted view such as attention's `[b, t, h, hd]` seen as
/// `[b, h, t, hd]` is then a copy of `hd`-long runs, which burn-flex's own layout copy walks
/// element by element (a tenth of a dense CPU training step before this).
fn gather_f32(p: &FloatTensor<Flex>) -> Vec<f32> {
    let layout = p.layout();
    let (shape, strides) = (layout.shape(), layout.strides());
    let rank = shape.num_dims();
    let src = p.storage::<f32>();
    let mut out = Vec::with_capacity(shape.num_elements());
    if shape.num_elements() == 0 {
        return out;
    }
    let (last, step) = (shape[rank - 1], strides[rank - 1]);
    let mut index = vec![0usize; rank - 1];
    loop {
        let start = layout.start_offset() as isize
            + index.iter().zip(strides).map(|(&i, &s)| i as isize * s).sum::<isize>();
        if step == 1 {
            out.extend_from_slice(&src[start as usize..start as usize + last]);
        } else {
            out.extend((0..last as isize).map(|j| src[(start + j * step) as usize]));
        }
        // The next index of the leading axes, last axis fastest.
        let mut axis = rank - 1;
        loop {
            if axis == 0 {
                return out;
            }
            axis -= 1;
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

/// Whether `p` is `[b, h, t, hd]` seen through axes 1 and 2 of a contiguous `[b, t, h, hd]`, as
/// attention's heads come out of their projections (`reshape([b, t, h, hd]).swap_dims(1, 2)`).
fn is_heads_view(p: &FloatTensor<Flex>) -> bool {
    let layout = p.layout();
    let (s, strides) = (layout.shape(), layout.strides());
    s.num_dims() == 4
        && layout.start_offset() == 0
        && strides == [(s[1] * s[2] * s[3]) as isize, s[3] as isize, (s[1] * s[3]) as isize, 1]
}

/// `[b, h, t, hd]` values as a tensor of that shape stored as `[b, t, h, hd]` (a view with axes
/// 1 and 2 swapped): the model's `swap_dims(1, 2)` back to `[b, t, h, hd]` and its merge of the
/// heads then cost nothing, where a contiguous `[b, h, t, hd]` would be copied element by
/// element.
fn heads_view(values: Vec<f32>, [b, h, t, hd]: [usize; 4], dtype: DType) -> FloatTensor<Flex> {
    let mut stored = vec![0f32; values.len()];
    for (unit, rows) in values.chunks(t * hd).enumerate() {
        let (bi, hi) = (unit / h, unit % h);
        for (ti, row) in rows.chunks(hd).enumerate() {
            let at = ((bi * t + ti) * h + hi) * hd;
            stored[at..at + hd].copy_from_slice(row);
        }
    }
    Flex::float_swap_dims(output(stored, [b, t, h, hd], dtype), 1, 2)
}

/// [`heads_view`] when `like` is one, a contiguous tensor otherwise.
fn output_like(values: Vec<f32>, shape: [usize; 4], dtype: DType, like: bool) -> FloatTensor<Flex> {
    if like { heads_view(values, shape, dtype) } else { output(values, shape, dtype) }
}

fn f32_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FloatTensor<Flex> {
    let t: Tensor<Flex, D> =
        Tensor::from_data(TensorData::new(values, shape), (&Default::default(), DType::F32));
    t.into_primitive().tensor()
}
