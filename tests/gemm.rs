//! `archlab gemm`'s sweep on wgpu (lavapipe in CI): burn's matmuls agree with the host's f64
//! product on every layout, every strategy that runs agrees with them, and a strategy the
//! device cannot run is reported, not fatal. The speeds it prints on a software driver mean
//! nothing; the GPU numbers come from `tools/gemm_vs_torch.py` on the GPU machine.
#![cfg(feature = "wgpu")]

mod common;

use std::time::Duration;

use archlab::bench::gemm::{
    GemmDType, GemmShape, GemmStatus, Layout, MAX_REL_ERR, Timing, strategies, sweep,
};
use burn::backend::wgpu::WgpuRuntime;
use burn::tensor::{Tensor, TensorData};

/// The wgpu device, or `None` after saying the test skips; a missing adapter fails where
/// `ARCHLAB_REQUIRE_WGPU` is set (CI, after installing lavapipe).
fn wgpu_or_skip() -> Option<burn::backend::wgpu::WgpuDevice> {
    let device = archlab::device::wgpu_device();
    if device.is_none() {
        assert!(
            std::env::var_os("ARCHLAB_REQUIRE_WGPU").is_none(),
            "ARCHLAB_REQUIRE_WGPU is set but there is no wgpu adapter"
        );
        eprintln!("skipping: no wgpu adapter");
    }
    device
}

#[test]
fn gemm_sweep_on_wgpu_checks_every_strategy_against_the_host_product() {
    let Some(device) = wgpu_or_skip() else { return };
    // Sizes that are not multiples of any tile or vector width, in all three layouts.
    let shapes = [
        GemmShape { m: 33, n: 45, k: 67, layout: Layout::Nn },
        GemmShape { m: 40, n: 24, k: 70, layout: Layout::Nt },
        GemmShape { m: 24, n: 40, k: 70, layout: Layout::Tn },
    ];
    let timing = Timing { min_time: Duration::from_millis(1) };
    let rows = sweep::<WgpuRuntime, u32, archlab::device::WgpuBackend>(
        &device,
        &shapes,
        GemmDType::F32, // wgpu has no bf16
        false,
        timing,
        |_| {},
    )
    .expect("the sweep runs");

    let per_shape = strategies().len() + 2;
    assert_eq!(rows.len(), shapes.len() * per_shape, "every strategy once per problem");
    for shape in shapes {
        let of: Vec<_> = rows.iter().filter(|r| r.shape == shape).collect();
        for burn_row in ["burn autotune", "burn fused"] {
            let r = of.iter().find(|r| r.strategy == burn_row).expect("burn's own rows");
            assert_eq!(r.status, GemmStatus::Ok, "{shape} {burn_row}: {r:?}");
            // The autotuned row is checked against the host's f64 product, the fused one
            // against the autotuned row.
            let err = r.max_rel_err.expect("small problems are checked");
            assert!(err <= MAX_REL_ERR, "{shape} {burn_row}: relative error {err}");
            assert!(r.tflops.is_some_and(|t| t > 0.0), "{shape} {burn_row}: {r:?}");
        }
        let wrong: Vec<_> = of.iter().filter(|r| r.status == GemmStatus::Wrong).collect();
        assert!(wrong.is_empty(), "{shape}: strategies that ran but gave a wrong product: {wrong:#?}");
        let ran = of.iter().filter(|r| r.status == GemmStatus::Ok).count();
        assert!(ran >= 3, "{shape}: fewer than one CubeCL strategy ran: {of:#?}");
        for r in of.iter().filter(|r| r.status == GemmStatus::Failed) {
            assert!(r.error.as_deref().is_some_and(|e| !e.is_empty()), "{shape}: a failure says why: {r:?}");
        }
    }
}

/// The command end to end: startup configures CubeCL's kernel cache (a per-binary folder under
/// the user cache) without disturbing the runtime, then `gemm` runs on wgpu and writes its JSON.
#[test]
fn gemm_command_runs_on_wgpu_after_configuring_the_kernel_cache() {
    if wgpu_or_skip().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("archlab-gemm-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_archlab"))
        .args(["gemm", "--device", "wgpu", "--dtype", "f32", "--shapes", "17x9x33:nt", "--autotuned-only"])
        .args(["--min-time-s", "0.001", "--out", "g"])
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env_remove("ARCHLAB_KERNEL_CACHE")
        .current_dir(&dir)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "archlab gemm failed:\n{stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("g/gemm.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "burn autotune and burn fused: {report}");
    assert!(rows.iter().all(|r| r["status"] == "ok"), "{report}");
    assert!(std::fs::read_to_string(dir.join("g/gemm.md")).unwrap().contains("17x9x33:nt"));
    // The parent is made at startup; the binary's own folder only when CUDA compiles (wgpu
    // has no kernel cache in CubeCL 0.10).
    assert!(dir.join("cache/archlab").is_dir(), "the kernel cache's parent folder");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two model matmuls: `x · w` with `w` `[1, k, n]` broadcast over the batch, as a linear layer
/// multiplies, and `x · vᵀ` with `v` `[1, n, k]` as a transposed (strided) view, as an input
/// gradient multiplies. Returns `[y1, y2, dx, dw, dv]` of the loss Σ (y1·g1 + y2·g2).
fn matmuls_and_grads<B: archlab::kernels::AutodiffBackend>(
    dev: &B::Device,
    matmul: impl Fn(Tensor<B, 3>, Tensor<B, 3>) -> Tensor<B, 3>,
) -> Vec<Vec<f64>> {
    let (b, t, k, n) = (2, 37, 45, 29);
    let mut rng = archlab::rng::Rng::new(7);
    let mut tensor = |shape: [usize; 3]| {
        let values: Vec<f32> = (0..shape.iter().product()).map(|_| rng.normal() as f32).collect();
        Tensor::<B, 3>::from_data(TensorData::new(values, shape), dev)
    };
    let (x, w, v) = (
        tensor([b, t, k]).require_grad(),
        tensor([1, k, n]).require_grad(),
        tensor([1, n, k]).require_grad(),
    );
    let (g1, g2) = (tensor([b, t, n]), tensor([b, t, n]));
    let y1 = matmul(x.clone(), w.clone());
    let y2 = matmul(x.clone(), v.clone().swap_dims(1, 2));
    let grads = ((y1.clone() * g1).sum() + (y2.clone() * g2).sum()).backward();
    vec![
        host(y1),
        host(y2),
        host(x.grad(&grads).expect("dx")),
        host(w.grad(&grads).expect("dw")),
        host(v.grad(&grads).expect("dv")),
    ]
}

fn host<B: burn::tensor::backend::Backend>(t: Tensor<B, 3>) -> Vec<f64> {
    t.into_data().convert::<f64>().into_vec().unwrap()
}

/// |a − b| ≤ tol · (1 + |a|) everywhere.
fn assert_close(reference: &[f64], got: &[f64], tol: f64, what: &str) {
    assert_eq!(reference.len(), got.len(), "{what}: lengths differ");
    let worst = reference.iter().zip(got).map(|(r, g)| (r - g).abs() / (1.0 + r.abs())).fold(0.0, f64::max);
    assert!(worst <= tol, "{what}: worst relative difference {worst:e} > {tol:e}");
}

/// `--matmul`: with a strategy forced, the model's matmuls run it, forward and backward (the
/// fusion backend registers one custom operation, autodiff differentiates it with the same
/// strategy), equal to the f64 product with no problem refused; then a small model trains
/// through it on wgpu with the CPU's losses. One test, since the choice is process-wide.
#[test]
fn a_forced_matmul_strategy_runs_the_models_matmuls_forward_and_backward() {
    use archlab::kernels::{self, Backend, matmul_strategy};
    type Wgpu = burn::backend::Autodiff<archlab::device::WgpuBackend>;
    let Some(dev) = wgpu_or_skip() else { return };
    let err = kernels::select_matmul("matmul_no_such_thing").unwrap_err().to_string();
    assert!(err.contains("matmul_simple_unit_max_tile_size") && err.contains("autotune"), "{err}");
    assert!(!Wgpu::own_matmul(), "nothing is forced by default");

    // A unit (CUDA-core) strategy: lavapipe has no tensor cores.
    let name = "matmul_simple_unit_max_tile_size";
    kernels::select_matmul(name).unwrap();
    assert!(Wgpu::own_matmul());
    assert_eq!(kernels::matmul_choice(), name);
    let refused_before = matmul_strategy::fallbacks();
    let forced = matmuls_and_grads::<Wgpu>(&dev, kernels::matmul);
    let reference = matmuls_and_grads::<common::Cpu64Ad>(&Default::default(), |a, b| a.matmul(b));
    for ((what, f), r) in ["y1", "y2", "dx", "dw", "dv"].iter().zip(&forced).zip(&reference) {
        assert_close(r, f, 1e-5, &format!("{name}: {what}"));
    }
    assert_eq!(
        matmul_strategy::fallbacks(),
        refused_before,
        "{name} refused a problem and burn's matmul ran"
    );

    // A dense model trained through the forced strategy follows the CPU's losses.
    let mut cfg = common::small_config();
    cfg.train.max_steps = 6;
    cfg.eval.every = 12;
    cfg.validate().unwrap();
    let run = |device: &str, on_gpu: bool| archlab::train::TrainOptions {
        device_name: device.into(),
        on_gpu,
        ..common::train_options(&format!("forced-matmul-{device}"))
    };
    let cpu = archlab::train::train::<common::CpuAd>(&cfg, &Default::default(), &run("cpu", false)).unwrap();
    let wgpu = archlab::train::train::<Wgpu>(&cfg, &dev, &run("wgpu", true)).unwrap();
    for ((step, a), (_, b)) in cpu.losses.iter().zip(&wgpu.losses) {
        eprintln!("step {step}: cpu {a:.6} wgpu ({name}) {b:.6}");
        assert!((a - b).abs() < 1e-4 * a.abs().max(1.0), "step {step}: cpu loss {a} vs wgpu {b}");
    }
    assert_eq!(cpu.losses.len(), wgpu.losses.len());
    assert_eq!(matmul_strategy::fallbacks(), refused_before, "{name} refused one of the model's matmuls");
    kernels::select_matmul("autotune").unwrap();
    assert!(!Wgpu::own_matmul());
}
