//! `LlamaForCausalLM` and `MixtralForCausalLM`, and the transformer shape Jamba and
//! Qwen3-Next share with them.

use anyhow::{Result, bail};
use serde_json::Value;

use super::json::HfConfig;
use crate::config::{FfnKind, MixerKind, ModelConfig, MoeConfig};

/// Llama: attention and a SwiGLU MLP in every layer.
pub(super) fn read_llama(hf: &HfConfig, m: &mut ModelConfig) -> Result<()> {
    read_llama_attention(&hf, m)?;
    m.ffn = FfnKind::Mlp;
    if hf.bool_or("mlp_bias", false)? {
        bail!("{}: Llama variants with biases are not supported", hf.path.display());
    }
    Ok(())
}

/// Mixtral: Llama's attention, an MoE (top-k, weights renormalised) in every layer.
pub(super) fn read_mixtral(hf: &HfConfig, m: &mut ModelConfig) -> Result<()> {
    read_llama_attention(&hf, m)?;
    if hf.opt_usize("sliding_window")?.is_some() {
        bail!(
            "{}: Mixtral with sliding_window is not imported yet (archlab's local attention is not \
             parity-tested against it); set sliding_window to null to load it with full attention",
            hf.path.display()
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
    Ok(())
}

/// What Llama, Mixtral and Jamba configs share: heads, SwiGLU width, RMSNorm, the head.
pub(super) fn read_transformer_shape(hf: &HfConfig, m: &mut ModelConfig) -> Result<()> {
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
