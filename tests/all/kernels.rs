//! archlab's fused kernels against their plain-ops twins, values and gradients, on random
//! inputs of awkward sizes (lengths that are not a whole number of checkpoint chunks, channel
//! counts that leave a cube part-empty, state sizes from 1 to 64).
//!
//! The kernels run on the CPU backend where it has a host loop, and on every CubeCL device
//! this machine has: CUDA when a GPU is usable, and
//! wgpu when a Vulkan driver is present (CI installs Mesa's software driver, lavapipe, so the
//! kernel logic is checked on every submission without a GPU). The oracle is the step-by-step
//! recurrence in f64 on the CPU. A test with no device to run on says so and passes.
#![cfg(feature = "cube-kernels")]

use crate::common::*;
use archlab::config::{FfnKind, MoeConfig, RunConfig};
use archlab::kernels::cross_entropy::token_nll;
use archlab::kernels::moe_route::HostRoute;
use archlab::kernels::selective_scan::{self, ScanInputs};
use archlab::kernels::{self, AutodiffBackend, Backend};
use archlab::kernels::{conv, delta_chunks, norm, state_passing, tri_inverse, ut_transform};
use archlab::model::moe::{Dispatch, Moe, RoutingStats};
use archlab::model::ssd::{self, SsdInputs};
use archlab::rng::Rng;
use burn::tensor::{Int, Tensor, TensorData};

/// Host copies of one random selective-scan problem, so that every backend gets the same
/// numbers. Δ = softplus(N(0,1)) and A = −exp(N(0, 0.5)), as the mixer produces them.
struct Problem {
    shape: (usize, usize, usize, usize), // (b, t, d, n)
    x: Vec<f32>,
    delta: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    /// Random weights of the loss Σ y·w, so that every output element gets its own gradient.
    w: Vec<f32>,
}

impl Problem {
    fn new(b: usize, t: usize, d: usize, n: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mut normal =
            |len: usize, scale: f64| (0..len).map(|_| (rng.normal() * scale) as f32).collect::<Vec<_>>();
        let softplus = |v: f32| (1.0 + v.exp()).ln();
        Self {
            shape: (b, t, d, n),
            x: normal(b * t * d, 1.0),
            delta: normal(b * t * d, 1.0).into_iter().map(softplus).collect(),
            a: normal(d * n, 0.5).into_iter().map(|v| -v.exp()).collect(),
            b: normal(b * t * n, 1.0),
            c: normal(b * t * n, 1.0),
            w: normal(b * t * d, 1.0),
        }
    }

    fn inputs<B: AutodiffBackend>(&self, dev: &B::Device) -> ScanInputs<B> {
        let (b, t, d, n) = self.shape;
        let tensor3 = |v: &[f32], shape: [usize; 3]| {
            Tensor::<B, 3>::from_data(TensorData::new(v.to_vec(), shape), dev).require_grad()
        };
        ScanInputs {
            x: tensor3(&self.x, [b, t, d]),
            delta: tensor3(&self.delta, [b, t, d]),
            a: Tensor::<B, 2>::from_data(TensorData::new(self.a.clone(), [d, n]), dev).require_grad(),
            b: tensor3(&self.b, [b, t, n]),
            c: tensor3(&self.c, [b, t, n]),
        }
    }

    /// `[y, dx, dΔ, dA, dB, dC]` of the loss Σ y·w, with `scan` computing y.
    fn run<B: AutodiffBackend>(
        &self,
        dev: &B::Device,
        scan: impl Fn(ScanInputs<B>) -> Tensor<B, 3>,
    ) -> Vec<Vec<f64>> {
        let (b, t, d, _) = self.shape;
        let s = self.inputs::<B>(dev);
        let w = Tensor::<B, 3>::from_data(TensorData::new(self.w.clone(), [b, t, d]), dev);
        let y = scan(s.clone());
        let grads = (y.clone() * w).sum().backward();
        let g3 = |v: &Tensor<B, 3>| host(v.grad(&grads).expect("a gradient for every operand"));
        vec![host(y), g3(&s.x), g3(&s.delta), host(s.a.grad(&grads).expect("dA")), g3(&s.b), g3(&s.c)]
    }
}

fn host<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec().unwrap()
}

/// Sizes chosen to hit the kernels' edges: one step; lengths past one and several checkpoint
/// chunks (64 steps at n = 16, 16 at n = 64) and not a multiple of them; channel counts below,
/// at and past one cube of 32; state sizes 1, 5, 16 and 64.
const CASES: [(usize, usize, usize, usize); 6] =
    [(1, 1, 7, 4), (2, 150, 45, 16), (1, 300, 70, 5), (3, 37, 32, 64), (2, 65, 33, 1), (1, 129, 96, 16)];

/// The fused scan on `B` against the f64 recurrence on the CPU. f32 rounding over a few
/// hundred steps stays below 1e-4 relative; dA sums over every batch, step and channel and
/// gets 3e-4.
fn check_selective_scan<B: AutodiffBackend>(dev: &B::Device, device_name: &str) {
    assert!(B::FUSED_SCAN, "{device_name}: expected a fused selective scan on this backend");
    for (i, &(b, t, d, n)) in CASES.iter().enumerate() {
        let problem = Problem::new(b, t, d, n, 100 + i as u64);
        let fused = problem.run::<B>(dev, |s| kernels::selective_scan(s, 0));
        let reference = problem.run::<Cpu64Ad>(&Default::default(), |s| selective_scan::reference(s, None).0);
        for ((name, f), r) in ["y", "dx", "dΔ", "dA", "dB", "dC"].iter().zip(&fused).zip(&reference) {
            let tol = if *name == "dA" { 3e-4 } else { 1e-4 };
            assert_close(r, f, tol, &format!("{device_name} b={b} t={t} d={d} n={n}: {name}"));
        }
    }
}

/// |a − b| ≤ tol · (1 + |a|) everywhere, and every value finite.
fn assert_close(reference: &[f64], got: &[f64], tol: f64, what: &str) {
    assert_eq!(reference.len(), got.len(), "{what}: lengths differ");
    assert!(got.iter().all(|v| v.is_finite()), "{what}: non-finite values");
    let worst = reference.iter().zip(got).map(|(r, g)| (r - g).abs() / (1.0 + r.abs())).fold(0.0, f64::max);
    assert!(worst <= tol, "{what}: worst relative difference {worst:e} > {tol:e}");
}

/// Skips, or fails where `ARCHLAB_REQUIRE_WGPU` is set (CI sets it after installing lavapipe,
/// so that a broken driver install cannot turn the kernel tests into silent passes).
#[cfg(feature = "wgpu")]
fn no_wgpu_adapter() {
    let why = "no wgpu adapter: install a Vulkan driver (Debian: apt-get install mesa-vulkan-drivers)";
    assert!(
        std::env::var_os("ARCHLAB_REQUIRE_WGPU").is_none(),
        "ARCHLAB_REQUIRE_WGPU is set but there is {why}"
    );
    eprintln!("skipping: {why}");
}

#[cfg(feature = "wgpu")]
#[test]
fn selective_scan_kernel_on_wgpu_matches_the_recurrence() {
    type B = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    match archlab::device::wgpu_device() {
        Some(dev) => check_selective_scan::<B>(&dev, "wgpu"),
        None => no_wgpu_adapter(),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn selective_scan_kernel_on_cuda_matches_the_recurrence() {
    type B = burn::backend::Autodiff<archlab::device::CudaBackend>;
    if !cuda_usable() {
        return;
    }
    check_selective_scan::<B>(&Default::default(), "cuda");
}

/// The CPU backend's scan is a host loop (`crates/cpu-loops/src/scan.rs`), held to the kernels' standard.
#[test]
fn selective_scan_on_the_cpu_matches_the_recurrence() {
    check_selective_scan::<CpuAd>(&Default::default(), "cpu");
}

/// The host loop's sums over channels and batch rows run in a fixed order, so the thread
/// count does not change a bit of the values or the gradients.
#[test]
fn selective_scan_on_the_cpu_is_the_same_for_any_thread_count() {
    let problem = Problem::new(3, 70, 100, 16, 11);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| problem.run::<CpuAd>(&Default::default(), |s| kernels::selective_scan(s, 0)))
    };
    let one = run(1);
    for threads in [2, 3] {
        assert!(one == run(threads), "{threads} threads gave other bits than one thread");
    }
}

/// The f64 oracle backend has no kernel: its scan is the plain-ops twin, also through autodiff.
#[test]
fn the_plain_ops_twin_matches_the_recurrence() {
    assert!(!<Cpu64Ad as Backend>::FUSED_SCAN);
    let problem = Problem::new(2, 37, 6, 4, 7);
    let twin = problem.run::<Cpu64Ad>(&Default::default(), |s| kernels::selective_scan(s, 5));
    let reference = problem.run::<Cpu64Ad>(&Default::default(), |s| selective_scan::reference(s, None).0);
    for (t, r) in twin.iter().zip(&reference) {
        assert_close(r, t, 1e-10, "cpu twin");
    }
}

/// `[y, dx, dΔ, dA, dB, dC]` of the loss Σ y·w for Mamba-2's SSD scan computed by `scan`, on a
/// random problem `(b, t, heads, p, groups, n)`: Δ = softplus(N(0, 1)) per head and step,
/// A = −exp(N(0, 0.5)) per head, x, B, C ~ N(0, 1), as the mixer produces them.
fn ssd_scan_run<B: AutodiffBackend>(
    dev: &B::Device,
    (b, t, heads, p, groups, n): (usize, usize, usize, usize, usize, usize),
    seed: u64,
    scan: impl Fn(SsdInputs<B>) -> Tensor<B, 4>,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut normal =
        |len: usize, scale: f64| (0..len).map(|_| (rng.normal() * scale) as f32).collect::<Vec<_>>();
    let softplus = |v: f32| (1.0 + v.exp()).ln();
    let (x, dt) =
        (normal(b * t * heads * p, 1.0), normal(b * t * heads, 1.0).into_iter().map(softplus).collect());
    let a: Vec<f32> = normal(heads, 0.5).into_iter().map(|v| -v.exp()).collect();
    let (bm, cm, w) =
        (normal(b * t * groups * n, 1.0), normal(b * t * groups * n, 1.0), normal(b * t * heads * p, 1.0));
    let t4 = |v: Vec<f32>, shape: [usize; 4]| Tensor::<B, 4>::from_data(TensorData::new(v, shape), dev);
    let s = SsdInputs {
        x: t4(x, [b, t, heads, p]).require_grad(),
        dt: Tensor::<B, 3>::from_data(TensorData::new(dt, [b, t, heads]), dev).require_grad(),
        a: Tensor::<B, 1>::from_data(TensorData::new(a, [heads]), dev).require_grad(),
        b: t4(bm, [b, t, groups, n]).require_grad(),
        c: t4(cm, [b, t, groups, n]).require_grad(),
    };
    let y = scan(s.clone());
    let grads = (y.clone() * t4(w, [b, t, heads, p])).sum().backward();
    let g4 = |v: &Tensor<B, 4>| host(v.grad(&grads).expect("a gradient for every operand"));
    let (g3, g1) = (host(s.dt.grad(&grads).expect("dΔ")), host(s.a.grad(&grads).expect("dA")));
    vec![host(y), g4(&s.x), g3, g1, g4(&s.b), g4(&s.c)]
}

/// (b, t, heads, p, groups, n): one step of one channel; the default comparison's Mamba-2
/// (4 heads of 29, one group, n = 64) over 150 steps; three groups of two heads; a length of
/// several checkpoint chunks and not a multiple of them; as many groups as heads.
const SSD_SCAN_CASES: [(usize, usize, usize, usize, usize, usize); 6] = [
    (1, 1, 1, 1, 1, 1),
    (2, 150, 4, 29, 1, 64),
    (1, 37, 6, 8, 3, 16),
    (3, 65, 2, 16, 2, 5),
    (1, 300, 3, 7, 1, 16),
    (2, 16, 8, 4, 8, 64),
];

/// The CPU backend's SSD loop (`crates/cpu-loops/src/ssd_scan.rs`) against the recurrence in
/// f64, values and the gradients of all five operands: f32 rounding over a few hundred steps
/// stays below 1e-4 relative; dA sums over every row, step and state element of a head and gets
/// 3e-4, as Mamba-1's. The chunked twin (what the f64 backend runs through the same call) agrees
/// with the recurrence to 1e-10.
#[test]
fn ssd_scan_on_the_cpu_matches_the_recurrence() {
    assert!(<CpuAd as Backend>::FUSED_SSD_SCAN && !<Cpu64Ad as Backend>::FUSED_SSD_SCAN);
    for (i, &shape) in SSD_SCAN_CASES.iter().enumerate() {
        let seed = 1200 + i as u64;
        let fused = ssd_scan_run::<CpuAd>(&Default::default(), shape, seed, |s| kernels::ssd_scan(s, 16));
        let reference =
            ssd_scan_run::<Cpu64Ad>(&Default::default(), shape, seed, |s| ssd::reference(s, None).0);
        let twin = ssd_scan_run::<Cpu64Ad>(&Default::default(), shape, seed, |s| kernels::ssd_scan(s, 16));
        for (((name, f), r), tw) in
            ["y", "dx", "dΔ", "dA", "dB", "dC"].iter().zip(&fused).zip(&reference).zip(&twin)
        {
            let tol = if *name == "dA" { 3e-4 } else { 1e-4 };
            assert_close(r, f, tol, &format!("cpu (b, t, heads, p, groups, n)={shape:?}: {name}"));
            assert_close(r, tw, 1e-10, &format!("chunked twin {shape:?}: {name}"));
        }
    }
}

/// Sums over heads and batch rows run in a fixed order after the loop: one thread and three
/// give the same bits.
#[test]
fn ssd_scan_on_the_cpu_is_the_same_for_any_thread_count() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        pool.install(|| {
            ssd_scan_run::<CpuAd>(&Default::default(), (3, 70, 4, 8, 2, 16), 7, |s| kernels::ssd_scan(s, 16))
        })
    };
    let one = run(1);
    for threads in [2, 3] {
        assert!(one == run(threads), "{threads} threads gave other bits than one thread");
    }
}

/// The CPU loops' own `exp` against f64's on a dense grid of its range: within 3 ulp
/// (relative 3.6e-7); clamped, not ∞ or 0, outside it.
#[test]
fn the_cpu_loops_exp_is_within_three_ulp() {
    use archlab::kernels::activation_cpu::exp;
    let mut worst = 0f64;
    for i in 0..=1_000_000 {
        let x = -87.0 + 175.0 * i as f32 / 1e6;
        let exact = (x as f64).exp();
        worst = worst.max((exp(x) as f64 - exact).abs() / exact);
    }
    assert!(worst < 3.6e-7, "worst relative error {worst:e}");
    for x in [-1e4f32, -100.0, 100.0, 1e4] {
        assert!(exp(x).is_finite() && exp(x) > 0.0, "exp({x}) = {}", exp(x));
    }
}

/// `[y, dx]` of the loss Σ y·w for SiLU computed by `silu`, on a `[2, rows, width]` input:
/// N(0, 3²) with a few values far in each tail (±30, ±100, past where `e⁻ˣ` overflows f32), so
/// that σ's saturated ends are checked too.
fn silu_run<B: AutodiffBackend>(
    dev: &B::Device,
    (rows, width): (usize, usize),
    seed: u64,
    silu: impl Fn(Tensor<B, 3>) -> Tensor<B, 3>,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let len = 2 * rows * width;
    let mut x: Vec<f32> = (0..len).map(|_| (3.0 * rng.normal()) as f32).collect();
    for (i, extreme) in [30.0f32, -30.0, 100.0, -100.0].into_iter().enumerate() {
        x[i * len / 4] = extreme;
    }
    let w: Vec<f32> = (0..len).map(|_| rng.normal() as f32).collect();
    let t3 = |v: Vec<f32>| Tensor::<B, 3>::from_data(TensorData::new(v, [2, rows, width]), dev);
    let x = t3(x).require_grad();
    let y = silu(x.clone());
    let grads = (y.clone() * t3(w)).sum().backward();
    vec![host(y), host(x.grad(&grads).expect("a gradient"))]
}

/// The CPU backend's SiLU loop (`crates/cpu-loops/src/activation.rs`, its own `exp`) against
/// the plain ops in f64, value and gradient, within 1e-6 relative (the `exp` is good to 3 ulp);
/// the same bits for one thread and two.
#[test]
fn silu_on_the_cpu_matches_the_plain_ops() {
    assert!(<CpuAd as Backend>::FUSED_SILU && !<Cpu64Ad as Backend>::FUSED_SILU);
    for (i, shape) in [(1, 2), (3, 7), (100, 218), (64, 1000)].into_iter().enumerate() {
        let fused = silu_run::<CpuAd>(&Default::default(), shape, 40 + i as u64, kernels::silu);
        let reference = silu_run::<Cpu64Ad>(
            &Default::default(),
            shape,
            40 + i as u64,
            archlab::kernels::activation::silu,
        );
        for ((name, f), r) in ["y", "dx"].iter().zip(&fused).zip(&reference) {
            assert_close(r, f, 1e-6, &format!("cpu (rows, width)={shape:?}: {name}"));
        }
    }
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        pool.install(|| silu_run::<CpuAd>(&Default::default(), (64, 1000), 3, kernels::silu))
    };
    assert!(run(1) == run(2), "the loop's results depend on the number of threads");
}

/// `[y, dx, dw]` of the loss Σ y·g for `y = matmul(x, w)`, `x` `[m, k]` (stored `[k, m]` and
/// handed over transposed when `x_transposed`, as a backward hands its operands), `w` `[k, n]`.
fn matmul_run<B: AutodiffBackend>(
    dev: &B::Device,
    (m, k, n): (usize, usize, usize),
    seed: u64,
    x_transposed: bool,
    matmul: impl Fn(Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 2>,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut tensor = |shape: [usize; 2]| {
        let data: Vec<f32> = (0..shape[0] * shape[1]).map(|_| rng.normal() as f32).collect();
        Tensor::<B, 2>::from_data(TensorData::new(data, shape), dev)
    };
    let x = if x_transposed { tensor([k, m]) } else { tensor([m, k]) }.require_grad();
    let w = tensor([k, n]).require_grad();
    let g = tensor([m, n]);
    let y = matmul(if x_transposed { x.clone().transpose() } else { x.clone() }, w.clone());
    let grads = (y.clone() * g).sum().backward();
    vec![host(y), host(x.grad(&grads).expect("dx")), host(w.grad(&grads).expect("dw"))]
}

/// The CPU backend runs the model's 2-D matmuls itself, on `gemm` with rayon's threads
/// (`crates/cpu-loops/src/matmul.rs`), forward and backward: against the f64 product, values and
/// gradients, from one element to sizes `gemm` splits over threads, with a transposed operand;
/// the same bits for one thread and two.
#[test]
fn matmuls_on_the_cpu_match_the_f64_product_for_any_thread_count() {
    assert!(<CpuAd as Backend>::own_matmul() && !<Cpu64Ad as Backend>::own_matmul());
    let cases =
        [((1, 1, 1), false), ((37, 45, 29), false), ((128, 128, 235), true), ((200, 300, 150), false)];
    for (i, (shape, transposed)) in cases.into_iter().enumerate() {
        let seed = 80 + i as u64;
        let fused = matmul_run::<CpuAd>(&Default::default(), shape, seed, transposed, kernels::matmul);
        let reference =
            matmul_run::<Cpu64Ad>(&Default::default(), shape, seed, transposed, |a, b| a.matmul(b));
        // f32 sums of up to 300 products of N(0, 1) values: ~1e-5 of error relative to 1 + |y|
        // is f32's own; 1e-4 as for the other kernels.
        for ((name, f), r) in ["y", "dx", "dw"].iter().zip(&fused).zip(&reference) {
            assert_close(r, f, 1e-4, &format!("cpu (m, k, n)={shape:?} transposed={transposed}: {name}"));
        }
    }
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        pool.install(|| matmul_run::<CpuAd>(&Default::default(), (200, 300, 150), 3, true, kernels::matmul))
    };
    assert!(run(1) == run(2), "the matmul's results depend on the number of threads");
}

/// `[out, dq, dk, dv]` of the loss Σ out·w for causal attention computed by `attend`. With
/// `token_major`, q, k and v are stored `[b, t, heads, hd]` and handed over as `[b, heads, t, hd]`
/// views with axes 1 and 2 swapped, as the model's projections give them (the gradients are
/// reported in `[b, heads, t, hd]` order either way).
fn attention_run<B: AutodiffBackend>(
    dev: &B::Device,
    shapes: (usize, usize, usize, usize, usize),
    seed: u64,
    token_major: bool,
    attend: impl Fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>,
) -> Vec<Vec<f64>> {
    let (b, h, kv, t, hd) = shapes;
    let mut rng = Rng::new(seed);
    let mut tensor = |shape: [usize; 4]| {
        let data: Vec<f32> = (0..shape.iter().product()).map(|_| rng.normal() as f32).collect();
        Tensor::<B, 4>::from_data(TensorData::new(data, shape), dev)
    };
    let leaf = |x: Tensor<B, 4>| match token_major {
        true => Tensor::<B, 4>::from_data(x.swap_dims(1, 2).into_data(), dev).require_grad(),
        false => x.require_grad(),
    };
    let (q, k, v) = (leaf(tensor([b, h, t, hd])), leaf(tensor([b, kv, t, hd])), leaf(tensor([b, kv, t, hd])));
    let w = tensor([b, h, t, hd]);
    let heads = |x: &Tensor<B, 4>| if token_major { x.clone().swap_dims(1, 2) } else { x.clone() };
    let out = attend(heads(&q), heads(&k), heads(&v));
    let grads = (out.clone() * w).sum().backward();
    let g = |x: &Tensor<B, 4>| {
        let grad = x.grad(&grads).expect("a gradient for q, k and v");
        host(if token_major { grad.swap_dims(1, 2) } else { grad })
    };
    vec![host(out), g(&q), g(&k), g(&v)]
}

/// (b, h, kv, t, hd, window): one token; lengths that leave the last tile part-empty; GQA
/// groups of 1, 2 and 4; head dims 16, 64 and 128; windows shorter and longer than t.
const ATTENTION_CASES: [(usize, usize, usize, usize, usize, usize); 6] = [
    (1, 2, 1, 1, 64, 0),
    (2, 4, 2, 77, 64, 0),
    (1, 2, 2, 45, 128, 0),
    (2, 4, 1, 100, 64, 16),
    (1, 2, 2, 33, 64, 40),
    (1, 4, 4, 70, 16, 7),
];

/// A window of one: every token sees only itself.
const WINDOW_ONE: (usize, usize, usize, usize, usize, usize) = (1, 2, 1, 20, 64, 1);

/// The fused attention on `B` against the plain-ops masked softmax in f64 on the CPU.
fn check_attention<B: AutodiffBackend>(dev: &B::Device, device_name: &str) {
    assert!(B::FUSED_ATTENTION, "{device_name}: expected fused attention on this backend");
    for (i, &(b, h, kv, t, hd, window)) in ATTENTION_CASES.iter().chain([&WINDOW_ONE]).enumerate() {
        let shapes = (b, h, kv, t, hd);
        let seed = 200 + i as u64;
        let fused =
            attention_run::<B>(dev, shapes, seed, false, |q, k, v| kernels::attention(q, k, v, window));
        let reference = attention_run::<Cpu64Ad>(&Default::default(), shapes, seed, false, |q, k, v| {
            archlab::kernels::attention::causal_attention(q, k, v, window)
        });
        for ((name, f), r) in ["out", "dq", "dk", "dv"].iter().zip(&fused).zip(&reference) {
            let what = format!("{device_name} b={b} h={h} kv={kv} t={t} hd={hd} window={window}: {name}");
            assert_close(r, f, 1e-4, &what);
        }
    }
}

/// The CPU backend's attention loop (`crates/cpu-loops/src/attention.rs`) held to the kernels'
/// standard; the same bits for one thread and two (its key and value gradients are summed over
/// each group of query heads in a fixed order), and for inputs stored token-major, as the
/// model's projections give them (read as views, with outputs and gradients laid out to match).
#[test]
fn attention_on_the_cpu_matches_the_masked_softmax_for_any_thread_count() {
    check_attention::<CpuAd>(&Default::default(), "cpu");
    let run = |threads: usize, token_major: bool| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        pool.install(|| {
            attention_run::<CpuAd>(&Default::default(), (2, 4, 2, 77, 64), 9, token_major, |q, k, v| {
                kernels::attention(q, k, v, 0)
            })
        })
    };
    assert!(run(1, false) == run(2, false), "the loop's results depend on the number of threads");
    assert!(run(2, true) == run(2, false), "the loop's results depend on its inputs' layout");
}

/// `[y, dx]` of the loss Σ y·w for the rotary embedding computed by `rotate` on a
/// `[2, 3, t, hd]` input, with tables of random angles for `rotary` channels (each angle in
/// both halves of its row, as `Rope` builds them).
fn rope_run<B: AutodiffBackend>(
    dev: &B::Device,
    (t, hd, rotary): (usize, usize, usize),
    seed: u64,
    rotate: impl Fn(Tensor<B, 4>, Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 4>,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let shape = [2, 3, t, hd];
    let len = shape.iter().product();
    let mut normal = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
    let (x, w) = (normal(len), normal(len));
    let angles: Vec<f32> = normal(t * rotary / 2).into_iter().map(|a| 4.0 * a).collect();
    let table = |f: fn(f32) -> f32| -> Tensor<B, 2> {
        let rows = angles
            .chunks(rotary / 2)
            .flat_map(|row| row.iter().chain(row).map(|&a| f(a)).collect::<Vec<_>>());
        Tensor::from_data(TensorData::new(rows.collect::<Vec<f32>>(), [t, rotary]), dev)
    };
    let t4 = |v: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(v, shape), dev);
    let x = t4(x).require_grad();
    let y = rotate(x.clone(), table(f32::cos), table(f32::sin));
    let grads = (y.clone() * t4(w)).sum().backward();
    vec![host(y), host(x.grad(&grads).expect("a gradient"))]
}

/// `x`'s values as `[b, h, t, hd]` heads stored token-major: `x` read as `[b, t, h, hd]`, seen
/// through swapped axes 1 and 2.
fn token_major_view<B: burn::tensor::backend::Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [b, h, t, hd] = x.dims();
    x.reshape([b, t, h, hd]).swap_dims(1, 2)
}

/// The CPU backend's rotary embedding loop (`crates/cpu-loops/src/rope.rs`) against the plain
/// ops in f64, value and gradient: whole and partial rotation (Qwen3-Next's factor 0.25), one
/// position and several; the same bits for one thread and two.
#[test]
fn rope_on_the_cpu_matches_the_plain_ops() {
    assert!(<CpuAd as Backend>::FUSED_ROPE && !<Cpu64Ad as Backend>::FUSED_ROPE);
    for (i, sizes) in [(1, 8, 8), (37, 64, 64), (20, 64, 16), (9, 6, 2)].into_iter().enumerate() {
        let fused = rope_run::<CpuAd>(&Default::default(), sizes, 60 + i as u64, kernels::rope);
        let reference = rope_run::<Cpu64Ad>(&Default::default(), sizes, 60 + i as u64, |x, cos, sin| {
            kernels::rope::rope(x, cos.unsqueeze(), sin.unsqueeze())
        });
        for ((name, f), r) in ["y", "dx"].iter().zip(&fused).zip(&reference) {
            assert_close(r, f, 1e-6, &format!("cpu (t, hd, rotary)={sizes:?}: {name}"));
        }
    }
    // Heads stored token-major, as attention's come from their projection (read as a view, the
    // result laid out to match).
    let fused = rope_run::<CpuAd>(&Default::default(), (37, 64, 16), 70, |x, cos, sin| {
        kernels::rope(token_major_view(x), cos, sin)
    });
    let reference = rope_run::<Cpu64Ad>(&Default::default(), (37, 64, 16), 70, |x, cos, sin| {
        kernels::rope::rope(token_major_view(x), cos.unsqueeze(), sin.unsqueeze())
    });
    for ((name, f), r) in ["y", "dx"].iter().zip(&fused).zip(&reference) {
        assert_close(r, f, 1e-6, &format!("cpu token-major: {name}"));
    }
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        pool.install(|| rope_run::<CpuAd>(&Default::default(), (50, 32, 32), 3, kernels::rope))
    };
    assert!(run(1) == run(2), "the loop's results depend on the number of threads");
}

#[cfg(feature = "wgpu")]
#[test]
fn attention_kernel_on_wgpu_matches_the_masked_softmax() {
    type B = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    match archlab::device::wgpu_device() {
        Some(dev) => check_attention::<B>(&dev, "wgpu"),
        None => no_wgpu_adapter(),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn attention_kernel_on_cuda_matches_the_masked_softmax() {
    type B = burn::backend::Autodiff<archlab::device::CudaBackend>;
    if !cuda_usable() {
        return;
    }
    check_attention::<B>(&Default::default(), "cuda");
}

/// `[nll, d_logits]` of the loss Σ nll·w for the per-row cross-entropy computed by `nll`.
fn cross_entropy_run<B: AutodiffBackend>(
    dev: &B::Device,
    (n, v): (usize, usize),
    seed: u64,
    to_bf16: bool,
    nll: impl Fn(Tensor<B, 2>, Tensor<B, 1, Int>) -> Tensor<B, 1>,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    // Logits of a trained model's spread (a few nats), with rows shifted far from zero so
    // that the kernel's max-subtraction matters; rounded to bf16's values when `to_bf16`.
    let data: Vec<f32> = (0..n * v)
        .map(|i| (rng.normal() * 3.0 + (i / v % 7) as f64 * 20.0) as f32)
        .map(|x| if to_bf16 { round_to_bf16(x) } else { x })
        .collect();
    let logits = Tensor::<B, 2>::from_data(TensorData::new(data, [n, v]), dev).require_grad();
    let targets: Vec<i64> = (0..n).map(|_| rng.below(v) as i64).collect();
    let targets = Tensor::<B, 1, Int>::from_data(TensorData::new(targets, [n]), dev);
    let w: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    let w = Tensor::<B, 1>::from_data(TensorData::new(w, [n]), dev);
    let out = nll(logits.clone(), targets);
    let grads = (out.clone() * w).sum().backward();
    vec![host(out), host(logits.grad(&grads).expect("a gradient for the logits"))]
}

/// The bf16 value nearest `x` (round to nearest, ties to even), as an f32.
fn round_to_bf16(x: f32) -> f32 {
    let bits = x.to_bits();
    f32::from_bits((bits + 0x7fff + ((bits >> 16) & 1)) & 0xffff_0000)
}

/// (rows, vocab): one row; a vocabulary smaller than a cube's 256 units, and one of 1 and 3;
/// vocabularies that are not a multiple of 256; more rows than wgpu's 65 535 cubes, so that
/// the kernels' row loop runs twice.
const CROSS_ENTROPY_CASES: [(usize, usize); 6] =
    [(1, 300), (37, 1000), (5, 257), (130, 50), (3, 1), (65_600, 3)];

/// The fused cross-entropy on `B` against the plain-ops log-softmax in f64 on the CPU. The
/// tolerance is f32's resolution at the test's largest logits (|x| ≈ 130, where one ulp is
/// 1.5e-5, so `exp(x − lse)` carries ~1e-5 relative error before any summation), the same
/// 1e-4 as the other kernels.
fn check_cross_entropy<B: AutodiffBackend>(dev: &B::Device, device_name: &str) {
    assert!(B::FUSED_CROSS_ENTROPY, "{device_name}: expected a fused cross-entropy on this backend");
    for (i, &shape) in CROSS_ENTROPY_CASES.iter().enumerate() {
        let seed = 300 + i as u64;
        let fused = cross_entropy_run::<B>(dev, shape, seed, false, kernels::cross_entropy);
        let reference = cross_entropy_run::<Cpu64Ad>(&Default::default(), shape, seed, false, token_nll);
        for ((name, f), r) in ["nll", "d_logits"].iter().zip(&fused).zip(&reference) {
            assert_close(r, f, 1e-4, &format!("{device_name} rows={} vocab={}: {name}", shape.0, shape.1));
        }
    }
}

/// The CPU backend's cross-entropy loop (`crates/cpu-loops/src/cross_entropy.rs`) held to the
/// kernels' standard, and the same bits for one thread and two.
#[test]
fn cross_entropy_on_the_cpu_matches_the_log_softmax_for_any_thread_count() {
    check_cross_entropy::<CpuAd>(&Default::default(), "cpu");
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        pool.install(|| {
            cross_entropy_run::<CpuAd>(&Default::default(), (300, 517), 5, false, kernels::cross_entropy)
        })
    };
    assert!(run(1) == run(2), "the loop's results depend on the number of threads");
}

#[cfg(feature = "wgpu")]
#[test]
fn cross_entropy_kernel_on_wgpu_matches_the_log_softmax() {
    type B = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    match archlab::device::wgpu_device() {
        Some(dev) => check_cross_entropy::<B>(&dev, "wgpu"),
        None => no_wgpu_adapter(),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cross_entropy_kernel_on_cuda_matches_the_log_softmax() {
    type B = burn::backend::Autodiff<archlab::device::CudaBackend>;
    if !cuda_usable() {
        return;
    }
    check_cross_entropy::<B>(&Default::default(), "cuda");
}

/// Under bf16 the kernel reads the logits as bf16 and returns a bf16 gradient: against the
/// f64 twin on the same (bf16-rounded) logits, the loss is as exact as fp32 accumulation
/// allows and the gradient is within bf16's rounding (2⁻⁸).
#[cfg(feature = "cuda")]
#[test]
fn cross_entropy_kernel_on_cuda_reads_bf16_logits() {
    type B = burn::backend::Autodiff<archlab::device::CudaBackend>;
    if !cuda_usable() {
        return;
    }
    let bf16 = |l: Tensor<B, 2>, t| kernels::cross_entropy(l.cast(burn::tensor::DType::BF16), t);
    for (i, &shape) in CROSS_ENTROPY_CASES.iter().take(4).enumerate() {
        let seed = 400 + i as u64;
        let fused = cross_entropy_run::<B>(&Default::default(), shape, seed, true, bf16);
        let reference = cross_entropy_run::<Cpu64Ad>(&Default::default(), shape, seed, true, token_nll);
        assert_close(&reference[0], &fused[0], 1e-4, &format!("cuda bf16 {shape:?}: nll"));
        assert_close(&reference[1], &fused[1], 4e-3, &format!("cuda bf16 {shape:?}: d_logits"));
    }
}

/// `[y, dx, dweight]` of the loss Σ y·w for the RMSNorm computed by `norm`.
fn rms_norm_run<B: AutodiffBackend>(
    dev: &B::Device,
    (b, t, d): (usize, usize, usize),
    seed: u64,
    norm: impl Fn(Tensor<B, 3>, Tensor<B, 1>) -> Tensor<B, 3>,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut values =
        |len: usize, mean: f64| (0..len).map(|_| (mean + rng.normal()) as f32).collect::<Vec<_>>();
    // Rows of different scales, so that each row's own 1/rms matters.
    let x: Vec<f32> =
        values(b * t * d, 0.0).iter().enumerate().map(|(i, v)| v * (1 + i / d % 5) as f32).collect();
    let x = Tensor::<B, 3>::from_data(TensorData::new(x, [b, t, d]), dev).require_grad();
    let weight = Tensor::<B, 1>::from_data(TensorData::new(values(d, 1.0), [d]), dev).require_grad();
    let w = Tensor::<B, 3>::from_data(TensorData::new(values(b * t * d, 0.0), [b, t, d]), dev);
    let y = norm(x.clone(), weight.clone());
    let grads = (y.clone() * w).sum().backward();
    vec![
        host(y),
        host(x.grad(&grads).expect("a gradient for x")),
        host(weight.grad(&grads).expect("a gradient for the weight")),
    ]
}

/// (b, t, d): one row of one channel; widths below, at and past a cube's 128 units and not a
/// multiple of it; more rows than the backward's 1024 cubes (each then sums several rows into
/// its partial weight gradient) and than wgpu's 65 535 forward cubes.
const RMS_NORM_CASES: [(usize, usize, usize); 6] =
    [(1, 1, 1), (2, 7, 7), (1, 33, 128), (3, 50, 130), (2, 700, 1000), (1, 66_000, 2)];

/// The fused RMSNorm on `B` against the plain-ops twin in f64 on the CPU.
fn check_rms_norm<B: AutodiffBackend>(dev: &B::Device, device_name: &str) {
    assert!(B::FUSED_RMS_NORM, "{device_name}: expected a fused RMSNorm on this backend");
    for (i, &shape) in RMS_NORM_CASES.iter().enumerate() {
        let seed = 500 + i as u64;
        let fused = rms_norm_run::<B>(dev, shape, seed, |x, w| kernels::rms_norm(x, w, 1e-5));
        let reference =
            rms_norm_run::<Cpu64Ad>(&Default::default(), shape, seed, |x, w| norm::rms_norm(x, w, 1e-5));
        for ((name, f), r) in ["y", "dx", "dweight"].iter().zip(&fused).zip(&reference) {
            assert_close(r, f, 1e-4, &format!("{device_name} (b, t, d)={shape:?}: {name}"));
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn rms_norm_kernel_on_wgpu_matches_the_plain_ops() {
    type B = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    match archlab::device::wgpu_device() {
        Some(dev) => check_rms_norm::<B>(&dev, "wgpu"),
        None => no_wgpu_adapter(),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn rms_norm_kernel_on_cuda_matches_the_plain_ops() {
    type B = burn::backend::Autodiff<archlab::device::CudaBackend>;
    if !cuda_usable() {
        return;
    }
    check_rms_norm::<B>(&Default::default(), "cuda");
}

/// Two residual sublayers as a model chains them, with `add_norm` the residual add and
/// RMSNorm: `(s1, y1) = add_norm(r, d, w1)`, then `(s2, y2) = add_norm(s1, y1·u, w2)`, the
/// branch `y1·u` standing in for a mixer. Returns `[s2, y2, dr, dd, dw1, dw2, du]` of the loss
/// Σ y2·g. `s1` has two uses, the first norm and the second add, so its gradient has two
/// sources (the fused backward adds one into the other); `s2` has one.
fn add_rms_norm_run<B: AutodiffBackend>(
    dev: &B::Device,
    (b, t, d): (usize, usize, usize),
    seed: u64,
    add_norm: impl Fn(Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 1>) -> (Tensor<B, 3>, Tensor<B, 3>),
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut values =
        |len: usize, mean: f64| (0..len).map(|_| (mean + rng.normal()) as f32).collect::<Vec<_>>();
    let mut tensor3 =
        |mean: f64| Tensor::<B, 3>::from_data(TensorData::new(values(b * t * d, mean), [b, t, d]), dev);
    // Rows of different scales, so that each row's own 1/rms matters.
    let scale: Vec<f32> = (0..b * t * d).map(|i| (1 + i / d % 5) as f32).collect();
    let scale = Tensor::<B, 3>::from_data(TensorData::new(scale, [b, t, d]), dev);
    let residual = (tensor3(0.0) * scale).detach().require_grad();
    let delta = tensor3(0.0).require_grad();
    let u = tensor3(0.0).require_grad();
    let g = tensor3(0.0);
    let mut weight = || Tensor::<B, 1>::from_data(TensorData::new(values(d, 1.0), [d]), dev).require_grad();
    let (w1, w2) = (weight(), weight());
    let (s1, y1) = add_norm(residual.clone(), delta.clone(), w1.clone());
    let (s2, y2) = add_norm(s1, y1 * u.clone(), w2.clone());
    let grads = (y2.clone() * g).sum().backward();
    let grad3 = |x: &Tensor<B, 3>| host(x.grad(&grads).expect("a gradient for every operand"));
    let grad1 = |x: &Tensor<B, 1>| host(x.grad(&grads).expect("a gradient for every weight"));
    vec![host(s2), host(y2), grad3(&residual), grad3(&delta), grad1(&w1), grad1(&w2), grad3(&u)]
}

/// The fused residual add + RMSNorm on `B` against the plain add and norm in f64 on the CPU.
fn check_add_rms_norm<B: AutodiffBackend>(dev: &B::Device, device_name: &str) {
    assert!(B::FUSED_RMS_NORM, "{device_name}: expected a fused RMSNorm on this backend");
    for (i, &shape) in RMS_NORM_CASES.iter().enumerate() {
        let seed = 550 + i as u64;
        let fused = add_rms_norm_run::<B>(dev, shape, seed, |r, d, w| kernels::add_rms_norm(r, d, w, 1e-5));
        let reference = add_rms_norm_run::<Cpu64Ad>(&Default::default(), shape, seed, |r, d, w| {
            let sum = r + d;
            (sum.clone(), norm::rms_norm(sum, w, 1e-5))
        });
        let names = ["sum", "y", "d_residual", "d_delta", "d_weight1", "d_weight2", "d_branch"];
        for ((name, f), r) in names.iter().zip(&fused).zip(&reference) {
            assert_close(r, f, 1e-4, &format!("{device_name} (b, t, d)={shape:?}: {name}"));
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn add_rms_norm_kernel_on_wgpu_matches_the_plain_ops() {
    type B = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    match archlab::device::wgpu_device() {
        Some(dev) => check_add_rms_norm::<B>(&dev, "wgpu"),
        None => no_wgpu_adapter(),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn add_rms_norm_kernel_on_cuda_matches_the_plain_ops() {
    type B = burn::backend::Autodiff<archlab::device::CudaBackend>;
    if !cuda_usable() {
        return;
    }
    check_add_rms_norm::<B>(&Default::default(), "cuda");
}

/// The CPU backend's RMSNorms (plain, after a residual add, and gated) are host loops
/// (`crates/cpu-loops/src/norm.rs`), held to the kernels' standard, and their weight gradients'
/// sums over rows run in a fixed order.
#[test]
fn rms_norms_on_the_cpu_match_the_plain_ops_for_any_thread_count() {
    check_rms_norm::<CpuAd>(&Default::default(), "cpu");
    check_add_rms_norm::<CpuAd>(&Default::default(), "cpu");
    check_gated_rms_norm::<CpuAd>(&Default::default(), "cpu");
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        pool.install(|| {
            let dev = Default::default();
            let mut all = rms_norm_run::<CpuAd>(&dev, (3, 90, 40), 1, |x, w| kernels::rms_norm(x, w, 1e-5));
            all.extend(gated_rms_norm_run::<CpuAd>(&dev, (3, 90, 40, 10), 2, |y, z, w, g| {
                kernels::gated_rms_norm(y, z, w, g, 1e-5)
            }));
            all
        })
    };
    assert!(run(1) == run(2), "the host loops' results depend on the number of threads");
}

/// `[out, dy, dz, dweight]` of the loss Σ out·w for Mamba-2's gated RMSNorm computed by `norm`
/// (groups of `group` channels).
fn gated_rms_norm_run<B: AutodiffBackend>(
    dev: &B::Device,
    (b, t, di, group): (usize, usize, usize, usize),
    seed: u64,
    norm: impl Fn(Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 1>, usize) -> Tensor<B, 3>,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut values = |len: usize, mean: f64, scale: f64| {
        (0..len).map(|_| (mean + scale * rng.normal()) as f32).collect::<Vec<_>>()
    };
    // Gates from deep in silu's negative tail to well into its linear part.
    let y = Tensor::<B, 3>::from_data(TensorData::new(values(b * t * di, 0.0, 1.0), [b, t, di]), dev)
        .require_grad();
    let z = Tensor::<B, 3>::from_data(TensorData::new(values(b * t * di, 0.0, 3.0), [b, t, di]), dev)
        .require_grad();
    let weight = Tensor::<B, 1>::from_data(TensorData::new(values(di, 1.0, 1.0), [di]), dev).require_grad();
    let w = Tensor::<B, 3>::from_data(TensorData::new(values(b * t * di, 0.0, 1.0), [b, t, di]), dev);
    let out = norm(y.clone(), z.clone(), weight.clone(), group);
    let grads = (out.clone() * w).sum().backward();
    vec![
        host(out),
        host(y.grad(&grads).expect("a gradient for y")),
        host(z.grad(&grads).expect("a gradient for z")),
        host(weight.grad(&grads).expect("a gradient for the weight")),
    ]
}

/// (b, t, di, group): one channel; three groups of 4; one group of a cube's 128 units; two
/// groups of 65 (part-empty cubes); four groups of 250 over 600 rows (several items per
/// backward cube); 66 000 rows of two groups of 2 (past wgpu's 65 535 forward cubes).
const GATED_RMS_NORM_CASES: [(usize, usize, usize, usize); 6] = [
    (1, 1, 1, 1),
    (2, 7, 12, 4),
    (1, 33, 128, 128),
    (3, 50, 130, 65),
    (2, 300, 1000, 250),
    (1, 66_000, 4, 2),
];

/// The fused gated RMSNorm on `B` against the plain-ops twin in f64 on the CPU.
fn check_gated_rms_norm<B: AutodiffBackend>(dev: &B::Device, device_name: &str) {
    assert!(B::FUSED_RMS_NORM, "{device_name}: expected a fused RMSNorm on this backend");
    for (i, &shape) in GATED_RMS_NORM_CASES.iter().enumerate() {
        let seed = 580 + i as u64;
        let fused =
            gated_rms_norm_run::<B>(dev, shape, seed, |y, z, w, g| kernels::gated_rms_norm(y, z, w, g, 1e-5));
        let reference = gated_rms_norm_run::<Cpu64Ad>(&Default::default(), shape, seed, |y, z, w, g| {
            archlab::kernels::norm::gated_rms_norm(y, z, w, g, 1e-5)
        });
        for ((name, f), r) in ["out", "dy", "dz", "dweight"].iter().zip(&fused).zip(&reference) {
            assert_close(r, f, 1e-4, &format!("{device_name} (b, t, di, group)={shape:?}: {name}"));
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn gated_rms_norm_kernel_on_wgpu_matches_the_plain_ops() {
    type B = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    match archlab::device::wgpu_device() {
        Some(dev) => check_gated_rms_norm::<B>(&dev, "wgpu"),
        None => no_wgpu_adapter(),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn gated_rms_norm_kernel_on_cuda_matches_the_plain_ops() {
    type B = burn::backend::Autodiff<archlab::device::CudaBackend>;
    if !cuda_usable() {
        return;
    }
    check_gated_rms_norm::<B>(&Default::default(), "cuda");
}

/// `[y, dx, dweight, dbias]` of the loss Σ y·w for the causal convolution computed by `conv`.
fn causal_conv_run<B: AutodiffBackend>(
    dev: &B::Device,
    (b, t, ch, k): (usize, usize, usize, usize),
    seed: u64,
    conv: impl Fn(Tensor<B, 3>, Tensor<B, 2>, Tensor<B, 1>) -> Tensor<B, 3>,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut values = |len: usize| (0..len).map(|_| rng.normal() as f32).collect::<Vec<_>>();
    let x = Tensor::<B, 3>::from_data(TensorData::new(values(b * t * ch), [b, t, ch]), dev).require_grad();
    let weight = Tensor::<B, 2>::from_data(TensorData::new(values(ch * k), [ch, k]), dev).require_grad();
    let bias = Tensor::<B, 1>::from_data(TensorData::new(values(ch), [ch]), dev).require_grad();
    let w = Tensor::<B, 3>::from_data(TensorData::new(values(b * t * ch), [b, t, ch]), dev);
    let y = conv(x.clone(), weight.clone(), bias.clone());
    let grads = (y.clone() * w).sum().backward();
    vec![
        host(y),
        host(x.grad(&grads).expect("a gradient for x")),
        host(weight.grad(&grads).expect("a gradient for the weight")),
        host(bias.grad(&grads).expect("a gradient for the bias")),
    ]
}

/// (b, t, ch, k): one step (every tap but the last reads the zero history); fewer steps than
/// taps; lengths past one and several 32-step blocks and not a multiple of them; channel
/// counts below, at and past a cube's 64; 2, 4 and 5 taps.
const CAUSAL_CONV_CASES: [(usize, usize, usize, usize); 6] =
    [(1, 1, 3, 4), (2, 3, 5, 4), (1, 33, 64, 4), (3, 70, 65, 4), (2, 129, 130, 2), (1, 64, 7, 5)];

/// The fused convolution on `B` against the plain-ops twin in f64 on the CPU.
fn check_causal_conv<B: AutodiffBackend>(dev: &B::Device, device_name: &str) {
    assert!(B::FUSED_CAUSAL_CONV, "{device_name}: expected a fused causal convolution on this backend");
    for (i, &shape) in CAUSAL_CONV_CASES.iter().enumerate() {
        let seed = 600 + i as u64;
        let fused = causal_conv_run::<B>(dev, shape, seed, kernels::causal_conv);
        let reference = causal_conv_run::<Cpu64Ad>(&Default::default(), shape, seed, conv::causal_conv);
        for ((name, f), r) in ["y", "dx", "dweight", "dbias"].iter().zip(&fused).zip(&reference) {
            assert_close(r, f, 1e-4, &format!("{device_name} (b, t, ch, k)={shape:?}: {name}"));
        }
    }
}

/// The CPU backend's convolution is a host loop (`crates/cpu-loops/src/conv.rs`), held to the
/// kernel's standard, and its weight gradient's sum over rows runs in a fixed order.
#[test]
fn causal_conv_on_the_cpu_matches_the_plain_ops_for_any_thread_count() {
    check_causal_conv::<CpuAd>(&Default::default(), "cpu");
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        pool.install(|| {
            causal_conv_run::<CpuAd>(&Default::default(), (5, 40, 33, 4), 3, kernels::causal_conv)
        })
    };
    assert!(run(1) == run(2), "the host loop's results depend on the number of threads");
}

#[cfg(feature = "wgpu")]
#[test]
fn causal_conv_kernel_on_wgpu_matches_the_plain_ops() {
    type B = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    match archlab::device::wgpu_device() {
        Some(dev) => check_causal_conv::<B>(&dev, "wgpu"),
        None => no_wgpu_adapter(),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn causal_conv_kernel_on_cuda_matches_the_plain_ops() {
    type B = burn::backend::Autodiff<archlab::device::CudaBackend>;
    if !cuda_usable() {
        return;
    }
    check_causal_conv::<B>(&Default::default(), "cuda");
}

/// `[entering, d_states, d_decay, d_h0]` of the loss Σ entering·w for the SSD state passing
/// computed by `pass`. A gradient the graph does not reach (the states of a single chunk) is 0.
fn state_passing_run<B: AutodiffBackend>(
    dev: &B::Device,
    (b, nc, h, p, n): (usize, usize, usize, usize, usize),
    seed: u64,
    pass: impl Fn(Tensor<B, 5>, Tensor<B, 3>, Tensor<B, 4>) -> Tensor<B, 5>,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut normal = |len: usize| (0..len).map(|_| rng.normal() as f32).collect::<Vec<_>>();
    let states =
        Tensor::<B, 5>::from_data(TensorData::new(normal(b * nc * h * p * n), [b, nc, h, p, n]), dev);
    let h0 = Tensor::<B, 4>::from_data(TensorData::new(normal(b * h * p * n), [b, h, p, n]), dev);
    let w = Tensor::<B, 5>::from_data(TensorData::new(normal(b * nc * h * p * n), [b, nc, h, p, n]), dev);
    // Chunk decays exp(Σ Δ·A) lie in (0, 1].
    let decay: Vec<f32> = normal(b * nc * h).iter().map(|v| (-v.abs()).exp()).collect();
    let decay = Tensor::<B, 3>::from_data(TensorData::new(decay, [b, nc, h]), dev);
    let (states, decay, h0) = (states.require_grad(), decay.require_grad(), h0.require_grad());
    let entering = pass(states.clone(), decay.clone(), h0.clone());
    let grads = (entering.clone() * w).sum().backward();
    let grad = |len: usize, g: Option<Vec<f64>>| g.unwrap_or_else(|| vec![0.0; len]);
    vec![
        host(entering),
        grad(b * nc * h * p * n, states.grad(&grads).map(host)),
        grad(b * nc * h, decay.grad(&grads).map(host)),
        grad(b * h * p * n, h0.grad(&grads).map(host)),
    ]
}

/// (b, nc, h, p, n): one chunk; state sizes (p·n) below, past and at several multiples of a
/// cube's 128 units (1, 32, 320, 8192); 70 chunks.
const STATE_PASSING_CASES: [(usize, usize, usize, usize, usize); 4] =
    [(1, 1, 1, 1, 1), (2, 3, 2, 4, 8), (1, 70, 3, 16, 20), (2, 5, 1, 64, 128)];

/// The fused state passing on `B` against the plain-ops loop in f64 on the CPU.
fn check_state_passing<B: AutodiffBackend>(dev: &B::Device, device_name: &str) {
    assert!(B::FUSED_STATE_PASSING, "{device_name}: expected a fused SSD state passing on this backend");
    for (i, &shape) in STATE_PASSING_CASES.iter().enumerate() {
        let seed = 700 + i as u64;
        let fused = state_passing_run::<B>(dev, shape, seed, kernels::ssd_state_passing);
        let reference =
            state_passing_run::<Cpu64Ad>(&Default::default(), shape, seed, state_passing::pass_states);
        for ((name, f), r) in ["entering", "d_states", "d_decay", "d_h0"].iter().zip(&fused).zip(&reference) {
            assert_close(r, f, 1e-4, &format!("{device_name} (b, nc, h, p, n)={shape:?}: {name}"));
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn ssd_state_passing_kernel_on_wgpu_matches_the_plain_loop() {
    type B = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    match archlab::device::wgpu_device() {
        Some(dev) => check_state_passing::<B>(&dev, "wgpu"),
        None => no_wgpu_adapter(),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn ssd_state_passing_kernel_on_cuda_matches_the_plain_loop() {
    type B = burn::backend::Autodiff<archlab::device::CudaBackend>;
    if !cuda_usable() {
        return;
    }
    check_state_passing::<B>(&Default::default(), "cuda");
}

/// `[inverse, d_raw]` of the loss Σ (I + M)⁻¹·w for `M = strictly_lower(raw)` of shape
/// `[n, C, C]`, inverted by `invert`. `raw` is what the delta rule's chunked form inverts,
/// `β_i (k_i·k_j) exp(G_i − G_j)`, from random unit keys (dk = 16), β ∈ (0, 2) (negative
/// eigenvalues allowed: the harder case) and, in every other matrix, a decay (DeltaNet's none
/// in the rest). Such matrices keep `|T|` near 1; arbitrary N(0, ½) entries would give `|T|` of
/// 10⁴ at C = 100, where f32 itself is off by 4e-4 against f64, whatever computes it.
fn tri_inverse_run<B: AutodiffBackend>(
    dev: &B::Device,
    (n, c): (usize, usize),
    seed: u64,
    invert: impl Fn(Tensor<B, 3>) -> Tensor<B, 3>,
) -> Vec<Vec<f64>> {
    let raw = delta_rule_gram(n, c, seed);
    let mut rng = Rng::new(seed + 1);
    let w: Vec<f32> = (0..n * c * c).map(|_| rng.normal() as f32).collect();
    let raw = Tensor::<B, 3>::from_data(TensorData::new(raw, [n, c, c]), dev).require_grad();
    let w = Tensor::<B, 3>::from_data(TensorData::new(w, [n, c, c]), dev);
    let upper: Vec<bool> = (0..n * c * c).map(|i| (i % (c * c)) % c >= (i % (c * c)) / c).collect();
    let upper = Tensor::<B, 3, burn::tensor::Bool>::from_data(TensorData::new(upper, [n, c, c]), dev);
    let inverse = invert(raw.clone().mask_fill(upper, 0.0));
    let grads = (inverse.clone() * w).sum().backward();
    vec![host(inverse), raw.grad(&grads).map(host).unwrap()]
}

/// `[n, C, C]` matrices `β_i (k_i·k_j) exp(G_i − G_j)` (all of them, not only the strictly lower
/// triangle), as described at [`tri_inverse_run`].
fn delta_rule_gram(n: usize, c: usize, seed: u64) -> Vec<f32> {
    const DK: usize = 16;
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(n * c * c);
    for mat in 0..n {
        let keys: Vec<Vec<f64>> = (0..c)
            .map(|_| {
                let k: Vec<f64> = (0..DK).map(|_| rng.normal()).collect();
                let norm = k.iter().map(|v| v * v).sum::<f64>().sqrt();
                k.into_iter().map(|v| v / norm).collect()
            })
            .collect();
        let beta: Vec<f64> = (0..c).map(|_| 2.0 * rng.uniform()).collect();
        let rate = 0.1 * (mat % 2) as f64;
        let mut cum = 0.0;
        let decay: Vec<f64> = (0..c)
            .map(|_| {
                cum -= rate * rng.normal().abs();
                cum
            })
            .collect();
        for i in 0..c {
            for j in 0..c {
                let dot: f64 = keys[i].iter().zip(&keys[j]).map(|(a, b)| a * b).sum();
                out.push((beta[i] * dot * (decay[i] - decay[j]).exp()) as f32);
            }
        }
    }
    out
}

/// (n, C): one 1 × 1 matrix; a chunk shorter than a cube's units; the default chunk (64);
/// longer chunks than units; many matrices.
const TRI_INVERSE_CASES: [(usize, usize); 5] = [(1, 1), (3, 5), (4, 64), (2, 100), (300, 8)];

/// `[out, dk, dv, dβ, dG]` of the loss Σ out·w for the UT transform computed by `transform`,
/// on `n` chunks of `c` tokens: random unit keys of width `dk`, N(0, 1) values of width `dv`,
/// β ∈ (0, 2) (negative eigenvalues allowed) and, in every other chunk, a decay (DeltaNet's
/// none in the rest), as the delta rule's chunked form passes them.
fn ut_transform_run<B: AutodiffBackend>(
    dev: &B::Device,
    (n, c, dk, dv): (usize, usize, usize, usize),
    seed: u64,
    transform: impl Fn(Tensor<B, 3>, Tensor<B, 3>, Tensor<B, 2>, Tensor<B, 2>) -> Tensor<B, 3>,
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut keys = Vec::with_capacity(n * c * dk);
    for _ in 0..n * c {
        let k: Vec<f64> = (0..dk).map(|_| rng.normal()).collect();
        let norm = k.iter().map(|v| v * v).sum::<f64>().sqrt();
        keys.extend(k.into_iter().map(|v| (v / norm) as f32));
    }
    let values: Vec<f32> = (0..n * c * dv).map(|_| rng.normal() as f32).collect();
    let beta: Vec<f32> = (0..n * c).map(|_| (2.0 * rng.uniform()) as f32).collect();
    let mut cum = Vec::with_capacity(n * c);
    for mat in 0..n {
        let (rate, mut g) = (0.3 * (mat % 2) as f64, 0.0);
        for _ in 0..c {
            g -= rate * rng.normal().abs();
            cum.push(g as f32);
        }
    }
    let w: Vec<f32> = (0..n * c * (dv + dk)).map(|_| rng.normal() as f32).collect();
    let t3 = |v: Vec<f32>, w: usize| Tensor::<B, 3>::from_data(TensorData::new(v, [n, c, w]), dev);
    let t2 = |v: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(v, [n, c]), dev).require_grad();
    let (k, v) = (t3(keys, dk).require_grad(), t3(values, dv).require_grad());
    let (beta, cum) = (t2(beta), t2(cum));
    let out = transform(k.clone(), v.clone(), beta.clone(), cum.clone());
    let grads = (out.clone() * t3(w, dv + dk)).sum().backward();
    let g3 = |t: &Tensor<B, 3>| host(t.grad(&grads).expect("a gradient for every operand"));
    let g2 = |t: &Tensor<B, 2>| host(t.grad(&grads).expect("a gradient for every operand"));
    vec![host(out), g3(&k), g3(&v), g2(&beta), g2(&cum)]
}

/// (n, C, dk, dv): one 1 × 1 chunk; a chunk shorter than a cube's units; the default chunk
/// (64); a chunk longer than the units (rows and columns loop); rows of `[U | W]` wider than the
/// units; more chunks than a grid row has cubes.
const UT_TRANSFORM_CASES: [(usize, usize, usize, usize); 6] =
    [(1, 1, 1, 1), (3, 5, 4, 6), (4, 64, 16, 32), (2, 100, 8, 8), (2, 16, 32, 64), (300, 8, 4, 4)];

/// The fused UT transform on `B` against the plain-ops twin in f64 on the CPU, values and
/// gradients of all four operands.
fn check_ut_transform<B: AutodiffBackend>(dev: &B::Device, device_name: &str) {
    assert!(B::FUSED_UT_TRANSFORM, "{device_name}: expected a fused UT transform on this backend");
    for (i, &shape) in UT_TRANSFORM_CASES.iter().enumerate() {
        let seed = 900 + i as u64;
        let fused = ut_transform_run::<B>(dev, shape, seed, kernels::ut_transform);
        let reference =
            ut_transform_run::<Cpu64Ad>(&Default::default(), shape, seed, ut_transform::ut_transform);
        for ((name, f), r) in ["[U | W]", "dk", "dv", "dβ", "dG"].iter().zip(&fused).zip(&reference) {
            assert_close(r, f, 1e-4, &format!("{device_name} (n, C, dk, dv)={shape:?}: {name}"));
        }
    }
}

/// The CPU backend's host loop against the twin, and bit for bit the same with one thread and
/// with two (each chunk is computed whole by one thread).
#[test]
fn ut_transform_host_loop_matches_the_twin_for_any_thread_count() {
    check_ut_transform::<CpuAd>(&Default::default(), "cpu");
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        pool.install(|| {
            ut_transform_run::<CpuAd>(&Default::default(), (6, 64, 16, 32), 5, kernels::ut_transform)
        })
    };
    assert!(run(1) == run(2), "the host loop's results depend on the number of threads");
}

/// `[out, s, du, dw, dq, dk, dattn, ddecay, ds0]` of a random weighting of both outputs for the delta rule's
/// pass over chunks computed by `pass`, on `b` sequences of `h` heads of `nc` chunks of `c`
/// tokens: N(0, 1) operands scaled as the chunked form's are (unit-scale rows), decays in
/// (0.5, 1] (and exactly 1 for every other head, DeltaNet's), a random entering state.
#[allow(clippy::type_complexity)]
fn delta_chunks_run<B: AutodiffBackend>(
    dev: &B::Device,
    (b, h, nc, c, dk, dv): (usize, usize, usize, usize, usize, usize),
    seed: u64,
    pass: impl Fn(
        Tensor<B, 5>,
        Tensor<B, 5>,
        Tensor<B, 5>,
        Tensor<B, 5>,
        Tensor<B, 5>,
        Tensor<B, 3>,
        Tensor<B, 4>,
    ) -> (Tensor<B, 5>, Tensor<B, 4>),
) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut normal =
        |n: usize, scale: f64| -> Vec<f32> { (0..n).map(|_| (scale * rng.normal()) as f32).collect() };
    let units = b * nc * h;
    let t5 = |v: Vec<f32>, w: usize| {
        Tensor::<B, 5>::from_data(TensorData::new(v, [b, nc, h, c, w]), dev).require_grad()
    };
    let key_scale = 1.0 / (dk as f64).sqrt();
    let u = t5(normal(units * c * dv, 1.0), dv);
    let w = t5(normal(units * c * dk, key_scale), dk);
    let q = t5(normal(units * c * dk, key_scale), dk);
    let k = t5(normal(units * c * dk, key_scale), dk);
    let attn = t5(normal(units * c * c, 1.0 / c as f64), c);
    let s0 = Tensor::<B, 4>::from_data(TensorData::new(normal(b * h * dk * dv, 1.0), [b, h, dk, dv]), dev)
        .require_grad();
    let mut rng = Rng::new(seed + 1);
    let decay: Vec<f32> =
        (0..units).map(|i| if (i % h) % 2 == 1 { 1.0 } else { (1.0 - 0.5 * rng.uniform()) as f32 }).collect();
    let decay = Tensor::<B, 3>::from_data(TensorData::new(decay, [b, nc, h]), dev).require_grad();
    let (out, s) = pass(u.clone(), w.clone(), q.clone(), k.clone(), attn.clone(), decay.clone(), s0.clone());
    let w_out =
        Tensor::<B, 5>::from_data(TensorData::new(normal(units * c * dv, 1.0), [b, nc, h, c, dv]), dev);
    let w_s = Tensor::<B, 4>::from_data(TensorData::new(normal(b * h * dk * dv, 1.0), [b, h, dk, dv]), dev);
    let grads = ((out.clone() * w_out).sum() + (s.clone() * w_s).sum()).backward();
    let g5 = |t: &Tensor<B, 5>| host(t.grad(&grads).expect("a gradient for every operand"));
    let g3 = host(decay.grad(&grads).expect("a gradient for every operand"));
    let g4 = host(s0.grad(&grads).expect("a gradient for every operand"));
    vec![host(out), host(s), g5(&u), g5(&w), g5(&q), g5(&k), g5(&attn), g3, g4]
}

/// (b, h, nc, C, dk, dv): one token in one chunk; chunks of awkward sizes; the default chunk
/// (64) with Gated DeltaNet's head widths; more heads than threads, one chunk each.
const DELTA_CHUNKS_CASES: [(usize, usize, usize, usize, usize, usize); 4] =
    [(1, 1, 1, 1, 1, 1), (2, 3, 3, 5, 4, 6), (1, 2, 4, 64, 32, 32), (3, 5, 1, 16, 8, 16)];

/// The CPU backend's host loop for the delta rule's pass over chunks against the plain-ops twin
/// in f64, values and gradients of all seven operands, and bit for bit the same with one thread
/// and with two (each (sequence, head) is computed whole by one thread).
#[test]
fn delta_chunks_host_loop_matches_the_twin_for_any_thread_count() {
    assert!(<CpuAd as Backend>::FUSED_DELTA_CHUNKS, "expected the CPU backend's host loop");
    let names = ["out", "s", "du", "dw", "dq", "dk", "dattn", "ddecay", "ds0"];
    for (i, &shape) in DELTA_CHUNKS_CASES.iter().enumerate() {
        let seed = 1300 + i as u64;
        let fused = delta_chunks_run::<CpuAd>(&Default::default(), shape, seed, kernels::delta_chunks);
        let reference =
            delta_chunks_run::<Cpu64Ad>(&Default::default(), shape, seed, delta_chunks::pass_chunks);
        for ((name, f), r) in names.iter().zip(&fused).zip(&reference) {
            assert_close(r, f, 1e-4, &format!("cpu (b, h, nc, C, dk, dv)={shape:?}: {name}"));
        }
    }
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("a thread pool");
        pool.install(|| {
            delta_chunks_run::<CpuAd>(&Default::default(), (2, 3, 3, 64, 16, 32), 7, kernels::delta_chunks)
        })
    };
    assert!(run(1) == run(2), "the host loop's results depend on the number of threads");
}

/// The twin is the inverse: `(I + M) · T = I` in f64, and forward substitution row by row
/// agrees with it (the kernel's algorithm, written out on the host).
#[test]
fn the_doubling_product_is_the_inverse() {
    for &(n, c) in &TRI_INVERSE_CASES {
        let t = tri_inverse_run::<Cpu64Ad>(&Default::default(), (n, c), 77, tri_inverse::unit_lower_inverse)
            .swap_remove(0);
        let raw: Vec<f64> = delta_rule_gram(n, c, 77).into_iter().map(f64::from).collect();
        for mat in 0..n {
            let at = |i: usize, j: usize| if j < i { raw[mat * c * c + i * c + j] } else { 0.0 };
            // Forward substitution, column by column.
            let mut x = vec![0.0f64; c * c];
            for j in 0..c {
                x[j * c + j] = 1.0;
                for i in j + 1..c {
                    x[i * c + j] = -at(i, j) - (j + 1..i).map(|r| at(i, r) * x[r * c + j]).sum::<f64>();
                }
            }
            let got = &t[mat * c * c..(mat + 1) * c * c];
            let worst = x.iter().zip(got).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-9, "(n, C)=({n}, {c}) matrix {mat}: substitution vs doubling {worst:e}");
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn ut_transform_kernel_on_wgpu_matches_the_twin() {
    type B = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    match archlab::device::wgpu_device() {
        Some(dev) => check_ut_transform::<B>(&dev, "wgpu"),
        None => no_wgpu_adapter(),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn ut_transform_kernel_on_cuda_matches_the_twin() {
    type B = burn::backend::Autodiff<archlab::device::CudaBackend>;
    if !cuda_usable() {
        return;
    }
    check_ut_transform::<B>(&Default::default(), "cuda");
}

/// Trains `cfg` on the CPU (plain-ops twins all the way) and on wgpu (the fused kernels) from
/// the same seed; the losses must follow each other step by step. A wrong backward would bend
/// the wgpu curve away within a few steps. Returns both runs' summaries.
#[cfg(feature = "wgpu")]
fn train_on_wgpu_and_cpu(
    cfg: &archlab::config::RunConfig,
    dev: &burn::backend::wgpu::WgpuDevice,
    name: &str,
) -> [archlab::train::metrics::Summary; 2] {
    use archlab::train::{TrainOptions, train};
    let run = |device: &str, on_gpu: bool| TrainOptions {
        run_dir: temp_dir(&format!("{name}-{device}")),
        resume: false,
        stop_after: None,
        progress: false,
        device_name: device.into(),
        on_gpu,
        device_memory: None,
        devices: 1,
    };
    let cpu = train::<CpuAd>(cfg, &Default::default(), &run("cpu", false)).unwrap();
    type Wgpu = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    let wgpu = train::<Wgpu>(cfg, dev, &run("wgpu", true)).unwrap();
    assert_eq!(cpu.losses.len(), wgpu.losses.len());
    for ((step, a), (_, b)) in cpu.losses.iter().zip(&wgpu.losses) {
        eprintln!("{name} step {step}: cpu {a:.6} wgpu {b:.6}");
        assert!((a - b).abs() < 1e-4 * a.abs().max(1.0), "{name} step {step}: cpu loss {a} vs wgpu {b}");
    }
    assert!(wgpu.losses.last().unwrap().1 < wgpu.losses[0].1, "{name}: the wgpu run's loss did not fall");
    [cpu.summary.expect("a summary"), wgpu.summary.expect("a summary")]
}

/// End to end: a hybrid with every kernel-backed mixer (attention, sliding-window attention,
/// Mamba-1, Mamba-2) trains on wgpu through the fused kernels with the CPU's losses.
#[cfg(feature = "wgpu")]
#[test]
fn a_hybrid_trains_on_wgpu_with_the_cpu_losses() {
    let Some(dev) = archlab::device::wgpu_device() else {
        return no_wgpu_adapter();
    };
    let mut cfg = small_config();
    cfg.model.pattern = "ALMS".into();
    cfg.model.window = 16;
    cfg.model.n_layers = 4;
    cfg.train.max_steps = 8;
    cfg.eval.every = 12;
    cfg.validate().unwrap();
    train_on_wgpu_and_cpu(&cfg, &dev, "hybrid");
}

/// End to end: a 3:1 Gated DeltaNet : gated attention hybrid with a DeltaNet layer (β ∈ (0, 2))
/// trains on wgpu through the fused triangular inverse (and the fused convolution, attention
/// and norms) with the CPU's losses; the chunk (8) leaves T = 20 two full chunks and a part.
#[cfg(feature = "wgpu")]
#[test]
fn a_gated_deltanet_hybrid_trains_on_wgpu_with_the_cpu_losses() {
    let Some(dev) = archlab::device::wgpu_device() else {
        return no_wgpu_adapter();
    };
    let mut cfg = small_config();
    cfg.model.pattern = "GGDA".into();
    cfg.model.n_layers = 4;
    cfg.model.attn_output_gate = true;
    cfg.model.qk_norm = true;
    cfg.model.gdn.head_dim = 8;
    cfg.model.gdn.chunk_size = 8;
    cfg.model.gdn.allow_neg_eigval = true;
    cfg.train.seq_len = 20;
    cfg.train.max_steps = 6;
    cfg.eval.every = 12;
    cfg.validate().unwrap();
    train_on_wgpu_and_cpu(&cfg, &dev, "gdn-hybrid");
}

/// End to end: an MoE model trains on wgpu through the batched dispatch (routing on the
/// device, its counts read by the trainer after each step's loss) with the CPU's losses
/// (grouped dispatch, routing on the host), and both runs count the same expert loads.
#[cfg(feature = "wgpu")]
#[test]
fn an_moe_trains_on_wgpu_with_the_cpu_losses_and_expert_loads() {
    let Some(dev) = archlab::device::wgpu_device() else {
        return no_wgpu_adapter();
    };
    let mut cfg = small_config();
    cfg.model.ffn = FfnKind::Moe;
    cfg.model.moe = MoeConfig { n_experts: 4, top_k: 2, capacity_factor: 1.0, ..MoeConfig::default() };
    cfg.train.max_steps = 6;
    cfg.eval.every = 12;
    cfg.validate().unwrap();
    let [cpu, wgpu] = train_on_wgpu_and_cpu(&cfg, &dev, "moe");
    // Per layer: 4 expert loads, evenness, dropped fraction, balance and z-loss.
    assert_eq!(cpu.diagnostics.len(), cfg.model.n_layers * 8);
    assert_eq!(cpu.diagnostics.len(), wgpu.diagnostics.len());
    for (c, w) in cpu.diagnostics.iter().zip(&wgpu.diagnostics) {
        assert_eq!((c.layer, &c.name), (w.layer, &w.name));
        if c.name.ends_with("loss") {
            assert!((c.value - w.value).abs() < 1e-5, "layer {}: {}", c.layer, c.name);
        } else {
            assert_eq!(c.value, w.value, "layer {}: {} (from the routing counts)", c.layer, c.name);
        }
    }
}

/// Router logits of `n` tokens over `e` experts; with `tied`, rounded to halves so that a row
/// holds many equal logits (ties must go to the lower expert index, as on the host).
fn router_logits(n: usize, e: usize, tied: bool, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let round = |v: f64| if tied { (v * 2.0).round() / 2.0 } else { v };
    (0..n * e).map(|_| round(rng.normal()) as f32).collect()
}

/// The first index where two integer lists differ, for a readable failure on long lists.
fn assert_same(want: &[usize], got: &[usize], what: &str) {
    assert_eq!(want.len(), got.len(), "{what}: lengths differ");
    if let Some(i) = want.iter().zip(got).position(|(a, b)| a != b) {
        panic!("{what}: first difference at {i}: want {} got {}", want[i], got[i]);
    }
}

/// The routing kernels against the host's routing ([`HostRoute`]), exactly: one token and one
/// expert; k = E; many ties; more assignments than one block of the positions scan (70 000
/// tokens × top-2 = 547 blocks of 256); 64 and 130 experts (more experts than units would
/// not matter: one cube per expert).
fn check_moe_route<B: Backend>(dev: &B::Device, device_name: &str) {
    assert!(B::FUSED_MOE_ROUTE, "{device_name}: expected MoE routing on the device");
    let cases = [
        (1, 1, 1, false),
        (5, 3, 3, true),
        (100, 8, 2, true),
        (70_000, 8, 2, false),
        (300, 64, 8, true),
        (257, 130, 1, true),
    ];
    for (i, &(n, e, k, tied)) in cases.iter().enumerate() {
        let logits = router_logits(n, e, tied, 300 + i as u64);
        let want = HostRoute::new(&logits.iter().map(|&v| v as f64).collect::<Vec<_>>(), e, k);
        let t = Tensor::<B, 2>::from_data(TensorData::new(logits, [n, e]), dev);
        let (choices, positions, counts) = kernels::moe_route(t, k);
        let ints = |d: TensorData| d.convert::<i64>().iter::<i64>().map(|v| v as usize).collect::<Vec<_>>();
        let what = |name: &str| format!("{device_name} n={n} E={e} k={k}: {name}");
        assert_same(&want.choices, &ints(choices.into_data()), &what("choices"));
        assert_same(&want.positions, &ints(positions.into_data()), &what("positions"));
        assert_same(&want.counts, &ints(counts.into_data()), &what("counts"));
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn moe_route_kernels_on_wgpu_match_the_host_routing() {
    match archlab::device::wgpu_device() {
        Some(dev) => check_moe_route::<archlab::device::WgpuBackend>(&dev, "wgpu"),
        None => no_wgpu_adapter(),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn moe_route_kernels_on_cuda_match_the_host_routing() {
    if !cuda_usable() {
        return;
    }
    check_moe_route::<archlab::device::CudaBackend>(&Default::default(), "cuda");
}

/// `[y, aux loss, dx, d(every parameter)…]` of the loss Σ y·w + aux of one MoE layer (top-2
/// SwiGLU experts, 5 of them, d = 16) on 3 × 37 random tokens, and its routing counts.
fn moe_layer_run<B: AutodiffBackend>(
    dev: &B::Device,
    capacity_factor: f64,
    dispatch: Dispatch,
) -> (Vec<Vec<f64>>, RoutingStats) {
    let mut cfg = RunConfig::resolve("tiny", None, &[]).unwrap().model;
    (cfg.d_model, cfg.d_ff, cfg.ffn) = (16, 24, FfnKind::Moe);
    cfg.moe = MoeConfig { n_experts: 5, top_k: 2, capacity_factor, ..MoeConfig::default() };
    let moe = Moe::<B>::new(&cfg, 0.02, &mut Rng::new(7), dev);
    let shape = [3, 37, 16];
    let mut rng = Rng::new(8);
    let mut normal = |len: usize| (0..len).map(|_| rng.normal() as f32).collect::<Vec<_>>();
    let (x, w) = (normal(3 * 37 * 16), normal(3 * 37 * 16));
    let x = Tensor::<B, 3>::from_data(TensorData::new(x, shape), dev).require_grad();
    let out = moe.forward_with(x.clone(), dispatch);
    let w = Tensor::<B, 3>::from_data(TensorData::new(w, shape), dev);
    let grads = ((out.y.clone() * w).sum() + out.aux.aux_loss.clone()).backward();
    let mut values = vec![host(out.y), host(out.aux.aux_loss), host(x.grad(&grads).expect("dx"))];
    values.extend(param_grads(&moe, &grads));
    (values, out.aux.routing.stats())
}

/// One MoE layer on the GPU backend (batched dispatch: device routing, scatter into
/// per-expert slots, batched expert matmuls, gather) against the dense-masked reference in
/// f64 on the CPU: outputs, aux loss, and every gradient, dropless (the slot count read
/// back) and with a capacity limit that drops tokens.
fn check_moe_layer<B: AutodiffBackend>(dev: &B::Device, device_name: &str) {
    for capacity_factor in [0.0, 0.5] {
        let (got, got_stats) = moe_layer_run::<B>(dev, capacity_factor, Dispatch::Batched);
        let (want, want_stats) =
            moe_layer_run::<Cpu64Ad>(&Default::default(), capacity_factor, Dispatch::DenseMasked);
        let what = |name: &str| format!("{device_name} capacity factor {capacity_factor}: {name}");
        assert_eq!(
            (&got_stats.routed, got_stats.dropped),
            (&want_stats.routed, want_stats.dropped),
            "{}",
            what("routing")
        );
        assert_eq!(want_stats.dropped > 0, capacity_factor > 0.0, "{}", what("drops"));
        assert!(
            (got_stats.balance_loss_sum - want_stats.balance_loss_sum).abs() < 1e-5,
            "{}",
            what("balance")
        );
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_close(w, g, 1e-4, &what(&format!("output {i} (y, aux, dx, then parameters)")));
        }
    }
}

#[cfg(feature = "wgpu")]
#[test]
fn moe_layer_on_wgpu_matches_the_dense_masked_reference() {
    type B = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    match archlab::device::wgpu_device() {
        Some(dev) => check_moe_layer::<B>(&dev, "wgpu"),
        None => no_wgpu_adapter(),
    }
}

#[cfg(feature = "cuda")]
#[test]
fn moe_layer_on_cuda_matches_the_dense_masked_reference() {
    type B = burn::backend::Autodiff<archlab::device::CudaBackend>;
    if !cuda_usable() {
        return;
    }
    check_moe_layer::<B>(&Default::default(), "cuda");
}

/// `bench` reports a wgpu run's peak memory from CubeCL's allocator, as on CUDA: the count
/// must cover what is held. Other tests share the device's pool, so only a lower bound holds.
#[cfg(feature = "wgpu")]
#[test]
fn wgpu_memory_count_covers_what_is_held() {
    use archlab::device::{Resolved, device_memory_bytes};
    let Some(dev) = archlab::device::wgpu_device() else { return no_wgpu_adapter() };
    let held = Tensor::<archlab::device::WgpuBackend, 1>::ones([16 << 20], &dev); // 64 MiB of f32
    let _ = held.clone().sum().into_scalar(); // the allocation has happened
    let bytes = device_memory_bytes(Resolved::Wgpu).expect("wgpu reports its allocator's memory");
    assert!(bytes >= 64 << 20, "allocator reports {bytes} bytes while 64 MiB are held");
    drop(held);
}
