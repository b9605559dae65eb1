//! Host-side tensor helpers the kernel launchers share: casts, contiguous layouts and
//! uninitialised outputs. They sit apart from `cube.rs` (which dispatches to the kernels) so
//! that the kernel files depend on them and `cube.rs` on the kernel files, never both ways.

use burn::tensor::ops::{FloatTensorOps, IntTensorOps};
use burn::tensor::{DType, FloatDType, IntDType, Shape, TensorMetadata};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

pub(super) fn f32_contiguous<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    t: CubeTensor<R>,
) -> CubeTensor<R> {
    into_contiguous(cast::<R, F, I, BT>(t, DType::F32))
}

pub(super) fn cast<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
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
pub(super) fn empty<R: CubeRuntime>(like: &CubeTensor<R>, shape: impl Into<Shape>) -> CubeTensor<R> {
    empty_device_dtype::<R>(like.client.clone(), like.device.clone(), shape.into(), DType::F32)
}

/// Token ids as contiguous u32, the kernels' index type.
pub(super) fn u32_contiguous<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
    ids: CubeTensor<R>,
) -> CubeTensor<R> {
    let ids = if ids.dtype() == DType::U32 {
        ids
    } else {
        CubeBackend::<R, F, I, BT>::int_cast(ids, IntDType::U32)
    };
    into_contiguous(ids)
}
