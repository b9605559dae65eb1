//! The CubeCL backends (CUDA, wgpu): `kernels::Backend` implemented by launching archlab's
//! kernels. Each `*_kernel.rs` file holds its kernels and, below them, their launchers (grid,
//! layouts, dtypes); this file maps the trait's operations onto those launchers and holds the
//! helpers they share.
//!
//! Most kernels compute in f32 whatever the model's dtype (bf16 under mixed precision):
//! operands are cast to contiguous f32 on the way in and results back on the way out, as
//! `mamba_ssm` keeps its scan state in f32. The cross-entropy kernels read the logits in their
//! own dtype (an fp32 copy is what they exist to avoid) and accumulate in f32.

use burn::tensor::ops::FloatTensor;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::attention_kernel::{attention_backward, attention_forward};
use super::conv_kernel::{causal_conv_backward, causal_conv_forward};
use super::cross_entropy_kernel::{cross_entropy_backward, cross_entropy_forward};
use super::gated_rms_norm_kernel::{gated_rms_norm_backward, gated_rms_norm_forward};
use super::matmul_strategy::{forced, forced_matmul};
use super::moe_route_kernel::moe_route;
use super::rms_norm_kernel::{add_rms_norm_forward, rms_norm_backward, rms_norm_forward};
use super::scan_kernel::{scan_backward, scan_forward};
use super::state_passing_kernel::{state_passing_backward, state_passing_forward};
use super::ut_transform_kernel::{ut_transform_backward, ut_transform_forward};
use super::{Backend, ScanOperands};

impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> Backend for CubeBackend<R, F, I, BT> {
    const FUSED_SCAN: bool = true;

    fn selective_scan(s: ScanOperands<Self>, _chunk: usize) -> FloatTensor<Self> {
        scan_forward::<R, F, I, BT>(s, false).0
    }

    fn selective_scan_saving(s: ScanOperands<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        scan_forward::<R, F, I, BT>(s, true)
    }

    fn selective_scan_backward(
        s: ScanOperands<Self>,
        checkpoints: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> ScanOperands<Self> {
        scan_backward::<R, F, I, BT>(s, checkpoints, dy)
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
        rms_norm_backward::<R, F, I, BT>(x, weight, rstd, dy, None)
    }

    fn add_rms_norm(
        residual: CubeTensor<R>,
        delta: CubeTensor<R>,
        weight: CubeTensor<R>,
        eps: f64,
    ) -> [CubeTensor<R>; 2] {
        let (sum, y, _) = add_rms_norm_forward::<R, F, I, BT>(residual, delta, weight, eps);
        [sum, y]
    }

    fn add_rms_norm_saving(
        residual: CubeTensor<R>,
        delta: CubeTensor<R>,
        weight: CubeTensor<R>,
        eps: f64,
    ) -> [CubeTensor<R>; 3] {
        let (sum, y, rstd) = add_rms_norm_forward::<R, F, I, BT>(residual, delta, weight, eps);
        [sum, y, rstd]
    }

    fn rms_norm_backward_accumulate(
        x: CubeTensor<R>,
        weight: CubeTensor<R>,
        rstd: CubeTensor<R>,
        dy: CubeTensor<R>,
        d_x: CubeTensor<R>,
    ) -> [CubeTensor<R>; 2] {
        rms_norm_backward::<R, F, I, BT>(x, weight, rstd, dy, Some(d_x))
    }

    fn gated_rms_norm(
        y: CubeTensor<R>,
        z: CubeTensor<R>,
        weight: CubeTensor<R>,
        group: usize,
        eps: f64,
    ) -> CubeTensor<R> {
        gated_rms_norm_forward::<R, F, I, BT>(y, z, weight, group, eps).0
    }

    fn gated_rms_norm_saving(
        y: CubeTensor<R>,
        z: CubeTensor<R>,
        weight: CubeTensor<R>,
        group: usize,
        eps: f64,
    ) -> [CubeTensor<R>; 2] {
        let (out, rstd) = gated_rms_norm_forward::<R, F, I, BT>(y, z, weight, group, eps);
        [out, rstd]
    }

    fn gated_rms_norm_backward(
        y: CubeTensor<R>,
        z: CubeTensor<R>,
        weight: CubeTensor<R>,
        rstd: CubeTensor<R>,
        d_out: CubeTensor<R>,
        group: usize,
    ) -> [CubeTensor<R>; 3] {
        gated_rms_norm_backward::<R, F, I, BT>(y, z, weight, rstd, d_out, group)
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

    const FUSED_UT_TRANSFORM: bool = true;

    fn ut_transform(
        k: CubeTensor<R>,
        v: CubeTensor<R>,
        beta: CubeTensor<R>,
        cum: CubeTensor<R>,
    ) -> CubeTensor<R> {
        let [out, _] = ut_transform_forward::<R, F, I, BT>(k, v, beta, cum);
        out
    }

    fn ut_transform_saving(
        k: CubeTensor<R>,
        v: CubeTensor<R>,
        beta: CubeTensor<R>,
        cum: CubeTensor<R>,
    ) -> [CubeTensor<R>; 2] {
        ut_transform_forward::<R, F, I, BT>(k, v, beta, cum)
    }

    fn ut_transform_backward(
        k: CubeTensor<R>,
        v: CubeTensor<R>,
        beta: CubeTensor<R>,
        cum: CubeTensor<R>,
        inverse: CubeTensor<R>,
        out: CubeTensor<R>,
        d_out: CubeTensor<R>,
    ) -> [CubeTensor<R>; 4] {
        ut_transform_backward::<R, F, I, BT>([k, v, beta, cum], inverse, out, d_out)
    }

    fn own_matmul() -> bool {
        forced().is_some()
    }

    fn matmul(lhs: CubeTensor<R>, rhs: CubeTensor<R>) -> CubeTensor<R> {
        forced_matmul::<R, F, I, BT>(lhs, rhs)
    }

    const FUSED_MOE_ROUTE: bool = true;

    fn moe_route(logits: CubeTensor<R>, top_k: usize) -> [CubeTensor<R>; 3] {
        moe_route::<R, F, I, BT>(logits, top_k)
    }
}
