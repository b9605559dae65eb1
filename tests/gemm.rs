//! `archlab gemm`'s sweep on wgpu (lavapipe in CI): burn's matmuls agree with the host's f64
//! product on every layout, every strategy that runs agrees with them, and a strategy the
//! device cannot run is reported, not fatal. The speeds it prints on a software driver mean
//! nothing; the GPU numbers come from `tools/gemm_vs_torch.py` on the GPU machine.
#![cfg(feature = "wgpu")]

use std::time::Duration;

use archlab::bench::gemm::{
    GemmDType, GemmShape, GemmStatus, Layout, MAX_REL_ERR, Timing, strategies, sweep,
};
use burn::backend::wgpu::WgpuRuntime;

#[test]
fn gemm_sweep_on_wgpu_checks_every_strategy_against_the_host_product() {
    let Some(device) = archlab::device::wgpu_device() else {
        assert!(
            std::env::var_os("ARCHLAB_REQUIRE_WGPU").is_none(),
            "ARCHLAB_REQUIRE_WGPU is set but there is no wgpu adapter"
        );
        eprintln!("skipping: no wgpu adapter");
        return;
    };
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
    if archlab::device::wgpu_device().is_none() {
        assert!(
            std::env::var_os("ARCHLAB_REQUIRE_WGPU").is_none(),
            "ARCHLAB_REQUIRE_WGPU is set but no adapter"
        );
        eprintln!("skipping: no wgpu adapter");
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
