//! Step 3 of Mamba-2's chunked SSD scan, the state passing between chunks (Dao & Gu 2024, §6;
//! `mamba_ssm`'s `_state_passing_fwd` / `_bwd`), as two CubeCL kernels.
//!
//! ```text
//! carry_0 = h0 ;  entering_c = carry_c ;  carry_{c+1} = decay_c · carry_c + states_c
//! ```
//!
//! The plain-ops twin ([`crate::model::ssd::pass_states`]) is a loop of two launches per chunk
//! (`t / L` chunks: 256 at T = 16 384, and as many again backward); here it is one launch each
//! way. `tests/kernels.rs` checks both kernels against the twin, values and gradients.
//!
//! # Work split
//! One unit per (batch row, head, state element `(p, n)`): the recurrence of every element is
//! independent, so each unit walks the chunks keeping its carry in a register. The backward
//! walks them in reverse; `d decay_c = Σ_{p,n} d carry_{c+1} · carry_c` sums over the
//! elements, which each cube reduces in shared memory and writes as one partial
//! (`[b, nc, h, blocks]`), added by the launcher with one tensor op.

use cubecl::prelude::*;

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
