//! `Qwen3NextForCausalLM`: Gated DeltaNet and gated attention 3:1, MoE with a shared expert.

use anyhow::{Result, anyhow, bail};
use serde_json::Value;

use super::json::HfConfig;
use super::llama::read_transformer_shape;
use crate::config::{FfnKind, MixerKind, ModelConfig, MoeConfig};

/// Qwen3-Next: Gated DeltaNet (`linear_attention`) and gated full attention (`full_attention`)
/// layers, 3:1 by default (`layer_types`, or `full_attention_interval` in older configs); an MoE
/// with a sigmoid-gated shared expert where `decoder_sparse_step` and `mlp_only_layers` say so,
/// a SwiGLU MLP elsewhere. Attention has an output gate, q/k norms and partial RoPE; its head
/// width is explicit. The zero-centred norms (`1 + w`) are converted when the weights load.
pub(super) fn read_qwen3_next(hf: &HfConfig, m: &mut ModelConfig) -> Result<()> {
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
