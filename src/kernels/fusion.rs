//! burn's fusion backend (`Fusion<B>`, what `Cuda` and `Wgpu` are with the `fusion` feature):
//! each fused operation is registered in the fusion stream as one custom operation, which the
//! stream executes by calling the same operation on `B`. Fusion optimises the element-wise
//! work around it and leaves the kernel alone.

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, Shape, calculate_matmul_output};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

use super::{
    Backend, ScanOperands, host_moe_route, plain_add_rms_norm, plain_causal_attention, plain_causal_conv,
    plain_cross_entropy, plain_gated_rms_norm, plain_rms_norm, plain_selective_scan, plain_state_passing,
    plain_ut_transform,
};

impl<B: FusionBackend + Backend> Backend for Fusion<B> {
    const FUSED_SCAN: bool = B::FUSED_SCAN;

    fn selective_scan(s: ScanOperands<Self>, chunk: usize) -> FloatTensor<Self> {
        if !B::FUSED_SCAN {
            return plain_selective_scan::<Self>(s, chunk);
        }
        let y = (s.x.shape.clone(), s.x.dtype);
        let [y] = custom::<B, 5, 1>(
            "archlab.selective_scan",
            operands(s),
            [y],
            chunk,
            |[x, delta, a, b, c], chunk| [B::selective_scan(ScanOperands { x, delta, a, b, c }, chunk)],
        );
        y
    }

    fn selective_scan_saving(s: ScanOperands<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        // Outputs are declared before the kernel runs: the checkpoints' shape follows the
        // kernel's checkpoint interval.
        let [bsz, t, d] = s.x.shape.dims::<3>();
        let n = s.a.shape.dims::<2>()[1];
        let checkpoints = (Shape::new([bsz, t.div_ceil(checkpoint_chunk(n)), d, n]), DType::F32);
        let y = (s.x.shape.clone(), s.x.dtype);
        let [y, checkpoints] = custom::<B, 5, 2>(
            "archlab.selective_scan_saving",
            operands(s),
            [y, checkpoints],
            0,
            |[x, delta, a, b, c], _| {
                let (y, checkpoints) = B::selective_scan_saving(ScanOperands { x, delta, a, b, c });
                [y, checkpoints]
            },
        );
        (y, checkpoints)
    }

    fn selective_scan_backward(
        s: ScanOperands<Self>,
        checkpoints: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ScanOperands<Self> {
        let grads = [&s.x, &s.delta, &s.a, &s.b, &s.c].map(|t| (t.shape.clone(), t.dtype));
        let [x, delta, a, b, c] = operands(s);
        let [dx, ddelta, da, db, dc] = custom::<B, 7, 5>(
            "archlab.selective_scan_backward",
            [x, delta, a, b, c, checkpoints, dy],
            grads,
            0,
            |[x, delta, a, b, c, checkpoints, dy], _| {
                let g = B::selective_scan_backward(ScanOperands { x, delta, a, b, c }, checkpoints, dy);
                [g.x, g.delta, g.a, g.b, g.c]
            },
        );
        ScanOperands { x: dx, delta: ddelta, a: da, b: db, c: dc }
    }

    const FUSED_ATTENTION: bool = B::FUSED_ATTENTION;

    fn causal_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        window: usize,
    ) -> FloatTensor<Self> {
        if !B::FUSED_ATTENTION {
            return plain_causal_attention::<Self>(q, k, v, window);
        }
        let out = (q.shape.clone(), q.dtype);
        let [out] = custom::<B, 3, 1>("archlab.attention", [q, k, v], [out], window, |[q, k, v], window| {
            [B::causal_attention(q, k, v, window)]
        });
        out
    }

    fn causal_attention_saving(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        window: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [b, h, t, _] = q.shape.dims::<4>();
        let outputs = [(q.shape.clone(), q.dtype), (Shape::new([b, h, t]), DType::F32)];
        let [out, lse] =
            custom::<B, 3, 2>("archlab.attention_saving", [q, k, v], outputs, window, |[q, k, v], window| {
                let (out, lse) = B::causal_attention_saving(q, k, v, window);
                [out, lse]
            });
        (out, lse)
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
        let grads = [&q, &k, &v].map(|t| (t.shape.clone(), t.dtype));
        custom::<B, 6, 3>(
            "archlab.attention_backward",
            [q, k, v, out, lse, d_out],
            grads,
            window,
            |[q, k, v, out, lse, d_out], window| {
                B::causal_attention_backward(q, k, v, out, lse, d_out, window)
            },
        )
    }

    const FUSED_CROSS_ENTROPY: bool = B::FUSED_CROSS_ENTROPY;

    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        if !B::FUSED_CROSS_ENTROPY {
            return plain_cross_entropy::<Self>(logits, targets);
        }
        let nll = (targets.shape.clone(), DType::F32);
        let [nll] = register::<B, 1>("archlab.cross_entropy", vec![logits, targets], [nll], |ir, handles| {
            let logits = handles.get_float_tensor::<B>(&ir[0]);
            [B::cross_entropy(logits, handles.get_int_tensor::<B>(&ir[1]))]
        });
        nll
    }

    fn cross_entropy_saving(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let rows = (targets.shape.clone(), DType::F32);
        let outputs = [rows.clone(), rows];
        let [nll, lse] = register::<B, 2>(
            "archlab.cross_entropy_saving",
            vec![logits, targets],
            outputs,
            |ir, handles| {
                let logits = handles.get_float_tensor::<B>(&ir[0]);
                let (nll, lse) = B::cross_entropy_saving(logits, handles.get_int_tensor::<B>(&ir[1]));
                [nll, lse]
            },
        );
        (nll, lse)
    }

    fn cross_entropy_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        d_nll: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let grad = (logits.shape.clone(), logits.dtype);
        let inputs = vec![logits, targets, lse, d_nll];
        let [d_logits] = register::<B, 1>("archlab.cross_entropy_backward", inputs, [grad], |ir, handles| {
            let [logits, lse, d_nll] = [&ir[0], &ir[2], &ir[3]].map(|t| handles.get_float_tensor::<B>(t));
            [B::cross_entropy_backward(logits, handles.get_int_tensor::<B>(&ir[1]), lse, d_nll)]
        });
        d_logits
    }

    const FUSED_RMS_NORM: bool = B::FUSED_RMS_NORM;

    fn rms_norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, eps: f64) -> FloatTensor<Self> {
        if !B::FUSED_RMS_NORM {
            return plain_rms_norm::<Self>(x, weight, eps);
        }
        let y = (x.shape.clone(), x.dtype);
        let [y] = register::<B, 1>("archlab.rms_norm", vec![x, weight], [y], move |ir, handles| {
            let [x, weight] = [&ir[0], &ir[1]].map(|t| handles.get_float_tensor::<B>(t));
            [B::rms_norm(x, weight, eps)]
        });
        y
    }

    fn rms_norm_saving(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let [b, t, _] = x.shape.dims::<3>();
        let outputs = [(x.shape.clone(), x.dtype), (Shape::new([b, t]), DType::F32)];
        let [y, rstd] =
            register::<B, 2>("archlab.rms_norm_saving", vec![x, weight], outputs, move |ir, handles| {
                let [x, weight] = [&ir[0], &ir[1]].map(|t| handles.get_float_tensor::<B>(t));
                let (y, rstd) = B::rms_norm_saving(x, weight, eps);
                [y, rstd]
            });
        (y, rstd)
    }

    fn rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2] {
        let grads = [&x, &weight].map(|t| (t.shape.clone(), t.dtype));
        custom::<B, 4, 2>(
            "archlab.rms_norm_backward",
            [x, weight, rstd, dy],
            grads,
            0,
            |[x, weight, rstd, dy], _| B::rms_norm_backward(x, weight, rstd, dy),
        )
    }

    fn add_rms_norm(
        residual: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> [FloatTensor<Self>; 2] {
        if !B::FUSED_RMS_NORM {
            return plain_add_rms_norm::<Self>(residual, delta, weight, eps);
        }
        let out = (residual.shape.clone(), residual.dtype);
        let inputs = vec![residual, delta, weight];
        register::<B, 2>("archlab.add_rms_norm", inputs, [out.clone(), out], move |ir, handles| {
            let [residual, delta, weight] =
                [&ir[0], &ir[1], &ir[2]].map(|t| handles.get_float_tensor::<B>(t));
            B::add_rms_norm(residual, delta, weight, eps)
        })
    }

    fn add_rms_norm_saving(
        residual: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> [FloatTensor<Self>; 3] {
        let [b, t, _] = residual.shape.dims::<3>();
        let out = (residual.shape.clone(), residual.dtype);
        let outputs = [out.clone(), out, (Shape::new([b, t]), DType::F32)];
        let inputs = vec![residual, delta, weight];
        register::<B, 3>("archlab.add_rms_norm_saving", inputs, outputs, move |ir, handles| {
            let [residual, delta, weight] =
                [&ir[0], &ir[1], &ir[2]].map(|t| handles.get_float_tensor::<B>(t));
            B::add_rms_norm_saving(residual, delta, weight, eps)
        })
    }

    fn rms_norm_backward_accumulate(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        d_x: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2] {
        let grads = [&x, &weight].map(|t| (t.shape.clone(), t.dtype));
        custom::<B, 5, 2>(
            "archlab.rms_norm_backward_accumulate",
            [x, weight, rstd, dy, d_x],
            grads,
            0,
            |[x, weight, rstd, dy, d_x], _| B::rms_norm_backward_accumulate(x, weight, rstd, dy, d_x),
        )
    }

    fn gated_rms_norm(
        y: FloatTensor<Self>,
        z: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        group: usize,
        eps: f64,
    ) -> FloatTensor<Self> {
        if !B::FUSED_RMS_NORM {
            return plain_gated_rms_norm::<Self>(y, z, weight, group, eps);
        }
        let out = (y.shape.clone(), y.dtype);
        let [out] =
            register::<B, 1>("archlab.gated_rms_norm", vec![y, z, weight], [out], move |ir, handles| {
                let [y, z, weight] = [&ir[0], &ir[1], &ir[2]].map(|t| handles.get_float_tensor::<B>(t));
                [B::gated_rms_norm(y, z, weight, group, eps)]
            });
        out
    }

    fn gated_rms_norm_saving(
        y: FloatTensor<Self>,
        z: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        group: usize,
        eps: f64,
    ) -> [FloatTensor<Self>; 2] {
        let [b, t, di] = y.shape.dims::<3>();
        let outputs = [(y.shape.clone(), y.dtype), (Shape::new([b, t, di / group]), DType::F32)];
        register::<B, 2>("archlab.gated_rms_norm_saving", vec![y, z, weight], outputs, move |ir, handles| {
            let [y, z, weight] = [&ir[0], &ir[1], &ir[2]].map(|t| handles.get_float_tensor::<B>(t));
            B::gated_rms_norm_saving(y, z, weight, group, eps)
        })
    }

    fn gated_rms_norm_backward(
        y: FloatTensor<Self>,
        z: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        group: usize,
    ) -> [FloatTensor<Self>; 3] {
        let grads = [&y, &z, &weight].map(|t| (t.shape.clone(), t.dtype));
        custom::<B, 5, 3>(
            "archlab.gated_rms_norm_backward",
            [y, z, weight, rstd, d_out],
            grads,
            group,
            |[y, z, weight, rstd, d_out], group| B::gated_rms_norm_backward(y, z, weight, rstd, d_out, group),
        )
    }

    const FUSED_CAUSAL_CONV: bool = B::FUSED_CAUSAL_CONV;

    fn causal_conv(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !B::FUSED_CAUSAL_CONV {
            return plain_causal_conv::<Self>(x, weight, bias);
        }
        let y = (x.shape.clone(), x.dtype);
        let [y] =
            custom::<B, 3, 1>("archlab.causal_conv", [x, weight, bias], [y], 0, |[x, weight, bias], _| {
                [B::causal_conv(x, weight, bias)]
            });
        y
    }

    fn causal_conv_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let [ch, _] = weight.shape.dims::<2>();
        let grads = [
            (x.shape.clone(), x.dtype),
            (weight.shape.clone(), weight.dtype),
            (Shape::new([ch]), weight.dtype),
        ];
        custom::<B, 3, 3>("archlab.causal_conv_backward", [x, weight, dy], grads, 0, |[x, weight, dy], _| {
            B::causal_conv_backward(x, weight, dy)
        })
    }

    const FUSED_STATE_PASSING: bool = B::FUSED_STATE_PASSING;

    fn ssd_state_passing(
        states: FloatTensor<Self>,
        decay: FloatTensor<Self>,
        h0: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !B::FUSED_STATE_PASSING {
            return plain_state_passing::<Self>(states, decay, h0);
        }
        let entering = (states.shape.clone(), states.dtype);
        let [entering] = custom::<B, 3, 1>(
            "archlab.ssd_state_passing",
            [states, decay, h0],
            [entering],
            0,
            |[states, decay, h0], _| [B::ssd_state_passing(states, decay, h0)],
        );
        entering
    }

    fn ssd_state_passing_backward(
        decay: FloatTensor<Self>,
        entering: FloatTensor<Self>,
        d_entering: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 3] {
        let [b, _, h, p, n] = entering.shape.dims::<5>();
        let grads = [
            (entering.shape.clone(), entering.dtype),
            (decay.shape.clone(), decay.dtype),
            (Shape::new([b, h, p, n]), entering.dtype),
        ];
        custom::<B, 3, 3>(
            "archlab.ssd_state_passing_backward",
            [decay, entering, d_entering],
            grads,
            0,
            |[decay, entering, d_entering], _| B::ssd_state_passing_backward(decay, entering, d_entering),
        )
    }

    const FUSED_UT_TRANSFORM: bool = B::FUSED_UT_TRANSFORM;

    fn ut_transform(
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        cum: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !B::FUSED_UT_TRANSFORM {
            return plain_ut_transform::<Self>(k, v, beta, cum);
        }
        let [out] = custom::<B, 4, 1>(
            "archlab.ut_transform",
            [k.clone(), v.clone(), beta, cum],
            [ut_output(&k, &v)],
            0,
            |[k, v, beta, cum], _| [B::ut_transform(k, v, beta, cum)],
        );
        out
    }

    fn ut_transform_saving(
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        cum: FloatTensor<Self>,
    ) -> [FloatTensor<Self>; 2] {
        let [n, c, _] = k.shape.dims::<3>();
        let outputs = [ut_output(&k, &v), (Shape::new([n, c, c]), DType::F32)];
        custom::<B, 4, 2>(
            "archlab.ut_transform_saving",
            [k, v, beta, cum],
            outputs,
            0,
            |[k, v, beta, cum], _| B::ut_transform_saving(k, v, beta, cum),
        )
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
        let grads = [&k, &v, &beta, &cum].map(|t| (t.shape.clone(), t.dtype));
        custom::<B, 7, 4>(
            "archlab.ut_transform_backward",
            [k, v, beta, cum, inverse, out, d_out],
            grads,
            0,
            |[k, v, beta, cum, inverse, out, d_out], _| {
                B::ut_transform_backward(k, v, beta, cum, inverse, out, d_out)
            },
        )
    }

    fn own_matmul() -> bool {
        B::own_matmul()
    }

    /// One custom operation: fusion's own matmul (with its fused prologues and epilogues) is
    /// what a forced strategy replaces.
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        // Batch dimensions broadcast, then `[m, n]`, as burn's own matmul shapes its output.
        let shape = calculate_matmul_output(&lhs.shape, &rhs.shape)
            .expect("matmul operands of matching rank and inner size");
        let out = (shape, lhs.dtype);
        let [out] =
            custom::<B, 2, 1>("archlab.matmul", [lhs, rhs], [out], 0, |[lhs, rhs], _| [B::matmul(lhs, rhs)]);
        out
    }

    const FUSED_MOE_ROUTE: bool = B::FUSED_MOE_ROUTE;

    fn moe_route(logits: FloatTensor<Self>, top_k: usize) -> [IntTensor<Self>; 3] {
        if !B::FUSED_MOE_ROUTE {
            return host_moe_route::<Self>(logits, top_k);
        }
        let [n, e] = logits.shape.dims::<2>();
        let int = <B::IntElem as burn::tensor::Element>::dtype();
        let outputs = [Shape::new([n, top_k]), Shape::new([n * top_k]), Shape::new([e])].map(|s| (s, int));
        register_outputs::<B, 3>("archlab.moe_route", vec![logits], outputs, move |ir, handles| {
            B::moe_route(handles.get_float_tensor::<B>(&ir[0]), top_k).map(Output::Int)
        })
    }
}

/// The checkpoint interval of the CubeCL scan kernel (`scan_kernel.rs`), needed to declare the shape
/// of its checkpoints before the kernel runs.
fn checkpoint_chunk(n_state: usize) -> usize {
    super::scan_kernel::chunk_len(n_state)
}

fn operands<R: FusionRuntime>(
    s: ScanOperands<Fusion<impl FusionBackend<FusionRuntime = R>>>,
) -> [FusionTensor<R>; 5] {
    [s.x, s.delta, s.a, s.b, s.c]
}

/// An operation of the inner backend `B`: float inputs and a `usize` parameter in, float
/// outputs out.
type InnerOp<B, const I: usize, const O: usize> = fn([FloatTensor<B>; I], usize) -> [FloatTensor<B>; O];

/// [`register`] for an operation with float inputs only.
/// The UT transform's output `[n, C, dv + dk]`, in the values' dtype.
fn ut_output<R: FusionRuntime>(k: &FusionTensor<R>, v: &FusionTensor<R>) -> (Shape, DType) {
    let [n, c, dk] = k.shape.dims::<3>();
    (Shape::new([n, c, v.shape.dims::<3>()[2] + dk]), v.dtype)
}

fn custom<B: FusionBackend, const I: usize, const O: usize>(
    name: &'static str,
    inputs: [FusionTensor<B::FusionRuntime>; I],
    outputs: [(Shape, DType); O],
    param: usize,
    run: InnerOp<B, I, O>,
) -> [FusionTensor<B::FusionRuntime>; O] {
    register::<B, O>(name, inputs.into(), outputs, move |ir, handles| {
        run(std::array::from_fn(|i| handles.get_float_tensor::<B>(&ir[i])), param)
    })
}

type Handles<B> = HandleContainer<<<B as FusionBackend>::FusionRuntime as FusionRuntime>::FusionHandle>;

/// One output of a custom operation, as the inner backend returned it.
enum Output<B: FusionBackend> {
    Float(FloatTensor<B>),
    Int(IntTensor<B>),
}

/// Runs the operation on `B`, given the inputs' descriptions and the stream's handles.
type Run<B, const O: usize> = Box<dyn Fn(&[TensorIr], &mut Handles<B>) -> [Output<B>; O] + Send + Sync>;

/// Registers `run` as one custom operation of the fusion stream and returns its outputs, of
/// the declared shapes and (float) dtypes.
fn register<B: FusionBackend, const O: usize>(
    name: &'static str,
    inputs: Vec<FusionTensor<B::FusionRuntime>>,
    outputs: [(Shape, DType); O],
    run: impl Fn(&[TensorIr], &mut Handles<B>) -> [FloatTensor<B>; O] + Send + Sync + 'static,
) -> [FusionTensor<B::FusionRuntime>; O] {
    register_outputs::<B, O>(name, inputs, outputs, move |ir, handles| run(ir, handles).map(Output::Float))
}

/// [`register`] for outputs of any kind: each declared dtype must match what `run` returns.
fn register_outputs<B: FusionBackend, const O: usize>(
    name: &'static str,
    inputs: Vec<FusionTensor<B::FusionRuntime>>,
    outputs: [(Shape, DType); O],
    run: impl Fn(&[TensorIr], &mut Handles<B>) -> [Output<B>; O] + Send + Sync + 'static,
) -> [FusionTensor<B::FusionRuntime>; O] {
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(&inputs);
    let inputs: Vec<TensorIr> = inputs.into_iter().map(|t| t.into_ir()).collect();
    let outputs = outputs.map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype));
    let desc = CustomOpIr::new(name, &inputs, &outputs);
    let op = CustomOp::<B, O> { desc: desc.clone(), run: Box::new(run) };
    let results = client.register(streams, OperationIr::Custom(desc), op);
    results
        .try_into()
        .unwrap_or_else(|_| unreachable!("{name}: the stream returns one tensor per declared output"))
}

struct CustomOp<B: FusionBackend, const O: usize> {
    desc: CustomOpIr,
    run: Run<B, O>,
}

impl<B: FusionBackend, const O: usize> std::fmt::Debug for CustomOp<B, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomOp({})", self.desc.id)
    }
}

impl<B: FusionBackend, const O: usize> Operation<B::FusionRuntime> for CustomOp<B, O> {
    fn execute(&self, handles: &mut Handles<B>) {
        let outputs = (self.run)(&self.desc.inputs, handles);
        for (ir, tensor) in self.desc.outputs.iter().zip(outputs) {
            match tensor {
                Output::Float(t) => handles.register_float_tensor::<B>(&ir.id, t),
                Output::Int(t) => handles.register_int_tensor::<B>(&ir.id, t),
            }
        }
    }
}
