//! The CPU backend (burn's Flex): `kernels::Backend` implemented with host loops where a fused
//! loop beats the chain of tensor ops (`*_cpu.rs`); every other operation is its plain-ops twin.
//!
//! Operands are copied to contiguous f32 host buffers on the way in and results are made into
//! tensors of the operands' dtype on the way out; the copies are O(b·t·d), the loops they feed
//! O(b·t·d·n).

use burn::backend::Flex;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

use super::scan_cpu::{self, Dims, Operands};
use super::{Backend, ScanOperands};

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
        let t = Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(f32_tensor(values, shape)));
        if self.dtype == DType::F32 { t } else { t.cast(self.dtype) }.into_primitive().tensor()
    }
}

/// A tensor's values as contiguous f32, its shape and its dtype.
fn host_f32<const D: usize>(p: FloatTensor<Flex>) -> (Vec<f32>, [usize; D], DType) {
    let t = Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(p));
    let (shape, dtype) = (t.dims(), t.dtype());
    let values = t.into_data().convert::<f32>().into_vec::<f32>().expect("f32 after convert");
    (values, shape, dtype)
}

fn f32_tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> FloatTensor<Flex> {
    let t: Tensor<Flex, D> =
        Tensor::from_data(TensorData::new(values, shape), (&Default::default(), DType::F32));
    t.into_primitive().tensor()
}
