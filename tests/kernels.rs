//! archlab's fused kernels against their plain-ops twins, values and gradients, on random
//! inputs of awkward sizes (lengths that are not a whole number of checkpoint chunks, channel
//! counts that leave a cube part-empty, state sizes from 1 to 64).
//!
//! The kernels run on every CubeCL device this machine has: CUDA when a GPU is usable, and
//! wgpu when a Vulkan driver is present (CI installs Mesa's software driver, lavapipe, so the
//! kernel logic is checked on every submission without a GPU). The oracle is the step-by-step
//! recurrence in f64 on the CPU. A test with no device to run on says so and passes.
#![cfg(feature = "cube-kernels")]

mod common;

use archlab::kernels::{self, AutodiffBackend, Backend};
use archlab::model::selective_scan::{self, ScanInputs};
use archlab::rng::Rng;
use burn::tensor::{Tensor, TensorData};
use common::*;

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
    if !archlab::device::cuda_available() {
        eprintln!("skipping: no usable CUDA GPU");
        return;
    }
    check_selective_scan::<B>(&Default::default(), "cuda");
}

/// The CPU backends have no kernel: their scan is the plain-ops twin, also through autodiff.
#[test]
fn cpu_backends_use_the_plain_ops_twin() {
    assert!(!<CpuAd as Backend>::FUSED_SCAN && !<Cpu64Ad as Backend>::FUSED_SCAN);
    let problem = Problem::new(2, 37, 6, 4, 7);
    let twin = problem.run::<Cpu64Ad>(&Default::default(), |s| kernels::selective_scan(s, 5));
    let reference = problem.run::<Cpu64Ad>(&Default::default(), |s| selective_scan::reference(s, None).0);
    for (t, r) in twin.iter().zip(&reference) {
        assert_close(r, t, 1e-10, "cpu twin");
    }
}

/// `[out, dq, dk, dv]` of the loss Σ out·w for causal attention computed by `attend`.
fn attention_run<B: AutodiffBackend>(
    dev: &B::Device,
    shapes: (usize, usize, usize, usize, usize),
    seed: u64,
    attend: impl Fn(Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) -> Tensor<B, 4>,
) -> Vec<Vec<f64>> {
    let (b, h, kv, t, hd) = shapes;
    let mut rng = Rng::new(seed);
    let mut tensor = |shape: [usize; 4]| {
        let data: Vec<f32> = (0..shape.iter().product()).map(|_| rng.normal() as f32).collect();
        Tensor::<B, 4>::from_data(TensorData::new(data, shape), dev)
    };
    let (q, k, v) = (
        tensor([b, h, t, hd]).require_grad(),
        tensor([b, kv, t, hd]).require_grad(),
        tensor([b, kv, t, hd]).require_grad(),
    );
    let w = tensor([b, h, t, hd]);
    let out = attend(q.clone(), k.clone(), v.clone());
    let grads = (out.clone() * w).sum().backward();
    let g = |x: &Tensor<B, 4>| host(x.grad(&grads).expect("a gradient for q, k and v"));
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
        let fused = attention_run::<B>(dev, shapes, seed, |q, k, v| kernels::attention(q, k, v, window));
        let reference = attention_run::<Cpu64Ad>(&Default::default(), shapes, seed, |q, k, v| {
            archlab::model::attention::causal_attention(q, k, v, window)
        });
        for ((name, f), r) in ["out", "dq", "dk", "dv"].iter().zip(&fused).zip(&reference) {
            let what = format!("{device_name} b={b} h={h} kv={kv} t={t} hd={hd} window={window}: {name}");
            assert_close(r, f, 1e-4, &what);
        }
    }
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
    if !archlab::device::cuda_available() {
        eprintln!("skipping: no usable CUDA GPU");
        return;
    }
    check_attention::<B>(&Default::default(), "cuda");
}

/// End to end: a hybrid with every kernel-backed mixer (attention, sliding-window attention,
/// Mamba-1) and a plain one (Mamba-2) trains on wgpu through the fused kernels, and its losses
/// follow the CPU run of the same seed step by step (the CPU has no kernels: plain-ops twins
/// all the way). A wrong backward would bend the wgpu curve away within a few steps.
#[cfg(feature = "wgpu")]
#[test]
fn a_hybrid_trains_on_wgpu_with_the_cpu_losses() {
    use archlab::train::{TrainOptions, train};
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
    let run = |name: &str, on_gpu: bool| TrainOptions {
        run_dir: temp_dir(name),
        resume: false,
        stop_after: None,
        progress: false,
        device_name: name.into(),
        on_gpu,
        device_memory: None,
    };
    let cpu = train::<CpuAd>(&cfg, &Default::default(), &run("kernels-cpu", false)).unwrap().losses;
    type Wgpu = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    let wgpu = train::<Wgpu>(&cfg, &dev, &run("kernels-wgpu", true)).unwrap().losses;
    assert_eq!(cpu.len(), wgpu.len());
    for ((step, a), (_, b)) in cpu.iter().zip(&wgpu) {
        eprintln!("step {step}: cpu {a:.6} wgpu {b:.6}");
        assert!((a - b).abs() < 1e-4 * a.abs().max(1.0), "step {step}: cpu loss {a} vs wgpu {b}");
    }
    assert!(wgpu.last().unwrap().1 < wgpu[0].1, "the wgpu run's loss did not fall");
}
