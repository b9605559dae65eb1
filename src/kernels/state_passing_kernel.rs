//! Step 3 of Mamba-2's chunked SSD scan, the state passing between chunks (Dao & Gu 2024, §6;
//! `mamba_ssm`'s `_state_passing_fwd` / `_bwd`), as two CubeCL kernels.
//!
//! ```text
//! carry_0 = h0 ;  entering_c = carry_c ;  carry_{c+1} = decay_c · carry_c + states_c
//! ```
//!
//! The plain-ops twin ([`super::state_passing::pass_states`]) is a loop of two launches per chunk
//! (`t / L` chunks: 256 at T = 16 384, and as many again backward); here it is one launch each
//! way. `tests/all/kernels.rs` checks both kernels against the twin, values and gradients.
//!
//! # Work split
//! One unit per (batch row, head, state element `(p, n)`): the recurrence of every element is
//! independent, so each unit walks the chunks keeping its carry in a register. The backward
//! walks them in reverse; `d decay_c = Σ_{p,n} d carry_{c+1} · carry_c` sums over the
//! elements, which each cube reduces in shared memory and writes as one partial
//! (`[b, nc, h, blocks]`), added by the launcher with one tensor op.

use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

use super::launch::{cast, empty, f32_contiguous};

use super::reduce::cube_sum;

/// Forward. Layouts (contiguous): `states`, `entering`: `[b, nc, h, e]` with `e = p·n`;
/// `decay`: `[b, nc, h]`; `h0`: `[b, h, e]`. Grid: x over element blocks of `CUBE_DIM_X`, y
/// over `b · h`.
#[cube(launch)]
pub fn state_passing_forward_kernel<F: Float>(
    states: &Tensor<F>,
    decay: &Tensor<F>,
    h0: &Tensor<F>,
    entering: &mut Tensor<F>,
    #[define(F)] _dtype: StorageType,
) {
    let chunks = states.shape(1);
    let heads = states.shape(2);
    let elems = states.shape(3);
    let bh = CUBE_POS_Y as usize;
    let (batch, head) = (bh / heads, bh % heads);
    let e = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    if e >= elems {
        terminate!();
    }
    let mut carry = h0[bh * elems + e];
    for c in 0..chunks {
        let row = (batch * chunks + c) * heads + head;
        entering[row * elems + e] = carry;
        carry = decay[row] * carry + states[row * elems + e];
    }
}

/// Backward from the gradient of `entering` alone (the final state is formed from the last
/// entering state outside): `d_states`, `d_decay_part` (`[b, nc, h, blocks]`, one partial sum
/// per cube) and `d_h0`. Same layout and grid as the forward, `units` units per cube (a power
/// of two: the shared-memory sum).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn state_passing_backward_kernel<F: Float>(
    decay: &Tensor<F>,
    entering: &Tensor<F>,
    d_entering: &Tensor<F>,
    d_states: &mut Tensor<F>,
    d_decay_part: &mut Tensor<F>,
    d_h0: &mut Tensor<F>,
    #[comptime] units: usize,
    #[define(F)] _dtype: StorageType,
) {
    let chunks = entering.shape(1);
    let heads = entering.shape(2);
    let elems = entering.shape(3);
    let blocks = CUBE_COUNT_X as usize;
    let bh = CUBE_POS_Y as usize;
    let (batch, head) = (bh / heads, bh % heads);
    let e = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    // Units past the last element stay for the cube's sums and contribute zeros.
    let active = e < elems;
    let mut buffer = SharedMemory::<F>::new(units);
    // g = dL/d carry_{c+1}; nothing flows into carry_{nc} itself.
    let mut g = F::new(0.0);
    for step in 0..chunks {
        let c = chunks - 1 - step;
        let row = (batch * chunks + c) * heads + head;
        let mut contribution = F::new(0.0);
        if active {
            d_states[row * elems + e] = g;
            contribution = g * entering[row * elems + e];
        }
        let sum = cube_sum::<F>(&mut buffer, contribution);
        if UNIT_POS_X == 0 {
            d_decay_part[row * blocks + CUBE_POS_X as usize] = sum;
        }
        if active {
            g = decay[row] * g + d_entering[row * elems + e];
        }
    }
    if active {
        d_h0[bh * elems + e] = g;
    }
}

// ---------------------------------------------------------------------------------------------
// Launch (host side): grid, operand layouts and dtypes. Called by `cube.rs`.

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

pub(super) fn state_passing_forward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
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
pub(super) fn state_passing_backward<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
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
