//! Reductions across the units of one cube, shared by the kernels.

use cubecl::prelude::*;

/// The sum of every unit's `value`, returned to every unit of the cube. `buffer` holds one
/// float per unit, and the cube's unit count is a power of two.
#[cube]
pub fn cube_sum<F: Float>(buffer: &mut SharedMemory<F>, value: F) -> F {
    let unit = UNIT_POS_X as usize;
    buffer[unit] = value;
    sync_cube();
    // A runtime value (a comptime `units / 2` would not change inside the runtime loop).
    let mut stride = CUBE_DIM_X as usize / 2;
    while stride > 0 {
        if unit < stride {
            let other = buffer[unit + stride];
            buffer[unit] += other;
        }
        sync_cube();
        stride /= 2;
    }
    let total = buffer[0];
    // Every unit has read the total before the buffer is reused.
    sync_cube();
    total
}
