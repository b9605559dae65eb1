//! Mixture-of-Experts routing on the device, as two CubeCL kernels: each token's top-k
//! experts, then each assignment's position among its expert's assignments.
//!
//! The plain path reads the router logits back to the host, sorts them there and uploads the
//! permutation: a device-to-host copy in the middle of every MoE layer's forward, which
//! leaves the GPU idle until the host has routed and launched the rest of the layer. With
//! these kernels the routing stays on the device and the experts' token buffers are filled
//! by a scatter ([`crate::model::moe`]'s batched dispatch), as in GShard and MegaBlocks'
//! permutation step. The host-side twin is [`super::moe_route::HostRoute`];
//! `tests/all/kernels.rs` checks the kernels against it, ties included.
//!
//! # Work split
//! - Top-k: one unit per token. The j-th choice is the best expert strictly after the
//!   (j−1)-th in the order (logit descending, index ascending), so no list of taken experts
//!   is kept: `k · E` reads per token, for the few experts (≤ 256) of an MoE layer.
//! - Positions: one cube per expert walks the `n · k` assignments in token order, a block of
//!   `units · items` at a time: each unit counts the cube's expert among its `items`
//!   consecutive assignments, an inclusive scan of those counts in shared memory gives each
//!   unit its first position, the unit numbers its assignments from there, and the block's
//!   total carries into the next block. The last total is the expert's count. Every cube reads
//!   all `n · k` choices (4 bytes each: 128 KiB at 16 384 tokens × top-2).

use burn::tensor::ops::IntTensorOps;
use burn::tensor::{DType, Shape, TensorMetadata};
use burn_cubecl::ops::numeric::empty_device_dtype;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl::prelude::*;

use super::launch::f32_contiguous;

/// `choices[r, j]`: token r's j-th best expert; ties go to the lower index (the host's stable
/// sort). Layouts (contiguous): `logits` `[n, E]`, `choices` `[n, k]`. Grid: x over tokens,
/// grid-stride, 1-D cubes. A NaN logit is never chosen after the first choice; a row with
/// fewer than k comparable logits repeats its last choice (in range, so nothing downstream
/// reads out of bounds; a NaN loss is skipped by the trainer anyway).
#[cube(launch)]
pub fn moe_top_k_kernel(logits: &Tensor<f32>, choices: &mut Tensor<u32>) {
    let tokens = logits.shape(0);
    let experts = logits.shape(1);
    let k = choices.shape(1);
    let stride = (CUBE_COUNT_X * CUBE_DIM_X) as usize;
    let mut token = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize;
    while token < tokens {
        let base = token * experts;
        let mut prev_value = f32::new(0.0);
        let mut prev_expert = 0usize;
        for j in 0..k {
            let mut best_value = f32::new(0.0);
            let mut best_expert = experts; // none yet
            for e in 0..experts {
                let v = logits[base + e];
                let after_prev = j == 0 || v < prev_value || (v == prev_value && e > prev_expert);
                // Strictly greater: among equal logits the first (lowest index) stays.
                if after_prev && (best_expert == experts || v > best_value) {
                    best_value = v;
                    best_expert = e;
                }
            }
            if best_expert == experts {
                best_expert = prev_expert;
                best_value = prev_value;
            }
            choices[token * k + j] = best_expert as u32;
            prev_value = best_value;
            prev_expert = best_expert;
        }
        token += stride;
    }
}

/// `positions[a]`: how many assignments before `a` (flattened `[n · k]`, token-major) chose
/// the same expert; `counts[e]`: assignments of expert e. Grid: x over experts, grid-stride;
/// `units` units per cube, a power of two (the scan). Each unit takes `items` consecutive
/// assignments of a block of `units · items`, so a block costs one scan (log₂ units barrier
/// pairs) for `items` times as many assignments as one per unit would.
#[cube(launch)]
#[allow(clippy::collapsible_if)]
pub fn moe_positions_kernel(
    choices: &Tensor<u32>,
    positions: &mut Tensor<u32>,
    counts: &mut Tensor<u32>,
    #[comptime] units: usize,
    #[comptime] items: usize,
) {
    let assignments = choices.len();
    let experts = counts.len();
    let unit = UNIT_POS_X as usize;
    let mut scan = SharedMemory::<u32>::new(units);
    let mut expert = CUBE_POS_X as usize;
    while expert < experts {
        let mut offset = 0u32;
        let mut start = 0usize;
        while start < assignments {
            let first = start + unit * items;
            // This unit's assignments of the expert. Nested `if`s, not `&&`: no read may
            // happen past the end.
            let mut mine = 0u32;
            for i in 0..items {
                if first + i < assignments {
                    if choices[first + i] as usize == expert {
                        mine += 1u32;
                    }
                }
            }
            // Inclusive scan of the units' counts (Hillis & Steele): after it, `scan[u]` counts
            // the expert's assignments among units 0..=u of this block.
            scan[unit] = mine;
            sync_cube();
            // A runtime value (a comptime one would not change inside the runtime loop).
            let mut step = 1usize;
            while step < CUBE_DIM_X as usize {
                let mut carried = 0u32;
                if unit >= step {
                    carried = scan[unit - step];
                }
                sync_cube();
                scan[unit] += carried;
                sync_cube();
                step *= 2;
            }
            let mut position = offset + scan[unit] - mine;
            for i in 0..items {
                if first + i < assignments {
                    if choices[first + i] as usize == expert {
                        positions[first + i] = position;
                        position += 1u32;
                    }
                }
            }
            offset += scan[CUBE_DIM_X as usize - 1];
            // Every unit has read the block's total before the next block overwrites it.
            sync_cube();
            start += CUBE_DIM_X as usize * items;
        }
        if unit == 0 {
            counts[expert] = offset;
        }
        expert += CUBE_COUNT_X as usize;
    }
}

// ---------------------------------------------------------------------------------------------
// Launch (host side): grid, operand layouts and dtypes. Called by `cube.rs`.

/// Units per cube of the MoE routing kernels (a power of two: the positions kernel's scan).
const MOE_ROUTE_UNITS: usize = 256;

/// Consecutive assignments per unit in the positions kernel: a block of 4096, so 16 384
/// tokens × top-2 take 8 scans per expert.
const MOE_POSITIONS_ITEMS: usize = 16;

/// `[choices [n, k], positions [n · k], counts [E]]` in the backend's int dtype.
pub(super) fn moe_route<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement>(
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
        MOE_POSITIONS_ITEMS,
    );
    let int = <I as burn::tensor::Element>::dtype().into();
    [choices, positions, counts].map(|t| CubeBackend::<R, F, I, BT>::int_cast(t, int))
}
