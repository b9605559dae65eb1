//! Tensors made from host data in the backend's own element types.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorCreationOptions, TensorData};

/// A float tensor in the backend's own float type. Without an explicit dtype burn uses the
/// *device's* default, which is shared by every backend on that device (NdArray<f32> and
/// NdArray<f64> both run on `NdArrayDevice::Cpu`), so an f64 model could silently get f32
/// weights in a process that also used f32.
pub fn float_tensor<B: Backend, const D: usize>(data: TensorData, device: &B::Device) -> Tensor<B, D> {
    let dtype = <B::FloatElem as burn::tensor::Element>::dtype();
    Tensor::from_data(
        data.convert::<B::FloatElem>(),
        TensorCreationOptions::new(device.clone()).with_dtype(dtype),
    )
}

/// An int tensor in the backend's own int type (see [`float_tensor`] for why the dtype is explicit).
pub fn int_tensor<B: Backend, const D: usize>(
    data: Vec<i64>,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D, Int> {
    let dtype = <B::IntElem as burn::tensor::Element>::dtype();
    Tensor::from_data(
        TensorData::new(data, shape).convert::<B::IntElem>(),
        TensorCreationOptions::new(device.clone()).with_dtype(dtype),
    )
}
