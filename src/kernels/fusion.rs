//! burn's fusion backend (`Fusion<B>`, what `Cuda` and `Wgpu` are with the `fusion` feature):
//! each fused operation is registered in the fusion stream as one custom operation, which the
//! stream executes by calling the same operation on `B`. Fusion optimises the element-wise
//! work around it and leaves the kernel alone.

use std::marker::PhantomData;

use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Shape};
use burn_fusion::stream::{Operation, OperationStreams};
use burn_fusion::{Fusion, FusionBackend, FusionRuntime, FusionTensor};
use burn_ir::{CustomOpIr, HandleContainer, OperationIr, TensorIr};

use super::{Backend, ScanOperands, plain_causal_attention, plain_selective_scan};

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
}

/// The checkpoint interval of the CubeCL scan kernel (`cube.rs`), needed to declare the shape
/// of its checkpoints before the kernel runs.
fn checkpoint_chunk(n_state: usize) -> usize {
    super::cube::chunk_len(n_state)
}

fn operands<R: FusionRuntime>(
    s: ScanOperands<Fusion<impl FusionBackend<FusionRuntime = R>>>,
) -> [FusionTensor<R>; 5] {
    [s.x, s.delta, s.a, s.b, s.c]
}

/// An operation of the inner backend `B`: float inputs and a `usize` parameter in, float
/// outputs out.
type InnerOp<B, const I: usize, const O: usize> = fn([FloatTensor<B>; I], usize) -> [FloatTensor<B>; O];

/// Registers `run` as one custom operation of the fusion stream and returns its outputs, of
/// the declared shapes and dtypes.
fn custom<B: FusionBackend, const I: usize, const O: usize>(
    name: &'static str,
    inputs: [FusionTensor<B::FusionRuntime>; I],
    outputs: [(Shape, DType); O],
    param: usize,
    run: InnerOp<B, I, O>,
) -> [FusionTensor<B::FusionRuntime>; O] {
    let client = inputs[0].client.clone();
    let streams = OperationStreams::with_inputs(&inputs);
    let inputs = inputs.map(|t| t.into_ir());
    let outputs = outputs.map(|(shape, dtype)| TensorIr::uninit(client.create_empty_handle(), shape, dtype));
    let desc = CustomOpIr::new(name, &inputs, &outputs);
    let op = CustomOp::<B, I, O> { desc: desc.clone(), run, param, backend: PhantomData };
    let results = client.register(streams, OperationIr::Custom(desc), op);
    results
        .try_into()
        .unwrap_or_else(|_| unreachable!("{name}: the stream returns one tensor per declared output"))
}

struct CustomOp<B: FusionBackend, const I: usize, const O: usize> {
    desc: CustomOpIr,
    run: InnerOp<B, I, O>,
    param: usize,
    backend: PhantomData<fn() -> B>,
}

impl<B: FusionBackend, const I: usize, const O: usize> std::fmt::Debug for CustomOp<B, I, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomOp({})", self.desc.id)
    }
}

impl<B: FusionBackend, const I: usize, const O: usize> Operation<B::FusionRuntime> for CustomOp<B, I, O> {
    fn execute(&self, handles: &mut HandleContainer<<B::FusionRuntime as FusionRuntime>::FusionHandle>) {
        let (inputs, outputs) = self.desc.as_fixed::<I, O>();
        let inputs = inputs.each_ref().map(|t| handles.get_float_tensor::<B>(t));
        for (ir, tensor) in outputs.iter().zip((self.run)(inputs, self.param)) {
            handles.register_float_tensor::<B>(&ir.id, tensor);
        }
    }
}
