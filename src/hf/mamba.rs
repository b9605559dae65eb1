//! `MambaForCausalLM` and `Mamba2ForCausalLM`: a stack of one mixer each, no MLP.

use anyhow::{Result, bail};
use serde_json::Value;

use super::json::HfConfig;
use crate::config::{FfnKind, MixerKind, ModelConfig};

/// Mamba-1 (`state-spaces/mamba-*-hf`).
pub(super) fn read_mamba(hf: &HfConfig, m: &mut ModelConfig) -> Result<()> {
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
        bail!("{}: intermediate_size {inner} is not expand · hidden_size", hf.path.display());
    }
    hf.expect_str_or("hidden_act", "silu")?;
    Ok(())
}

/// Mamba-2: its grouped, gated RMSNorm with the gate before the norm.
pub(super) fn read_mamba2(hf: &HfConfig, m: &mut ModelConfig) -> Result<()> {
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
        bail!("{}: num_heads · head_dim must equal expand · hidden_size", hf.path.display());
    }
    if !hf.bool_or("rms_norm", true)? || hf.bool_or("norm_before_gate", false)? {
        bail!("{}: only the gated RMSNorm with the gate before the norm is supported", hf.path.display());
    }
    // archlab does not clamp Δ: accept only the default limit (0, ∞).
    if let Some(limit) = hf.json.get("time_step_limit") {
        let lo = limit.get(0).and_then(Value::as_f64);
        let hi = limit.get(1).and_then(Value::as_f64).unwrap_or(f64::INFINITY);
        if lo != Some(0.0) || hi.is_finite() {
            bail!("{}: time_step_limit {limit} is not supported (only [0, inf])", hf.path.display());
        }
    }
    hf.expect_str_or("hidden_act", "silu")?;
    Ok(())
}
