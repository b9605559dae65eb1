//! Mamba-2 SSD's state passing between chunks in plain tensor ops: the twin of the fused
//! kernel (`state_passing_kernel.rs`).

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// The state entering each chunk: `carry_0 = h0`, `carry_{c+1} = decay_c · carry_c + states_c`,
/// one step per chunk; the twin of the fused kernel (`kernels/state_passing_kernel.rs`).
///
/// # Shapes
/// - states: `[b, nc, h, p, n]`, decay: `[b, nc, h]`, h0: `[b, h, p, n]` → `[b, nc, h, p, n]`
pub fn pass_states<B: Backend>(states: Tensor<B, 5>, decay: Tensor<B, 3>, h0: Tensor<B, 4>) -> Tensor<B, 5> {
    let [b, nc, h, p, n] = states.dims();
    let decay = decay.reshape([b, nc, h, 1, 1]);
    let mut carry = h0.reshape([b, 1, h, p, n]);
    let mut entering = Vec::with_capacity(nc);
    for ci in 0..nc {
        entering.push(carry.clone());
        // The state after the last chunk is the caller's to form (`chunked` does), not ours.
        if ci + 1 < nc {
            carry = decay.clone().narrow(1, ci, 1) * carry + states.clone().narrow(1, ci, 1);
        }
    }
    Tensor::cat(entering, 1)
}
