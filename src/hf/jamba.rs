//! `JambaForCausalLM`: attention, Mamba-1, MoE and MLP layers, mapped onto a layer pattern.

use anyhow::{Result, bail};
use serde_json::Value;

use super::json::HfConfig;
use super::llama::read_transformer_shape;
use crate::config::{FfnKind, MixerKind, ModelConfig, MoeConfig};

/// Jamba (Lieber et al. 2024): attention every `attn_layer_period` layers (no positional
/// encoding), Mamba-1 with RMSNorms on Δ/B/C elsewhere, an MoE (top-k, weights not
/// renormalised) every `expert_layer_period` layers and a SwiGLU MLP in the others. Mapped onto
/// a layer pattern, e.g. `MfMeAfMe`.
pub(super) fn read_jamba(hf: &HfConfig, m: &mut ModelConfig) -> Result<()> {
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
