//! Export to Hugging Face. Every model variant the tests know is either exported, in the layout
//! of the `transformers` architecture that expresses it, and read back by the import to the
//! same logits, or refused with what does not map (and nothing written). The `transformers`
//! fixtures (`tests/fixtures/hf`) export back to their own tensors, names and config. That
//! `transformers` itself computes the same logits from an export is checked by
//! `tools/hf_export_check.py` (`bench/results/hf-export.md`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::common::*;
use archlab::config::{FfnKind, ModelConfig, MoeConfig, Positions, RunConfig};
use archlab::data::tokenizer::Tokenizer;
use archlab::hf::export::{self, Family};
use archlab::hf::{self, safetensors::Checkpoint};
use archlab::model::LanguageModel;
use archlab::model::lm::ids_tensor;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// Adds N(0, 0.1²) noise to every parameter, so that norm gains (ones at initialisation) and
/// biases (zeros) carry values that a mis-mapped or dropped tensor would change.
struct Jitter(archlab::rng::Rng);

impl<B: Backend> ModuleMapper<B> for Jitter {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let (shape, device) = (tensor.shape(), tensor.device());
        let mut values = tensor.into_data().convert::<f32>().into_vec::<f32>().unwrap();
        values.iter_mut().for_each(|v| *v += 0.1 * self.0.normal() as f32);
        Param::from_mapped_value(id, Tensor::from_data(TensorData::new(values, shape), &device), mapper)
    }
}

fn logits(model: &LanguageModel<Cpu>, ids: &[u32], t: usize) -> Vec<f32> {
    let device = Default::default();
    model.forward(ids_tensor::<Cpu>(ids, [ids.len() / t, t], &device)).into_data().into_vec().unwrap()
}

/// Mixtral's layer: attention + a top-2 MoE of SwiGLU experts, router weights renormalised.
fn mixtral(base: &ModelConfig) -> ModelConfig {
    let mut m = base.clone();
    m.ffn = FfnKind::Moe;
    m.moe = MoeConfig { n_experts: 4, top_k: 2, expert_d_ff: 24, renormalize: true, ..MoeConfig::default() };
    m
}

/// Jamba's layout on the test width: attention every 4 layers from layer 2 without positions,
/// MoE every other layer (top-2, not renormalised, experts as wide as the MLP), Mamba with
/// its Δ/B/C norms.
fn jamba(base: &ModelConfig) -> ModelConfig {
    let mut m = with_pattern(base.clone(), "MfMeAfMe");
    m.positions = Positions::None;
    m.mamba.inner_norms = true;
    m.moe = MoeConfig { n_experts: 4, top_k: 2, renormalize: false, ..MoeConfig::default() };
    m
}

/// Qwen3-Next's layout: Gated DeltaNet and gated attention (q/k norms, partial RoPE, GQA),
/// MoE with a gated shared expert in three layers of four.
fn qwen3_next(base: &ModelConfig, top_k: usize) -> ModelConfig {
    let mut m = with_pattern(base.clone(), "GeGfGeAe");
    m.n_kv_heads = 2;
    m.attn_output_gate = true;
    m.qk_norm = true;
    m.partial_rotary_factor = 0.5;
    m.moe = MoeConfig {
        n_experts: 4,
        top_k,
        expert_d_ff: 24,
        renormalize: true,
        shared_expert_d_ff: 16,
        shared_expert_gate: true,
        ..MoeConfig::default()
    };
    m
}

#[test]
fn exports_read_back_to_the_same_logits_or_are_refused_by_name() {
    let root = temp_dir("hf-export");
    let mut cases = variants();
    let base = cases[0].1.clone();
    cases.push(("mixtral layout", mixtral(&base)));
    cases.push(("jamba layout", jamba(&base)));
    cases.push(("qwen3-next layout", qwen3_next(&base, 2)));
    cases.push(("qwen3-next layout, top-1 routing", qwen3_next(&base, 1)));
    let run_base = RunConfig::resolve("tiny", None, &[]).unwrap();
    let device = Default::default();
    let (mut exported, mut refused) = (BTreeSet::new(), Vec::new());
    for (i, (name, cfg)) in cases.iter().enumerate() {
        let out = root.join(format!("export-{i}"));
        let mut model = LanguageModel::<Cpu>::new(cfg, i as u64, false, &device);
        model = model.map(&mut Jitter(archlab::rng::Rng::new(i as u64)));
        let family = match export::family(cfg) {
            Ok(family) => family,
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(
                    msg.contains("cannot be exported") && msg.contains("archlab exports"),
                    "{name}: {msg}"
                );
                let err = export::export(&model, cfg, &Tokenizer::Byte, &out).unwrap_err();
                assert_eq!(format!("{err:#}"), msg);
                assert!(!out.exists(), "{name}: a refused export wrote {}", out.display());
                eprintln!("{name}: refused: {msg}");
                refused.push(*name);
                continue;
            }
        };
        assert_eq!(export::export(&model, cfg, &Tokenizer::Byte, &out).unwrap(), family);
        let files: BTreeSet<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into())
            .collect();
        assert_eq!(
            files,
            ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
                .map(String::from)
                .into()
        );
        let imported = hf::read_config(&out, &run_base).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(imported.model.layers().unwrap(), cfg.layers().unwrap(), "{name}: layer list");
        let back =
            hf::load_model::<Cpu>(&out, &imported.model, &device).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        assert_eq!(back.num_params(), model.num_params(), "{name}");
        let t = 11;
        let ids = random_ids(2 * t, cfg.vocab_size, i as u64);
        let (want, got) = (logits(&model, &ids, t), logits(&back, &ids, t));
        let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        eprintln!("{name}: {} → max |logit difference| {worst:e} (scale {scale})", family.class());
        // The same weights; only settings the HF config does not carry (a chunk size) may
        // change the order of float operations.
        assert!(worst <= 1e-5 * scale, "{name}: exported model's logits differ by {worst:e}");
        assert!(matches!(Tokenizer::from_file(&out.join("tokenizer.json")).unwrap(), Tokenizer::Byte));
        exported.insert(format!("{family:?}"));
    }
    let all: BTreeSet<String> =
        ["Llama", "Mixtral", "Mamba", "Mamba2", "Jamba", "Qwen3Next"].map(String::from).into();
    assert_eq!(exported, all, "every family is exported by some variant");
    for must_refuse in ["gpt2 (learned, layernorm, gelu, biases, untied)", "hymba", "deltanet"] {
        assert!(
            refused.iter().any(|r| r.starts_with(must_refuse)),
            "{must_refuse} has no transformers architecture; refused: {refused:?}"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn transformers_checkpoints_export_back_to_their_own_tensors() {
    let root = temp_dir("hf-reexport");
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf");
    let base = RunConfig::resolve("tiny", None, &[]).unwrap();
    let device = Default::default();
    for kind in ["mamba", "mamba2", "llama", "mixtral", "jamba", "qwen3_next", "qwen3_next_dense"] {
        let dir = fixtures.join(kind);
        let cfg = hf::read_config(&dir, &base).unwrap();
        let model = hf::load_model::<Cpu>(&dir, &cfg.model, &device).unwrap();
        let out = root.join(kind);
        export::export(&model, &cfg.model, &Tokenizer::Byte, &out).unwrap();
        assert_eq!(hf::read_config(&out, &base).unwrap().model, cfg.model, "{kind}: config");
        let (want, got) = (Checkpoint::open(&dir).unwrap(), Checkpoint::open(&out).unwrap());
        let skipped: BTreeSet<String> =
            hf::skipped_tensors(&dir).unwrap().into_iter().map(|(n, _)| n).collect();
        let want_names: BTreeSet<&str> = want.names().filter(|n| !skipped.contains(*n)).collect();
        assert_eq!(got.names().collect::<BTreeSet<_>>(), want_names, "{kind}: tensor names");
        // Qwen3-Next's zero-centred gains come back through `1 + w − 1` in f32: within an ulp of 1.
        let tolerance = if kind.starts_with("qwen3_next") { f32::EPSILON } else { 0.0 };
        for name in want_names {
            let (a, b) = (want.float(name).unwrap(), got.float(name).unwrap());
            assert_eq!(a.shape, b.shape, "{kind}: {name}");
            let worst = a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
            assert!(worst <= tolerance, "{kind}: {name} differs by {worst:e}");
        }
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn layouts_transformers_cannot_express_are_refused_with_the_reason() {
    let base = variants()[0].1.clone();
    let refusal = |m: &ModelConfig| format!("{:#}", export::family(m).unwrap_err());
    // AMMMMMMA is periodic (attention every 7 layers); AAMM is not.
    let mut sandwich = jamba(&base);
    sandwich.pattern = "AfMfMfMfMfMfMfAf".into();
    sandwich.n_layers = 8;
    assert_eq!(export::family(&sandwich).unwrap(), Family::Jamba);
    sandwich.pattern = "AfAfMfMf".into();
    sandwich.n_layers = 4;
    assert!(refusal(&sandwich).contains("Jamba places attention layers every `period` layers"));
    let mut roped = jamba(&base);
    roped.positions = Positions::Rope;
    assert!(refusal(&roped).contains("no positional encoding"), "{}", refusal(&roped));
    let mut plain = jamba(&base);
    plain.mamba.inner_norms = false;
    assert!(refusal(&plain).contains("inner_norms = true"));
    let mut ungated = qwen3_next(&base, 2);
    ungated.attn_output_gate = false;
    assert!(refusal(&ungated).contains("output gate and q/k norms"));
    let mut switch = base.clone();
    switch.ffn = FfnKind::Moe;
    switch.moe = MoeConfig { n_experts: 4, top_k: 1, ..MoeConfig::default() };
    assert!(refusal(&switch).contains("Mixtral always renormalises"));
}
