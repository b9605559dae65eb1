//! Hugging Face `transformers` interop: reads a checkpoint folder (`config.json` +
//! safetensors) of `MambaForCausalLM`, `Mamba2ForCausalLM`, `LlamaForCausalLM` or
//! `MixtralForCausalLM` into an
//! archlab [`ModelConfig`] and [`LanguageModel`]. The mapping is exact (tests match the logits
//! `transformers` computes, `tools/hf_fixtures.py`); every tensor of the checkpoint must be
//! used and have the shape archlab expects, so an unsupported variant fails loudly instead of
//! loading half its weights.

pub mod export;
pub mod safetensors;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::kernels::Backend;
use anyhow::{Context, Result, anyhow, bail};
use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use serde_json::Value;

/// The Hugging Face `model_type`s archlab imports.
const SUPPORTED: [&str; 6] = ["mamba", "mamba2", "llama", "mixtral", "jamba", "qwen3_next"];

use crate::config::{FfnKind, MixerKind, ModelConfig, MoeConfig, RunConfig};
use crate::model::LanguageModel;
use crate::model::block::{ChannelMixer, SeqMixer};
use crate::model::gated_deltanet::GatedDeltaNet;
use crate::model::layers::{Linear, float_tensor};
use crate::model::mlp::Mlp;
use safetensors::{Checkpoint, HostTensor};

/// Tensors a checkpoint may carry that no forward pass uses: skipped when the weights load
/// (and listed by `import`), where any other unused tensor is an error. Name prefix, and why.
const SKIPPED: [(&str, &str); 1] = [(
    "mtp.",
    "Qwen3-Next's multi-token-prediction module, for speculative decoding; transformers skips it too",
)];

/// The checkpoint's tensors that load skips ([`SKIPPED`]): their names, and why.
pub fn skipped_tensors(dir: &Path) -> Result<Vec<(String, &'static str)>> {
    let ckpt = Checkpoint::open(dir)?;
    Ok(ckpt.names().filter_map(|n| skip_reason(n).map(|why| (n.to_string(), why))).collect())
}

fn skip_reason(name: &str) -> Option<&'static str> {
    SKIPPED.iter().find(|(prefix, _)| name.starts_with(prefix)).map(|(_, why)| *why)
}

/// Where a model comes from: a local folder, or `hf:<owner>/<name>` (feature `hub`).
pub fn resolve_source(source: &str) -> Result<PathBuf> {
    match source.strip_prefix("hf:") {
        Some(repo) => hub::download_model(repo),
        None => {
            let dir = PathBuf::from(source);
            if !dir.join("config.json").exists() {
                bail!(
                    "{source} is not a Hugging Face model folder (no config.json); pass a folder saved \
                     with `save_pretrained`, or hf:<owner>/<name> to download one"
                );
            }
            Ok(dir)
        }
    }
}

/// Reads `config.json` into an archlab model config (the rest of the run config comes from
/// `base`: data, training and evaluation settings).
pub fn read_config(dir: &Path, base: &RunConfig) -> Result<RunConfig> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: Value = serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))?;
    let hf = HfConfig { json: &json, path: &path };
    let model_type = hf.str("model_type")?;
    // Said first: the fields below are the supported architectures'.
    if !SUPPORTED.contains(&model_type) {
        bail!(
            "{}: model_type `{model_type}` is not supported; archlab imports {}",
            path.display(),
            SUPPORTED.join(", ")
        );
    }
    let mut cfg = base.clone();
    let m = &mut cfg.model;
    m.vocab_size = hf.usize("vocab_size")?;
    m.d_model = hf.usize("hidden_size")?;
    m.n_layers = hf.usize("num_hidden_layers")?;
    m.norm = crate::config::NormKind::Rms;
    m.bias = false;
    m.dropout = 0.0;
    match model_type {
        "mamba" => {
            m.mixer = MixerKind::Mamba;
            m.ffn = FfnKind::None;
            m.norm_eps = hf.f64("layer_norm_epsilon")?;
            m.tie_embeddings = hf.bool_or("tie_word_embeddings", true)?;
            let c = &mut m.mamba;
            c.d_state = hf.usize("state_size")?;
            c.d_conv = hf.usize("conv_kernel")?;
            c.expand = hf.usize("expand")?;
            c.dt_rank = hf.usize("time_step_rank")?;
            c.bias = hf.bool_or("use_bias", false)?;
            c.conv_bias = hf.bool_or("use_conv_bias", true)?;
            if let Some(inner) = hf.opt_usize("intermediate_size")?
                && inner != c.expand * m.d_model
            {
                bail!("{}: intermediate_size {inner} is not expand · hidden_size", path.display());
            }
            hf.expect_str_or("hidden_act", "silu")?;
        }
        "mamba2" => {
            m.mixer = MixerKind::Mamba2;
            m.ffn = FfnKind::None;
            m.norm_eps = hf.f64("layer_norm_epsilon")?;
            m.tie_embeddings = hf.bool_or("tie_word_embeddings", true)?;
            let c = &mut m.mamba2;
            c.d_state = hf.usize("state_size")?;
            c.d_conv = hf.usize("conv_kernel")?;
            c.expand = hf.usize("expand")?;
            c.head_dim = hf.usize("head_dim")?;
            c.n_groups = hf.usize("n_groups")?;
            c.chunk_size = hf.usize("chunk_size")?;
            c.bias = hf.bool_or("use_bias", false)?;
            c.conv_bias = hf.bool_or("use_conv_bias", true)?;
            let heads = hf.usize("num_heads")?;
            if heads * c.head_dim != c.expand * m.d_model {
                bail!("{}: num_heads · head_dim must equal expand · hidden_size", path.display());
            }
            if !hf.bool_or("rms_norm", true)? || hf.bool_or("norm_before_gate", false)? {
                bail!(
                    "{}: only the gated RMSNorm with the gate before the norm is supported",
                    path.display()
                );
            }
            // archlab does not clamp Δ: accept only the default limit (0, ∞).
            if let Some(limit) = json.get("time_step_limit") {
                let lo = limit.get(0).and_then(Value::as_f64);
                let hi = limit.get(1).and_then(Value::as_f64).unwrap_or(f64::INFINITY);
                if lo != Some(0.0) || hi.is_finite() {
                    bail!("{}: time_step_limit {limit} is not supported (only [0, inf])", path.display());
                }
            }
            hf.expect_str_or("hidden_act", "silu")?;
        }
        "llama" => {
            read_llama_attention(&hf, m)?;
            m.ffn = FfnKind::Mlp;
            if hf.bool_or("mlp_bias", false)? {
                bail!("{}: Llama variants with biases are not supported", path.display());
            }
        }
        "mixtral" => {
            read_llama_attention(&hf, m)?;
            if hf.opt_usize("sliding_window")?.is_some() {
                bail!(
                    "{}: Mixtral with sliding_window is not imported yet (archlab's local attention is not \
                     parity-tested against it); set sliding_window to null to load it with full attention",
                    path.display()
                );
            }
            m.ffn = FfnKind::Moe;
            m.moe = MoeConfig {
                n_experts: hf.usize("num_local_experts")?,
                top_k: hf.usize("num_experts_per_tok")?,
                expert_d_ff: m.d_ff,
                renormalize: true,
                capacity_factor: 0.0,
                balance_coef: hf.f64_or("router_aux_loss_coef", 0.001)?,
                z_loss_coef: 0.0,
                jitter: hf.f64_or("router_jitter_noise", 0.0)?,
                shared_expert_d_ff: 0,
                shared_expert_gate: false,
            };
        }
        "jamba" => read_jamba(&hf, m)?,
        "qwen3_next" => read_qwen3_next(&hf, m)?,
        other => bail!(
            "{}: model_type `{other}` is not supported; archlab imports {}",
            path.display(),
            SUPPORTED.join(", ")
        ),
    }
    cfg.model.validate().with_context(|| format!("the model in {}", path.display()))?;
    Ok(cfg)
}

/// Jamba (Lieber et al. 2024): attention every `attn_layer_period` layers (no positional
/// encoding), Mamba-1 with RMSNorms on Δ/B/C elsewhere, an MoE (top-k, weights not
/// renormalised) every `expert_layer_period` layers and a SwiGLU MLP in the others. Mapped onto
/// a layer pattern, e.g. `MfMeAfMe`.
fn read_jamba(hf: &HfConfig, m: &mut ModelConfig) -> Result<()> {
    let path = hf.path;
    read_transformer_shape(hf, m)?;
    m.positions = crate::config::Positions::None;
    let c = &mut m.mamba;
    c.d_state = hf.usize("mamba_d_state")?;
    c.d_conv = hf.usize("mamba_d_conv")?;
    c.expand = hf.usize("mamba_expand")?;
    c.dt_rank = match hf.json.get("mamba_dt_rank").and_then(Value::as_str) {
        Some("auto") => 0,
        _ => hf.usize("mamba_dt_rank")?,
    };
    c.conv_bias = hf.bool_or("mamba_conv_bias", true)?;
    c.bias = hf.bool_or("mamba_proj_bias", false)?;
    c.inner_norms = true;
    let n_experts = hf.usize("num_experts")?;
    m.moe = MoeConfig {
        n_experts,
        top_k: hf.usize("num_experts_per_tok")?,
        expert_d_ff: m.d_ff,
        renormalize: false,
        capacity_factor: 0.0,
        balance_coef: hf.f64_or("router_aux_loss_coef", 0.001)?,
        z_loss_coef: 0.0,
        jitter: 0.0,
        shared_expert_d_ff: 0,
        shared_expert_gate: false,
    };
    let (attn_period, attn_offset) = (hf.usize("attn_layer_period")?, hf.usize("attn_layer_offset")?);
    let (expert_period, expert_offset) = (hf.usize("expert_layer_period")?, hf.usize("expert_layer_offset")?);
    if attn_period == 0 || expert_period == 0 {
        bail!("{}: attn_layer_period and expert_layer_period must be positive", path.display());
    }
    m.pattern = (0..m.n_layers)
        .map(|i| {
            let mixer = if i % attn_period == attn_offset { 'A' } else { 'M' };
            let ffn = if n_experts > 1 && i % expert_period == expert_offset { 'e' } else { 'f' };
            format!("{mixer}{ffn}")
        })
        .collect();
    m.mixer = MixerKind::Mamba;
    m.ffn = FfnKind::Mlp;
    Ok(())
}

/// Qwen3-Next: Gated DeltaNet (`linear_attention`) and gated full attention (`full_attention`)
/// layers, 3:1 by default (`layer_types`, or `full_attention_interval` in older configs); an MoE
/// with a sigmoid-gated shared expert where `decoder_sparse_step` and `mlp_only_layers` say so,
/// a SwiGLU MLP elsewhere. Attention has an output gate, q/k norms and partial RoPE; its head
/// width is explicit. The zero-centred norms (`1 + w`) are converted when the weights load.
fn read_qwen3_next(hf: &HfConfig, m: &mut ModelConfig) -> Result<()> {
    let path = hf.path;
    read_transformer_shape(hf, m)?;
    if hf.bool_or("attention_bias", false)? {
        bail!("{}: attention with biases is not supported", path.display());
    }
    m.positions = crate::config::Positions::Rope;
    m.head_dim = hf.usize("head_dim")?;
    m.attn_output_gate = true;
    m.qk_norm = true;
    // transformers ≥ 5 nests RoPE's settings in `rope_parameters`; checkpoints' config.json
    // carry them at the top level.
    let rope = hf.json.get("rope_parameters").filter(|v| v.is_object());
    let rope_key = |key: &str| match rope.and_then(|r| r.get(key)).and_then(Value::as_f64) {
        Some(v) => Ok(Some(v)),
        None if hf.json.get(key).is_none_or(Value::is_null) => Ok(None),
        None => hf.f64(key).map(Some),
    };
    m.rope_theta = rope_key("rope_theta")?
        .ok_or_else(|| anyhow!("{} has no `rope_theta` (top level or in rope_parameters)", path.display()))?;
    m.partial_rotary_factor = rope_key("partial_rotary_factor")?.unwrap_or(0.25);
    if let Some(kind) = rope.and_then(|r| r.get("rope_type")).and_then(Value::as_str)
        && kind != "default"
    {
        bail!("{}: rope_type `{kind}` is not supported (only the default RoPE)", path.display());
    }
    let rotary = (m.head_dim as f64 * m.partial_rotary_factor) as usize;
    if rotary == 0 || !rotary.is_multiple_of(2) {
        bail!(
            "{}: partial_rotary_factor {} of head_dim {} gives {rotary} rotated channels; RoPE needs an \
             even number of them, at least 2",
            path.display(),
            m.partial_rotary_factor,
            m.head_dim
        );
    }
    let g = &mut m.gdn;
    g.head_dim = hf.usize("linear_key_head_dim")?;
    g.v_head_dim = hf.usize("linear_value_head_dim")?;
    g.n_heads = hf.usize("linear_num_key_heads")?;
    g.n_v_heads = hf.usize("linear_num_value_heads")?;
    g.d_conv = hf.usize("linear_conv_kernel_dim")?;
    g.conv_bias = false;
    g.allow_neg_eigval = false;
    if g.n_heads == 0 || !g.n_v_heads.is_multiple_of(g.n_heads) {
        bail!(
            "{}: linear_num_value_heads ({}) must be a positive multiple of linear_num_key_heads ({}); \
             each key head serves linear_num_value_heads / linear_num_key_heads value heads",
            path.display(),
            g.n_v_heads,
            g.n_heads
        );
    }
    let n_experts = hf.opt_usize("num_experts")?.unwrap_or(0);
    let sparse_step = hf.opt_usize("decoder_sparse_step")?.unwrap_or(1);
    let mlp_only = match hf.json.get("mlp_only_layers") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(|i| i.as_u64().map(|i| i as usize)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| anyhow!("{}: `mlp_only_layers` is not a list of layer indices", path.display()))?,
    };
    if n_experts > 0 {
        if sparse_step == 0 {
            bail!("{}: decoder_sparse_step must be at least 1", path.display());
        }
        let top_k = hf.usize("num_experts_per_tok")?;
        let renormalize = hf.bool_or("norm_topk_prob", true)?;
        if renormalize && top_k == 1 {
            // archlab keeps a top-1 expert's probability as its weight (Switch), where
            // renormalising would make it 1.
            bail!("{}: norm_topk_prob with num_experts_per_tok = 1 is not supported", path.display());
        }
        let shared = hf.opt_usize("shared_expert_intermediate_size")?.unwrap_or(0);
        m.moe = MoeConfig {
            n_experts,
            top_k,
            expert_d_ff: hf.usize("moe_intermediate_size")?,
            renormalize,
            capacity_factor: 0.0,
            balance_coef: hf.f64_or("router_aux_loss_coef", 0.001)?,
            z_loss_coef: 0.0,
            jitter: 0.0,
            shared_expert_d_ff: shared,
            shared_expert_gate: shared > 0,
        };
    }
    let layer_types: Vec<String> = match hf.json.get("layer_types").filter(|v| !v.is_null()) {
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(|t| t.as_str().map(str::to_string)).collect::<Option<Vec<_>>>())
            .ok_or_else(|| anyhow!("{}: `layer_types` is not a list of strings", path.display()))?,
        None => {
            let interval = hf.opt_usize("full_attention_interval")?.unwrap_or(4);
            if interval == 0 {
                bail!("{}: full_attention_interval must be at least 1", path.display());
            }
            (0..m.n_layers)
                .map(|i| if (i + 1) % interval == 0 { "full_attention" } else { "linear_attention" }.into())
                .collect()
        }
    };
    if layer_types.len() != m.n_layers {
        bail!(
            "{}: layer_types has {} entries but num_hidden_layers is {}",
            path.display(),
            layer_types.len(),
            m.n_layers
        );
    }
    let mut pattern = String::new();
    for (i, kind) in layer_types.iter().enumerate() {
        pattern.push(match kind.as_str() {
            "linear_attention" => 'G',
            "full_attention" => 'A',
            other => bail!(
                "{}: layer_types[{i}] = `{other}` is not a Qwen3-Next layer archlab knows; the allowed \
                 values are `linear_attention` (Gated DeltaNet) and `full_attention`",
                path.display()
            ),
        });
        let sparse = n_experts > 0 && !mlp_only.contains(&i) && (i + 1) % sparse_step == 0;
        pattern.push(if sparse { 'e' } else { 'f' });
    }
    m.pattern = pattern;
    m.mixer = MixerKind::GatedDeltaNet;
    m.ffn = FfnKind::Mlp;
    Ok(())
}

/// What Llama, Mixtral and Jamba configs share: heads, SwiGLU width, RMSNorm, the head.
fn read_transformer_shape(hf: &HfConfig, m: &mut ModelConfig) -> Result<()> {
    m.mlp = crate::config::MlpKind::Swiglu;
    m.norm_eps = hf.f64("rms_norm_eps")?;
    m.tie_embeddings = hf.bool_or("tie_word_embeddings", false)?;
    m.d_ff = hf.usize("intermediate_size")?;
    m.n_heads = hf.usize("num_attention_heads")?;
    m.n_kv_heads = hf.opt_usize("num_key_value_heads")?.unwrap_or(m.n_heads);
    m.max_seq_len = hf.usize("max_position_embeddings")?;
    hf.expect_str_or("hidden_act", "silu")
}

/// The Llama-style attention stack Llama and Mixtral share: RoPE, RMSNorm, SwiGLU, no biases.
fn read_llama_attention(hf: &HfConfig, m: &mut ModelConfig) -> Result<()> {
    let path = hf.path;
    let json = hf.json;
    read_transformer_shape(hf, m)?;
    m.mixer = MixerKind::Attention;
    m.positions = crate::config::Positions::Rope;
    let rope = json.get("rope_parameters").or(json.get("rope_scaling")).filter(|v| !v.is_null());
    m.rope_theta = match rope.and_then(|r| r.get("rope_theta")).and_then(Value::as_f64) {
        Some(theta) => theta,
        None => hf.f64("rope_theta")?,
    };
    if let Some(kind) = rope.and_then(|r| r.get("rope_type")).and_then(Value::as_str)
        && kind != "default"
    {
        bail!("{}: rope_type `{kind}` is not supported (only the default RoPE)", path.display());
    }
    if hf.bool_or("attention_bias", false)? {
        bail!("{}: attention with biases is not supported", path.display());
    }
    if let Some(hd) = hf.opt_usize("head_dim")?
        && hd * m.n_heads != m.d_model
    {
        bail!("{}: head_dim {hd} · heads differs from hidden_size; not supported", path.display());
    }
    Ok(())
}

/// The `model_type` of the checkpoint in `dir`.
fn model_type(dir: &Path) -> Result<String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: Value = serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))?;
    Ok(HfConfig { json: &json, path: &path }.str("model_type")?.to_string())
}

/// Typed lookups in `config.json` with errors that name the file and the key.
struct HfConfig<'a> {
    json: &'a Value,
    path: &'a Path,
}

impl HfConfig<'_> {
    fn get(&self, key: &str) -> Result<&Value> {
        self.json
            .get(key)
            .filter(|v| !v.is_null())
            .ok_or_else(|| anyhow!("{} has no `{key}`", self.path.display()))
    }
    fn str(&self, key: &str) -> Result<&str> {
        self.get(key)?.as_str().ok_or_else(|| anyhow!("{}: `{key}` is not a string", self.path.display()))
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.get(key)?
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| anyhow!("{}: `{key}` is not a non-negative integer", self.path.display()))
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        if self.json.get(key).is_none_or(Value::is_null) { Ok(None) } else { self.usize(key).map(Some) }
    }
    fn f64(&self, key: &str) -> Result<f64> {
        self.get(key)?.as_f64().ok_or_else(|| anyhow!("{}: `{key}` is not a number", self.path.display()))
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        if self.json.get(key).is_none_or(Value::is_null) { Ok(default) } else { self.f64(key) }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => {
                v.as_bool().ok_or_else(|| anyhow!("{}: `{key}` is not a boolean", self.path.display()))
            }
        }
    }
    fn expect_str_or(&self, key: &str, expected: &str) -> Result<()> {
        match self.json.get(key).and_then(Value::as_str) {
            None => Ok(()),
            Some(v) if v == expected => Ok(()),
            Some(v) => bail!("{}: `{key}` = `{v}` is not supported (only `{expected}`)", self.path.display()),
        }
    }
}

/// Builds the model `cfg` describes and fills it with the checkpoint's weights.
pub fn load_model<B: Backend>(dir: &Path, cfg: &ModelConfig, device: &B::Device) -> Result<LanguageModel<B>> {
    let ckpt = Checkpoint::open(dir)?;
    // Qwen3-Next stores its RMSNorm gains as offsets from 1 (`x̂ · (1 + w)`), except the gated
    // norm inside Gated DeltaNet.
    let zero_centred = model_type(dir)? == "qwen3_next";
    let mut w = Weights { ckpt: &ckpt, used: BTreeSet::new(), device, zero_centred };
    let mut model = LanguageModel::<B>::new(cfg, 0, false, device);
    // Llama/Mixtral/Jamba keep everything under `model.`, Mamba/Mamba2 under `backbone.`.
    let (prefix, embed, final_norm) = match ckpt.contains("model.embed_tokens.weight") {
        true if ckpt.contains("model.final_layernorm.weight") => {
            ("model.layers", "model.embed_tokens.weight", "model.final_layernorm.weight")
        }
        true => ("model.layers", "model.embed_tokens.weight", "model.norm.weight"),
        false => {
            // The original state-spaces checkpoints say `embedding`, transformers `embeddings`.
            let embed = if ckpt.contains("backbone.embedding.weight") {
                "backbone.embedding.weight"
            } else {
                "backbone.embeddings.weight"
            };
            ("backbone.layers", embed, "backbone.norm_f.weight")
        }
    };
    model.embed_tokens.weight = w.param(embed, [cfg.vocab_size, cfg.d_model])?;
    model.norm.weight = w.norm(final_norm, cfg.d_model)?;
    if let Some(head) = &mut model.lm_head {
        // transformers stores [vocab, d]; archlab's Linear is [d, vocab].
        head.weight = w.linear_weight("lm_head.weight", cfg.d_model, cfg.vocab_size)?;
    }
    for (i, layer) in model.layers.iter_mut().enumerate() {
        let p = format!("{prefix}.{i}");
        match &mut layer.mixer {
            SeqMixer::Mamba(m) => {
                let (d, c) = (cfg.d_model, &cfg.mamba);
                let (di, n, r) = (c.inner(d), c.d_state, c.rank(d));
                // Jamba: `{p}.input_layernorm` and `{p}.mamba.*` with norms on Δ, B, C.
                let jamba = ckpt.contains(&format!("{p}.mamba.in_proj.weight"));
                let (norm, q) = match jamba {
                    true => (format!("{p}.input_layernorm.weight"), format!("{p}.mamba")),
                    false => (format!("{p}.norm.weight"), format!("{p}.mixer")),
                };
                layer.norm.weight = w.param(&norm, [d])?;
                if let Some(norms) = &mut m.inner_norms {
                    norms.dt.weight = w.param(&format!("{q}.dt_layernorm.weight"), [r])?;
                    norms.b.weight = w.param(&format!("{q}.b_layernorm.weight"), [n])?;
                    norms.c.weight = w.param(&format!("{q}.c_layernorm.weight"), [n])?;
                }
                w.linear(&mut m.in_proj, &format!("{q}.in_proj"), d, 2 * di)?;
                w.conv(&mut m.conv1d, &format!("{q}.conv1d"), di, c.d_conv)?;
                w.linear(&mut m.x_proj, &format!("{q}.x_proj"), di, r + 2 * n)?;
                w.linear(&mut m.dt_proj, &format!("{q}.dt_proj"), r, di)?;
                m.a_log = w.param(&format!("{q}.A_log"), [di, n])?;
                m.d_skip = w.param(&format!("{q}.D"), [di])?;
                w.linear(&mut m.out_proj, &format!("{q}.out_proj"), di, d)?;
            }
            SeqMixer::Mamba2(m) => {
                layer.norm.weight = w.param(&format!("{p}.norm.weight"), [cfg.d_model])?;
                let (d, c) = (cfg.d_model, &cfg.mamba2);
                let (di, heads, conv) = (c.inner(d), c.heads(d), c.conv_channels(d));
                let q = format!("{p}.mixer");
                w.linear(&mut m.in_proj, &format!("{q}.in_proj"), d, di + conv + heads)?;
                w.conv(&mut m.conv1d, &format!("{q}.conv1d"), conv, c.d_conv)?;
                m.dt_bias = w.param(&format!("{q}.dt_bias"), [heads])?;
                m.a_log = w.param(&format!("{q}.A_log"), [heads])?;
                m.d_skip = w.param(&format!("{q}.D"), [heads])?;
                m.norm.weight = w.param(&format!("{q}.norm.weight"), [di])?;
                w.linear(&mut m.out_proj, &format!("{q}.out_proj"), di, d)?;
            }
            SeqMixer::Attention(a) => {
                layer.norm.weight = w.norm(&format!("{p}.input_layernorm.weight"), cfg.d_model)?;
                let (d, hd) = (cfg.d_model, cfg.head_dim());
                let (q_dim, kv_dim) = (cfg.n_heads * hd, cfg.kv_heads() * hd);
                let q = format!("{p}.self_attn");
                // With the output gate, q_proj's rows are [query_h | gate_h] per head, as archlab's.
                let q_rows = q_dim * (1 + usize::from(a.output_gate));
                w.linear(&mut a.q_proj, &format!("{q}.q_proj"), d, q_rows)?;
                w.linear(&mut a.k_proj, &format!("{q}.k_proj"), d, kv_dim)?;
                w.linear(&mut a.v_proj, &format!("{q}.v_proj"), d, kv_dim)?;
                w.linear(&mut a.o_proj, &format!("{q}.o_proj"), q_dim, d)?;
                if let (Some(qn), Some(kn)) = (&mut a.q_norm, &mut a.k_norm) {
                    *qn = w.norm(&format!("{q}.q_norm.weight"), hd)?;
                    *kn = w.norm(&format!("{q}.k_norm.weight"), hd)?;
                }
            }
            SeqMixer::GatedDeltaNet(g) => {
                layer.norm.weight = w.norm(&format!("{p}.input_layernorm.weight"), cfg.d_model)?;
                w.gated_deltanet(g, &format!("{p}.linear_attn"), cfg)?;
            }
            // A layer kind no Hugging Face architecture maps onto (`model::registry`).
            other => bail!("{} layers are not imported from Hugging Face checkpoints", other.kind().name()),
        }
        if let Some(ffn) = &mut layer.ffn {
            let d = cfg.d_model;
            // Jamba: `pre_ff_layernorm` and `feed_forward` (an MLP, or a router + experts).
            if ckpt.contains(&format!("{p}.pre_ff_layernorm.weight")) {
                ffn.norm.weight = w.param(&format!("{p}.pre_ff_layernorm.weight"), [d])?;
                let q = format!("{p}.feed_forward");
                let gate_up_down =
                    |q: &str| ["gate_proj", "up_proj", "down_proj"].map(|n| format!("{q}.{n}"));
                match &mut ffn.mixer {
                    ChannelMixer::Mlp(mlp) => w.swiglu(mlp, &gate_up_down(&q), d, cfg.d_ff)?,
                    ChannelMixer::Moe(moe) => {
                        w.linear(&mut moe.router, &format!("{q}.router"), d, cfg.moe.n_experts)?;
                        let f = cfg.moe.expert_width(cfg.d_ff);
                        for (j, expert) in moe.experts.iter_mut().enumerate() {
                            w.swiglu(expert, &gate_up_down(&format!("{q}.experts.{j}")), d, f)?;
                        }
                    }
                }
                continue;
            }
            ffn.norm.weight = w.norm(&format!("{p}.post_attention_layernorm.weight"), d)?;
            let gate_up_down = |q: &str| ["gate_proj", "up_proj", "down_proj"].map(|n| format!("{q}.{n}"));
            match &mut ffn.mixer {
                ChannelMixer::Mlp(mlp) => w.swiglu(mlp, &gate_up_down(&format!("{p}.mlp")), d, cfg.d_ff)?,
                ChannelMixer::Moe(moe) if ckpt.contains(&format!("{p}.mlp.gate.weight")) => {
                    // Qwen3-Next (Qwen2-MoE's layout): `mlp.gate` routes, `mlp.experts.j` are
                    // SwiGLU MLPs, `mlp.shared_expert` runs for every token, scaled by
                    // σ(`mlp.shared_expert_gate`).
                    let q = format!("{p}.mlp");
                    w.linear(&mut moe.router, &format!("{q}.gate"), d, cfg.moe.n_experts)?;
                    let f = cfg.moe.expert_width(cfg.d_ff);
                    w.experts(&mut moe.experts, &format!("{q}.experts"), d, f)?;
                    match (&mut moe.shared_expert, &mut moe.shared_expert_gate) {
                        (Some(shared), Some(gate)) => {
                            let names = gate_up_down(&format!("{q}.shared_expert"));
                            w.swiglu(shared, &names, d, cfg.moe.shared_expert_d_ff)?;
                            w.linear(gate, &format!("{q}.shared_expert_gate"), d, 1)?;
                        }
                        (None, None) => {}
                        _ => bail!("`{q}`: a shared expert without its gate is not a Qwen3-Next MoE"),
                    }
                }
                ChannelMixer::Moe(moe) => {
                    // Mixtral: `block_sparse_moe.gate` is the router, expert j's w1/w3/w2 are
                    // gate/up/down of a SwiGLU MLP.
                    let q = format!("{p}.block_sparse_moe");
                    w.linear(&mut moe.router, &format!("{q}.gate"), d, cfg.moe.n_experts)?;
                    let f = cfg.moe.expert_width(cfg.d_ff);
                    for (j, expert) in moe.experts.iter_mut().enumerate() {
                        let names = ["w1", "w3", "w2"].map(|n| format!("{q}.experts.{j}.{n}"));
                        w.swiglu(expert, &names, d, f)?;
                    }
                }
            }
        }
    }
    w.check_all_used()?;
    Ok(model)
}

/// Where each column of archlab's fused Gated DeltaNet `in_proj` (`[q | k | v | z | b | a]`,
/// each head-major) lives in Qwen3-Next's two projections, as `(in in_proj_ba, row)`. Those
/// hold, per key head g, the rows `[q_g | k_g | v_g | z_g]` (`in_proj_qkvz`, v and z of g's
/// r = hv/hk value heads) and `[b_g | a_g]` (`in_proj_ba`).
fn gdn_rows(hk: usize, hv: usize, dk: usize, dv: usize) -> Vec<(bool, usize)> {
    let r = hv / hk;
    let (key_dim, value_dim) = (hk * dk, hv * dv);
    let per_head = 2 * dk + 2 * r * dv;
    let mut rows = Vec::with_capacity(2 * key_dim + 2 * value_dim + 2 * hv);
    for part in 0..2 {
        // q, then k: key head h's rows start at h · per_head (+ dk for k).
        rows.extend((0..key_dim).map(|c| (false, (c / dk) * per_head + part * dk + c % dk)));
    }
    for part in 0..2 {
        // v, then z: value head j = h · r + i sits in key head h's group.
        rows.extend((0..value_dim).map(|c| {
            let (j, e) = (c / dv, c % dv);
            (false, (j / r) * per_head + 2 * dk + part * r * dv + (j % r) * dv + e)
        }));
    }
    for part in 0..2 {
        // b (β's logits), then a.
        rows.extend((0..hv).map(|j| (true, (j / r) * 2 * r + part * r + j % r)));
    }
    rows
}

/// Reads checkpoint tensors into parameters, checking shapes and remembering what was used.
struct Weights<'a, B: Backend> {
    ckpt: &'a Checkpoint,
    used: BTreeSet<String>,
    device: &'a B::Device,
    /// Norm gains are stored as `w` of `1 + w` (Qwen3-Next).
    zero_centred: bool,
}

impl<B: Backend> Weights<'_, B> {
    fn host(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let t = self.ckpt.float(name)?;
        if t.shape != shape {
            bail!("checkpoint tensor `{name}` has shape {:?}; the config implies {shape:?}", t.shape);
        }
        self.used.insert(name.to_string());
        Ok(t)
    }

    fn param<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Param<Tensor<B, D>>> {
        let t = self.host(name, &shape)?;
        Ok(Param::from_tensor(float_tensor(TensorData::new(t.data, shape), self.device)))
    }

    /// An RMSNorm gain `[d]`, converted from a zero-centred `w` to `1 + w` where the
    /// checkpoint stores it that way.
    fn norm(&mut self, name: &str, d: usize) -> Result<Param<Tensor<B, 1>>> {
        let mut t = self.host(name, &[d])?;
        if self.zero_centred {
            t.data.iter_mut().for_each(|w| *w += 1.0);
        }
        Ok(Param::from_tensor(float_tensor(TensorData::new(t.data, [d]), self.device)))
    }

    /// Qwen3-Next's Gated DeltaNet (`linear_attn`): its two input projections become archlab's
    /// one `in_proj` ([`gdn_rows`]). The conv's channels (all q, all k, all v)
    /// are already in archlab's order.
    fn gated_deltanet(&mut self, g: &mut GatedDeltaNet<B>, prefix: &str, cfg: &ModelConfig) -> Result<()> {
        let d = cfg.d_model;
        let (hk, hv, dk, dv) = (g.key_heads, g.value_heads, g.head_dim, g.v_head_dim);
        let (key_dim, value_dim) = (hk * dk, hv * dv);
        let gated = g.a_log.is_some();
        if !gated {
            bail!(
                "`{prefix}`: Qwen3-Next's linear attention is Gated DeltaNet; import it as model.mixer = gdn"
            );
        }
        let qkvz = self.host(&format!("{prefix}.in_proj_qkvz.weight"), &[2 * key_dim + 2 * value_dim, d])?;
        let ba = self.host(&format!("{prefix}.in_proj_ba.weight"), &[2 * hv, d])?;
        let rows: Vec<(&HostTensor, usize)> = gdn_rows(hk, hv, dk, dv)
            .into_iter()
            .map(|(in_ba, row)| (if in_ba { &ba } else { &qkvz }, row))
            .collect();
        let cols = rows.len();
        let mut data = vec![0.0f32; d * cols];
        for (o, (t, row)) in rows.iter().enumerate() {
            for i in 0..d {
                data[i * cols + o] = t.data[row * d + i];
            }
        }
        g.in_proj.weight = Param::from_tensor(float_tensor(TensorData::new(data, [d, cols]), self.device));
        if g.in_proj.bias.is_some() {
            bail!("`{prefix}`: archlab's Gated DeltaNet projection has a bias the checkpoint lacks");
        }
        self.conv(&mut g.conv1d, &format!("{prefix}.conv1d"), 2 * key_dim + value_dim, cfg.gdn.d_conv)?;
        g.dt_bias = Some(self.param(&format!("{prefix}.dt_bias"), [hv])?);
        g.a_log = Some(self.param(&format!("{prefix}.A_log"), [hv])?);
        g.norm_weight = self.param(&format!("{prefix}.norm.weight"), [dv])?;
        self.linear(&mut g.out_proj, &format!("{prefix}.out_proj"), value_dim, d)
    }

    /// Experts `{prefix}.{j}.{gate,up,down}_proj`, each a SwiGLU MLP.
    fn experts(&mut self, experts: &mut [Mlp<B>], prefix: &str, d: usize, f: usize) -> Result<()> {
        for (j, expert) in experts.iter_mut().enumerate() {
            let names = ["gate_proj", "up_proj", "down_proj"].map(|n| format!("{prefix}.{j}.{n}"));
            self.swiglu(expert, &names, d, f)?;
        }
        Ok(())
    }

    /// A SwiGLU MLP from its gate, up and down projections, named in that order.
    fn swiglu(&mut self, mlp: &mut Mlp<B>, names: &[String; 3], d: usize, f: usize) -> Result<()> {
        let gate = mlp.gate_proj.as_mut().ok_or_else(|| anyhow!("this checkpoint's MLP is SwiGLU"))?;
        self.linear(gate, &names[0], d, f)?;
        self.linear(&mut mlp.up_proj, &names[1], d, f)?;
        self.linear(&mut mlp.down_proj, &names[2], f, d)
    }

    /// A `[out, in]` PyTorch weight as archlab's `[in, out]`.
    fn linear_weight(&mut self, name: &str, d_in: usize, d_out: usize) -> Result<Param<Tensor<B, 2>>> {
        let t = self.host(name, &[d_out, d_in])?;
        let mut data = vec![0.0f32; d_in * d_out];
        for o in 0..d_out {
            for i in 0..d_in {
                data[i * d_out + o] = t.data[o * d_in + i];
            }
        }
        Ok(Param::from_tensor(float_tensor(TensorData::new(data, [d_in, d_out]), self.device)))
    }

    fn linear(&mut self, lin: &mut Linear<B>, prefix: &str, d_in: usize, d_out: usize) -> Result<()> {
        lin.weight = self.linear_weight(&format!("{prefix}.weight"), d_in, d_out)?;
        let bias_name = format!("{prefix}.bias");
        lin.bias = match (self.ckpt.contains(&bias_name), lin.bias.is_some()) {
            (true, true) => Some(self.param(&bias_name, [d_out])?),
            (false, false) => None,
            (has, _) => bail!(
                "`{prefix}` {} a bias in the checkpoint but the config says {}",
                if has { "has" } else { "lacks" },
                if has { "none" } else { "one" }
            ),
        };
        Ok(())
    }

    /// PyTorch's depthwise `Conv1d` weight `[ch, 1, k]` as `[ch, k]` (same tap order).
    fn conv(
        &mut self,
        conv: &mut crate::model::conv::CausalConv1d<B>,
        prefix: &str,
        ch: usize,
        k: usize,
    ) -> Result<()> {
        let t = self.host(&format!("{prefix}.weight"), &[ch, 1, k])?;
        conv.weight = Param::from_tensor(float_tensor(TensorData::new(t.data, [ch, k]), self.device));
        let bias_name = format!("{prefix}.bias");
        if conv.bias.is_some() {
            conv.bias = Some(self.param(&bias_name, [ch])?);
        } else if self.ckpt.contains(&bias_name) {
            bail!("`{prefix}` has a bias in the checkpoint but the config says use_conv_bias = false");
        }
        Ok(())
    }

    fn check_all_used(&self) -> Result<()> {
        let unused: Vec<&str> = self
            .ckpt
            .names()
            .filter(|n| {
                !self.used.contains(*n) && !n.ends_with("rotary_emb.inv_freq") && skip_reason(n).is_none()
            })
            .collect();
        if !unused.is_empty() {
            bail!(
                "the checkpoint has {} tensors archlab's model does not use (e.g. {}); this variant is not supported",
                unused.len(),
                unused.iter().take(5).copied().collect::<Vec<_>>().join(", ")
            );
        }
        Ok(())
    }
}

#[cfg(feature = "hub")]
mod hub {
    use super::*;

    /// Downloads (or finds in the local hub cache) a model's config, weights and tokenizer.
    pub fn download_model(repo_id: &str) -> Result<PathBuf> {
        let api = hf_hub::api::sync::Api::new().map_err(|e| anyhow!("hub client: {e}"))?;
        let repo = api.model(repo_id.to_string());
        let info = repo.info().map_err(|e| {
            anyhow!(
                "cannot reach the Hugging Face hub for model `{repo_id}` ({e}); if you are offline, \
                 download the model folder and pass its path"
            )
        })?;
        let wanted = |f: &str| {
            f == "config.json"
                || f == "tokenizer.json"
                || f.ends_with(".safetensors")
                || f == "model.safetensors.index.json"
        };
        let mut dir = None;
        for sibling in info.siblings.iter().filter(|s| wanted(&s.rfilename)) {
            let path = repo
                .get(&sibling.rfilename)
                .map_err(|e| anyhow!("downloading {}: {e}", sibling.rfilename))?;
            dir = path.parent().map(Path::to_path_buf);
        }
        let dir =
            dir.ok_or_else(|| anyhow!("model `{repo_id}` has no config.json or safetensors on the hub"))?;
        if !dir.join("config.json").exists() {
            bail!("model `{repo_id}` has no config.json on the hub");
        }
        Ok(dir)
    }
}

#[cfg(not(feature = "hub"))]
mod hub {
    use super::*;

    pub fn download_model(repo_id: &str) -> Result<PathBuf> {
        bail!(
            "`hf:{repo_id}` needs the hub feature: rebuild with `cargo build --release --features hub`, \
             or download the model folder (config.json, *.safetensors, tokenizer.json) and pass its path"
        )
    }
}
