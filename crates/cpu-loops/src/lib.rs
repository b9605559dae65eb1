//! archlab's CPU host loops: the fused operations the CPU backend runs instead of chains of
//! tensor ops (`archlab::kernels::cpu`), on contiguous f32 slices, with no tensor library.
//!
//! They live in a crate of their own so that they are always compiled optimised: the main
//! crate builds at `opt-level = 1` in the dev profile (the README's commands) to keep its build
//! time down, and at that level LLVM neither vectorises loops nor unrolls them, which leaves
//! these loops several times slower than the same code at `opt-level = 3`. This crate is small,
//! so optimising it costs seconds of build time (`Cargo.toml`, `[profile.dev.package]`). It is
//! also built without overflow checks, as in a release build: a checked `+` inside a loop is a
//! branch that stops the loop vectorising.
//!
//! "No tensor library" has one exception: matrix products run on `gemm`, the kernels burn's CPU
//! matmul already uses (`matmul.rs`).
//!
//! Each loop is tested in the main crate against its plain-ops twin, as its GPU kernel is
//! (`tests/all/kernels.rs`, `tests/all/ssm.rs`).

/// `fn name(args) -> R { body }`, compiled twice: for the x86-64 baseline and for AVX2, the
/// version run picked once per call by what the CPU has.
///
/// The crate is built for the baseline, SSE2's four lanes, so that its binary runs on any x86-64
/// CPU; the AVX2 version's loops run eight lanes, as `gemm` and burn's own CPU kernels pick
/// theirs at run time. Without fast-math the compiler keeps every float operation's order and
/// rounding (no fused multiply-adds, no reordered sums), so both versions give the same bits.
/// The body's callees must be `#[inline(always)]` to be compiled into the AVX2 version.
macro_rules! avx2_or_baseline {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

pub mod activation;
pub mod attention;
pub mod conv;
pub mod cross_entropy;
pub mod delta_chunks;
pub mod matmul;
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
