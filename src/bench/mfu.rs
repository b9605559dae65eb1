//! Model FLOPs utilisation: the model's training FLOPs per token times tokens/s, against the
//! device's peak.
//!
//! The FLOPs are the model's, counted analytically from the config by
//! [`ModelConfig::train_flops_per_token`](crate::config::ModelConfig::train_flops_per_token)
//! (not the FLOPs the kernels happen to execute), so two implementations of the same model
//! are scored on the same work; `tools/torch_baseline.py` uses the same formula.
//!
//! The peak is only ever a number from a table of known GPUs (dense, no sparsity) or the
//! user's `--peak-tflops`. A CPU has none here: its peak depends on the cores, the clock
//! and the vector units, and an invented one would make the MFU look more precise than it is;
//! MFU is then `null` with the reason.

use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::device::Resolved;

/// How the FLOPs per token are counted, for the report and `bench.json` readers.
pub const FLOPS_FORMULA: &str = "training FLOPs/token = 6·N_matmul + 3·Σ_layers mixer_fwd(T), as archlab's \
     `describe` counts them (src/model/count.rs): N_matmul = the weights a token is multiplied by \
     (attention Q/K/V/O, Mamba in/x/dt/out projections, MLP, MoE router + the k routed experts, the LM \
     head once even if tied; not embeddings lookups, norms or scalars); mixer_fwd = causal attention \
     2·d_attn·T (QKᵀ and AV over an average context of T/2, llm.c's convention: 6·d_attn·T per layer in \
     training), Mamba-1 2·d_inner·d_conv + 9·d_inner·N (conv and selective scan), Mamba-2 \
     Q·(2·G·N + 2·d_inner) + 4·d_inner·N + 2·conv_channels·d_conv (SSD chunks of Q), (Gated) DeltaNet per \
     value head 4·C·dk + (C−1)(C−2)/3 (the chunk's triangular inverse by forward substitution, per \
     token) + 2·C·(2·dv + dk) + 6·dk·dv plus its convolution (chunks of C)";

/// The peak the MFU is measured against, and where it came from (or why there is none).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    /// Dense peak in TFLOP/s at the run's precision; `None` when unknown.
    pub tflops: Option<f64>,
    /// "NVIDIA H100 80GB HBM3, bf16 dense (table)", "--peak-tflops", or the reason for `None`.
    pub source: String,
}

/// Dense peaks of the GPUs this project measures on, TFLOP/s: bf16 on the tensor cores, and
/// f32 on the CUDA cores (no TF32). Sources: NVIDIA's H100 / H200 datasheets (SXM: 989 bf16
/// dense, 67 fp32); the H200 has the H100 SXM's compute.
const GPU_PEAKS: &[(&str, f64, f64)] = &[("H100 SXM", 989.0, 67.0), ("H200", 989.0, 67.0)];

/// The peak of `resolved` at `precision` ("bf16" or "f32"): `--peak-tflops` when given, else
/// the table entry of the GPU's name, else `None` with the reason.
pub fn device_peak(resolved: Resolved, precision: &str, user_peak: Option<f64>) -> Peak {
    if let Some(t) = user_peak {
        return Peak { tflops: Some(t), source: format!("--peak-tflops {t}") };
    }
    if resolved == Resolved::Cpu {
        return Peak {
            tflops: None,
            source: "CPU: no peak is known for it (give --peak-tflops to compute MFU)".into(),
        };
    }
    let Some(name) = gpu_name() else {
        return Peak {
            tflops: None,
            source: format!("{}: GPU name unknown (no nvidia-smi); give --peak-tflops", resolved.name()),
        };
    };
    match table_peak(&name, precision) {
        Some(t) => Peak { tflops: Some(t), source: format!("{name}, {precision} dense (table)") },
        None => Peak {
            tflops: None,
            source: format!("{name} at {precision} is not in the peak table; give --peak-tflops"),
        },
    }
}

/// The table's peak for a GPU name as `nvidia-smi` or `torch.cuda.get_device_name()` prints
/// it. The H100 SXM reports itself as "NVIDIA H100 80GB HBM3"; the PCIe and NVL parts have
/// lower peaks and are deliberately not matched.
pub fn table_peak(gpu_name: &str, precision: &str) -> Option<f64> {
    let n = gpu_name.to_uppercase();
    let key = if n.contains("H100") && (n.contains("HBM3") || n.contains("SXM")) {
        "H100 SXM"
    } else if n.contains("H200") && !n.contains("NVL") {
        "H200"
    } else {
        return None;
    };
    let &(_, bf16, f32) = GPU_PEAKS.iter().find(|(k, ..)| *k == key)?;
    match precision {
        "bf16" => Some(bf16),
        "f32" => Some(f32),
        _ => None,
    }
}

/// The first GPU's name from `nvidia-smi`, if that tool is there and answers.
fn gpu_name() -> Option<String> {
    let out = Command::new("nvidia-smi").args(["--query-gpu=name", "--format=csv,noheader"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().map(str::trim).find(|l| !l.is_empty()).map(String::from)
}

/// Achieved TFLOP/s of `flops_per_token` at `tokens_per_s`.
pub fn achieved_tflops(flops_per_token: f64, tokens_per_s: f64) -> f64 {
    flops_per_token * tokens_per_s / 1e12
}

/// MFU as a fraction (0.4 = 40%), `None` without a peak.
pub fn mfu(achieved_tflops: f64, peak_tflops: Option<f64>) -> Option<f64> {
    peak_tflops.filter(|p| *p > 0.0).map(|p| achieved_tflops / p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mfu_arithmetic() {
        // 100 MFLOP/token at 1M tokens/s is 100 TFLOP/s: about 10.1% of an H100's 989.
        let achieved = achieved_tflops(100e6, 1e6);
        assert!((achieved - 100.0).abs() < 1e-9);
        let m = mfu(achieved, Some(989.0)).unwrap();
        assert!((m - 100.0 / 989.0).abs() < 1e-12);
        assert_eq!(mfu(achieved, None), None);
        assert_eq!(mfu(achieved, Some(0.0)), None);
    }

    #[test]
    fn peak_table_knows_h100_sxm_and_h200_only() {
        assert_eq!(table_peak("NVIDIA H100 80GB HBM3", "bf16"), Some(989.0));
        assert_eq!(table_peak("NVIDIA H100 80GB HBM3", "f32"), Some(67.0));
        assert_eq!(table_peak("NVIDIA H200", "bf16"), Some(989.0));
        assert_eq!(table_peak("NVIDIA H100 PCIe", "bf16"), None);
        assert_eq!(table_peak("NVIDIA H200 NVL", "bf16"), None);
        assert_eq!(table_peak("NVIDIA A100-SXM4-80GB", "bf16"), None);
        assert_eq!(table_peak("NVIDIA H100 80GB HBM3", "f16"), None);
    }

    #[test]
    fn cpu_has_no_peak_unless_given() {
        let p = device_peak(Resolved::Cpu, "f32", None);
        assert_eq!(p.tflops, None);
        assert!(p.source.contains("CPU") && p.source.contains("--peak-tflops"), "{}", p.source);
        let p = device_peak(Resolved::Cpu, "f32", Some(1.5));
        assert_eq!(p.tflops, Some(1.5));
        assert!(p.source.contains("--peak-tflops"), "{}", p.source);
    }
}
