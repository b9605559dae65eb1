//! Health checks on trained weights (recorded in every run's `summary.json`).
//!
//! The causality / time-mixing probe of the correctness oracles, run on each layer's sequence
//! mixer as trained: perturbing the input at position p must leave every output before p
//! unchanged (causal), and must change some output after p (the mixer really mixes across
//! time). A mixer that fails the first leaks the future into the loss; one that fails the
//! second has collapsed into a per-token MLP.

use serde::{Deserialize, Serialize};

/// One layer's probe result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerHealth {
    pub layer: usize,
    pub mixer: String,
    /// No output before the perturbed position changed by more than the tolerance.
    pub causal: bool,
    /// Largest change of an output before the perturbed position (0 when causal).
    #[serde(with = "crate::util::json_f64")]
    pub max_leak: f64,
    /// Some output after the perturbed position changed.
    pub mixes: bool,
    /// Largest change of an output after the perturbed position.
    #[serde(with = "crate::util::json_f64")]
    pub max_reach: f64,
}

use crate::kernels::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::model::LanguageModel;
use crate::model::layers::float_tensor;
use crate::rng::Rng;

/// Relative size of a change below which an output counts as unchanged (f32 round-off of a
/// computation that does not depend on the perturbed input is exactly zero on the CPU; the
/// margin allows GPU kernels that reduce in a data-dependent order).
const TOLERANCE: f64 = 1e-5;

/// Probes every layer's sequence mixer of `model` on random inputs of length `seq_len`
/// (at least 8): perturbs the input at the middle position and measures how much the outputs
/// before and after it move.
pub fn probe_layers<B: Backend>(
    model: &LanguageModel<B>,
    seq_len: usize,
    device: &B::Device,
) -> Vec<LayerHealth> {
    let t = seq_len.clamp(8, 256);
    let p = t / 2;
    let d = model.embed_tokens.weight.dims()[1];
    let mut rng = Rng::fork(0, "health-probe");
    let base: Vec<f32> = (0..t * d).map(|_| rng.normal() as f32).collect();
    let mut moved = base.clone();
    for v in &mut moved[p * d..(p + 1) * d] {
        *v += rng.normal() as f32;
    }
    let input = |x: &[f32]| float_tensor::<B, 3>(TensorData::new(x.to_vec(), [1, t, d]), device);
    model
        .layers
        .iter()
        .enumerate()
        .map(|(layer, block)| {
            let run = |x: &[f32]| -> Vec<f32> {
                let y: Tensor<B, 3> = block.mixer.forward(block.norm.forward(input(x)));
                y.into_data().convert::<f32>().into_vec().expect("f32 output")
            };
            let (a, b) = (run(&base), run(&moved));
            let scale = 1.0 + a.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
            let diff = |range: std::ops::Range<usize>| {
                range.map(|i| (a[i] - b[i]).abs() as f64).fold(0.0f64, f64::max)
            };
            let max_leak = diff(0..p * d);
            let max_reach = diff((p + 1) * d..t * d);
            LayerHealth {
                layer,
                mixer: block.mixer.kind().name().into(),
                causal: max_leak <= TOLERANCE * scale,
                max_leak,
                mixes: max_reach > TOLERANCE * scale,
                max_reach,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;

    type Cpu = crate::device::CpuBackend;

    #[test]
    fn every_mixer_of_a_fresh_model_is_causal_and_mixes() {
        let device = Default::default();
        let mut cfg =
            RunConfig::resolve("tiny", None, &["model.pattern=\"ALMSH\"".into(), "model.window=4".into()])
                .unwrap()
                .model;
        cfg.vocab_size = 32;
        cfg.d_model = 32;
        cfg.n_heads = 2;
        cfg.mamba2.head_dim = 16;
        let model = LanguageModel::<Cpu>::new(&cfg, 0, false, &device);
        let health = probe_layers(&model, 16, &device);
        assert_eq!(health.len(), 5);
        for h in &health {
            assert!(h.causal && h.max_leak == 0.0, "{h:?}");
            assert!(h.mixes && h.max_reach > 0.0, "{h:?}");
        }
        let names: Vec<&str> = health.iter().map(|h| h.mixer.as_str()).collect();
        assert_eq!(names, ["attention", "local", "mamba", "mamba2", "hymba"]);
    }
}
