//! The CUDA backend, checked against the CPU. Each test skips itself (saying so) when no CUDA
//! GPU is usable, so CI (which has none) passes them trivially, unless `ARCHLAB_REQUIRE_CUDA`
//! is set, which turns a skip into a failure; on the GPU machine run
//! `cargo test --test all cuda:: -- --nocapture` (tools/gpu_check.sh does, and records the log).
#![cfg(feature = "cuda")]

use crate::common::*;
use archlab::config::Precision;
use archlab::device::CudaBackend;
use archlab::kernels::Backend;
use archlab::model::LanguageModel;
use archlab::model::lm::ids_tensor;
use archlab::rng::Rng;
use archlab::train::{TrainOptions, train};
use burn::backend::Autodiff;
use burn::tensor::Tensor;

fn skip() -> bool {
    !cuda_usable()
}

fn values<B: Backend>(t: Tensor<B, 3>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum::<f64>().sqrt();
    d / a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

fn model_config() -> archlab::config::ModelConfig {
    let mut m = small_config().model;
    m.vocab_size = 256;
    m
}

#[test]
fn cuda_forward_matches_cpu() {
    if skip() {
        return;
    }
    let cfg = model_config();
    let mut rng = Rng::new(0);
    let ids: Vec<u32> = (0..2 * 48).map(|_| rng.below(256) as u32).collect();
    let cpu = Default::default();
    let gpu = Default::default();
    let a = values(LanguageModel::<Cpu>::new(&cfg, 1, false, &cpu).forward(ids_tensor::<Cpu>(
        &ids,
        [2, 48],
        &cpu,
    )));
    let b =
        values(LanguageModel::<CudaBackend>::new(&cfg, 1, false, &gpu).forward(ids_tensor::<CudaBackend>(
            &ids,
            [2, 48],
            &gpu,
        )));
    let rel = rel_diff(&a, &b);
    eprintln!("CUDA f32 vs CPU logits: relative difference {rel:e}");
    // Same weights (archlab's own RNG); f32 matmuls may use TF32 on the GPU (~3e-4).
    assert!(rel < 1e-3, "{rel:e}");
    let c =
        values(LanguageModel::<CudaBackend>::new(&cfg, 1, true, &gpu).forward(ids_tensor::<CudaBackend>(
            &ids,
            [2, 48],
            &gpu,
        )));
    let rel = rel_diff(&a, &c);
    eprintln!("CUDA bf16 vs CPU f32 logits: relative difference {rel:e}");
    assert!(rel < 1e-2 && rel > 1e-5, "{rel:e}");
}

#[test]
fn cuda_kv_cache_decoding_equals_full_forward_and_is_causal() {
    if skip() {
        return;
    }
    let cfg = model_config();
    let device = Default::default();
    let model = LanguageModel::<CudaBackend>::new(&cfg, 2, false, &device);
    let mut rng = Rng::new(1);
    let t = 24;
    let ids: Vec<u32> = (0..t).map(|_| rng.below(256) as u32).collect();
    let full = values(model.forward(ids_tensor::<CudaBackend>(&ids, [1, t], &device)));
    let mut state = model.decode_state();
    let mut stepped =
        values(model.forward_step(ids_tensor::<CudaBackend>(&ids[..5], [1, 5], &device), &mut state));
    for i in 5..t {
        stepped.extend(values(
            model.forward_step(ids_tensor::<CudaBackend>(&ids[i..i + 1], [1, 1], &device), &mut state),
        ));
    }
    let rel = rel_diff(&full, &stepped);
    eprintln!("CUDA cached decoding vs full forward: relative difference {rel:e}");
    assert!(rel < 1e-4, "{rel:e}");

    let mut changed = ids.clone();
    changed[10] = (changed[10] + 1) % 256;
    let other = values(model.forward(ids_tensor::<CudaBackend>(&changed, [1, t], &device)));
    let v = cfg.vocab_size;
    let before: f32 = (0..10 * v).map(|i| (full[i] - other[i]).abs()).fold(0.0, f32::max);
    let after: f32 = (11 * v..t * v).map(|i| (full[i] - other[i]).abs()).fold(0.0, f32::max);
    assert!(before < 1e-5, "outputs before the changed token moved by {before}");
    assert!(after > 1e-4, "outputs after the changed token did not move");
}

#[test]
fn cuda_bf16_training_loss_falls() {
    if skip() {
        return;
    }
    let mut cfg = small_config();
    cfg.train.max_steps = 150;
    cfg.train.precision = Precision::Bf16;
    cfg.eval.every = 50;
    let opts = TrainOptions {
        run_dir: temp_dir("cuda-train"),
        resume: false,
        stop_after: None,
        progress: false,
        device_name: "cuda".into(),
        on_gpu: true,
        device_memory: Some(|| archlab::device::device_memory_bytes(archlab::device::Resolved::Cuda)),
        devices: 1,
    };
    let out = train::<Autodiff<CudaBackend>>(&cfg, &Default::default(), &opts).unwrap();
    let s = out.summary.unwrap();
    eprintln!(
        "CUDA bf16: val loss {:.4}, {:.0} tok/s, peak device memory {} bytes, warm-up {:.1} s",
        s.final_val_loss, s.steady_tokens_per_s, s.peak_memory_bytes, s.warmup_time_s
    );
    assert_eq!(s.precision, "bf16");
    assert!(s.final_val_loss < 3.0, "{}", s.final_val_loss);
    assert_eq!(s.nan_skips, 0);
    assert!(s.peak_memory_bytes > 0);
}
