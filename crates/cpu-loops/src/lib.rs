//! archlab's CPU host loops: the fused operations the CPU backend runs instead of chains of
//! tensor ops (`archlab::kernels::cpu`), on contiguous f32 slices, with no tensor library.
//!
//! They live in a crate of their own so that they are always compiled optimised: the main
//! crate builds at `opt-level = 1` in the dev profile (the README's commands) to keep its build
//! time down, and at that level LLVM neither vectorises loops nor unrolls them, which leaves
//! these loops several times slower than the same code at `opt-level = 3`. This crate is small,
//! so optimising it costs seconds of build time (`Cargo.toml`, `[profile.dev.package]`).
//!
//! Each loop is tested in the main crate against its plain-ops twin, as its GPU kernel is
//! (`tests/all/kernels.rs`, `tests/all/ssm.rs`).

pub mod activation;
pub mod attention;
pub mod conv;
pub mod cross_entropy;
pub mod norm;
pub mod rope;
pub mod scan;
pub mod ssd_scan;
pub mod ut_transform;

/// `Σ a·b` with eight partial sums: a single running sum would wait on each add's latency (the
/// compiler may not reorder float adds), eight lanes keep the adder busy and vectorise. The
/// order is fixed, so the result depends on nothing but the inputs.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut partial = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for l in 0..8 {
            partial[l] += x[l] * y[l];
        }
    }
    partial.iter().sum::<f32>() + tail
}
