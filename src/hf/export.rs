//! Writes an archlab model as a Hugging Face checkpoint folder (`config.json`,
//! `model.safetensors` in f32, `tokenizer.json`, `tokenizer_config.json`) in the layout of the
//! `transformers` architecture that computes the same function: dense → Llama, MoE → Mixtral,
//! Mamba → Mamba, Mamba-2 → Mamba2, periodic attention/Mamba hybrids → Jamba, Gated DeltaNet
//! hybrids → Qwen3-Next. It is the inverse of the import (`super::load_model`): the same tensor
//! names, the same transposes, Qwen3-Next's projection layout and zero-centred norms converted
//! back. Tests hold export → import to identical logits, and `tools/hf_export_check.py` loads
//! the exports in `transformers` and compares its logits with archlab's.
//!
//! A model no `transformers` architecture expresses (Hymba, local attention, DeltaNet, GELU
//! MLPs, LayerNorm, learned positions, …) is refused with what does not map, before anything
//! is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Param;
use burn::tensor::Tensor;
use serde_json::{Value, json};

use super::safetensors::{HostTensor, write_f32};
use crate::config::{FfnKind, LayerKind, MixerKind, ModelConfig, NormKind, Positions};
use crate::data::tokenizer::Tokenizer;
use crate::kernels::Backend;
use crate::model::LanguageModel;
use crate::model::block::{ChannelMixer, SeqMixer};
use crate::model::conv::CausalConv1d;
use crate::model::layers::{Linear, Norm};
use crate::model::mlp::Mlp;

/// The `transformers` architectures archlab exports to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Llama,
    Mixtral,
    Mamba,
    Mamba2,
    Jamba,
    Qwen3Next,
}

impl Family {
    /// The `transformers` class (`config.json`'s `architectures`).
    pub fn class(self) -> &'static str {
        match self {
            Family::Llama => "LlamaForCausalLM",
            Family::Mixtral => "MixtralForCausalLM",
            Family::Mamba => "MambaForCausalLM",
            Family::Mamba2 => "Mamba2ForCausalLM",
            Family::Jamba => "JambaForCausalLM",
            Family::Qwen3Next => "Qwen3NextForCausalLM",
        }
    }

    fn model_type(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mixtral => "mixtral",
            Family::Mamba => "mamba",
            Family::Mamba2 => "mamba2",
            Family::Jamba => "jamba",
            Family::Qwen3Next => "qwen3_next",
        }
    }
}

/// What `export` accepts, for error messages.
const EXPORTABLE: &str = "attention + SwiGLU MLP with RoPE (Llama), attention + MoE (Mixtral), pure Mamba \
     (Mamba), pure Mamba-2 (Mamba2), periodic attention/Mamba layouts without positions (Jamba), and Gated \
     DeltaNet with gated attention (Qwen3-Next); see docs/export.md";

/// The `transformers` architecture that computes what `m` computes, or what does not map.
pub fn family(m: &ModelConfig) -> Result<Family> {
    let layers = m.layers()?;
    let not_exportable =
        |why: String| anyhow::anyhow!("this model cannot be exported: {why}; archlab exports {EXPORTABLE}");
    if let Some(l) = layers.iter().find(|l| {
        !matches!(
            l.mixer,
            MixerKind::Attention | MixerKind::Mamba | MixerKind::Mamba2 | MixerKind::GatedDeltaNet
        )
    }) {
        return Err(not_exportable(format!(
            "its {} layers have no transformers architecture",
            l.mixer.name()
        )));
    }
    let only = |kinds: &[MixerKind]| layers.iter().all(|l| kinds.contains(&l.mixer));
    let has = |k: MixerKind| layers.iter().any(|l| l.mixer == k);
    let all_ffn = |k: FfnKind| layers.iter().all(|l| l.ffn == k);
    let any_ffn = |k: FfnKind| layers.iter().any(|l| l.ffn == k);
    let family = if only(&[MixerKind::Attention]) && all_ffn(FfnKind::Mlp) {
        Family::Llama
    } else if only(&[MixerKind::Attention]) && all_ffn(FfnKind::Moe) {
        Family::Mixtral
    } else if only(&[MixerKind::Mamba]) && all_ffn(FfnKind::None) {
        Family::Mamba
    } else if only(&[MixerKind::Mamba2]) && all_ffn(FfnKind::None) {
        Family::Mamba2
    } else if only(&[MixerKind::Attention, MixerKind::Mamba]) && !any_ffn(FfnKind::None) {
        Family::Jamba
    } else if only(&[MixerKind::Attention, MixerKind::GatedDeltaNet])
        && has(MixerKind::GatedDeltaNet)
        && !any_ffn(FfnKind::None)
    {
        Family::Qwen3Next
    } else {
        let kinds = |l: &LayerKind| format!("{}+{}", l.mixer.name(), l.ffn.name());
        let mut seen: Vec<String> = layers.iter().map(kinds).collect();
        seen.dedup();
        return Err(not_exportable(format!("its layers ({}) fit none of these layouts", seen.join(", "))));
    };
    let refuse = |why: &str| Err(not_exportable(format!("{why} ({} has none)", family.class())));
    if m.norm != NormKind::Rms {
        return refuse("it uses LayerNorm (model.norm = \"layer\")");
    }
    if m.bias {
        return refuse("its linear layers have biases (model.bias = true)");
    }
    if m.positions == Positions::Learned {
        return refuse("it has learned positions (model.positions = \"learned\")");
    }
    if (any_ffn(FfnKind::Mlp) || any_ffn(FfnKind::Moe)) && m.mlp != crate::config::MlpKind::Swiglu {
        return refuse("its MLPs are GELU (model.mlp = \"gelu\")");
    }
    if has(MixerKind::Attention) {
        let plain = !m.attn_output_gate && !m.qk_norm;
        let (want_positions, want_plain) = match family {
            Family::Jamba => (Positions::None, true),
            Family::Qwen3Next => (Positions::Rope, false),
            _ => (Positions::Rope, true),
        };
        if m.positions != want_positions {
            let positions = if want_positions == Positions::Rope { "RoPE" } else { "no positional encoding" };
            return refuse(&format!("its attention must have {positions} (model.positions)"));
        }
        if want_plain && !plain {
            return refuse(
                "its attention has an output gate or q/k norms (model.attn_output_gate, model.qk_norm)",
            );
        }
        if !want_plain && !(m.attn_output_gate && m.qk_norm) {
            return Err(not_exportable(
                "Qwen3-Next's attention has an output gate and q/k norms; set model.attn_output_gate and \
                 model.qk_norm (as the gdn-hybrid architecture does)"
                    .into(),
            ));
        }
        if want_plain && (m.head_dim() * m.n_heads != m.d_model || m.partial_rotary_factor != 1.0) {
            return refuse("its attention heads are not d_model / n_heads wide with full RoPE");
        }
    }
    if any_ffn(FfnKind::Moe) {
        let moe = &m.moe;
        let renormalised = moe.renormalize && moe.top_k >= 2;
        match family {
            Family::Mixtral if !renormalised => {
                return refuse(
                    "its router weights are not renormalised over k ≥ 2 experts (Mixtral always renormalises)",
                );
            }
            Family::Jamba if renormalised => {
                return refuse(
                    "its router weights are renormalised (model.moe.renormalize; Jamba never does)",
                );
            }
            Family::Jamba if any_ffn(FfnKind::Mlp) && moe.expert_width(m.d_ff) != m.d_ff => {
                return refuse(
                    "its experts are not model.d_ff wide (Jamba's MLPs and experts share one width)",
                );
            }
            Family::Qwen3Next if moe.shared_expert_d_ff == 0 || !moe.shared_expert_gate => {
                return refuse(
                    "its MoE has no gated shared expert (model.moe.shared_expert_d_ff, shared_expert_gate)",
                );
            }
            Family::Mixtral | Family::Jamba if moe.shared_expert_d_ff > 0 => {
                return refuse("its MoE has a shared expert");
            }
            _ => {}
        }
    }
    if matches!(family, Family::Mamba | Family::Jamba) && m.mamba.inner_norms != (family == Family::Jamba) {
        return refuse(if family == Family::Jamba {
            "Jamba's Mamba layers normalise Δ, B and C; set model.mamba.inner_norms = true"
        } else {
            "its Mamba layers normalise Δ, B and C (model.mamba.inner_norms)"
        });
    }
    if family == Family::Mamba2 && m.mamba2.n_groups > 1 && !m.mamba2.norm_per_group {
        return refuse("its gated RMSNorm spans all groups (model.mamba2.norm_per_group = false)");
    }
    if family == Family::Jamba {
        let attn: Vec<bool> = layers.iter().map(|l| l.mixer == MixerKind::Attention).collect();
        let experts: Vec<bool> = layers.iter().map(|l| l.ffn == FfnKind::Moe).collect();
        for (what, on) in [("attention", &attn), ("MoE", &experts)] {
            if !is_periodic(on) {
                return Err(not_exportable(format!(
                    "Jamba places {what} layers every `period` layers from an offset, and the pattern {} does not",
                    m.pattern
                )));
            }
        }
    }
    if family == Family::Qwen3Next && (m.gdn.conv_bias || m.gdn.allow_neg_eigval) {
        return refuse("its Gated DeltaNet has a conv bias or negative eigenvalues (model.gdn)");
    }
    Ok(family)
}

/// Writes `model` as a `transformers` checkpoint folder `out` (which must not exist): into a
/// sibling folder first, renamed into place when complete.
pub fn export<B: Backend>(
    model: &LanguageModel<B>,
    cfg: &ModelConfig,
    tokenizer: &Tokenizer,
    out: &Path,
) -> Result<Family> {
    let family = family(cfg)?;
    if out.exists() {
        bail!("{} already exists; choose another --out or remove it", out.display());
    }
    let tensors = tensors(model, family)?;
    let config = config_json(cfg, family, tokenizer);
    let mut tokenizer_config = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": cfg.max_seq_len,
        "clean_up_tokenization_spaces": false,
    });
    // A BPE's end-of-text is an added special token: naming it is safe. The byte tokenizer's
    // separator is an ordinary byte, which a named special token would split out of text.
    if let (Tokenizer::Hf(t), Some(eot)) = (tokenizer, tokenizer.eot())
        && let Some(token) = t.id_to_token(eot)
    {
        tokenizer_config["eos_token"] = token.into();
    }
    let partial = partial_dir(out)?;
    let written = (|| -> Result<()> {
        std::fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
        let pretty = |v: &Value| serde_json::to_string_pretty(v).expect("JSON values serialise") + "\n";
        crate::util::atomic::write(&partial.join("config.json"), pretty(&config).as_bytes())?;
        crate::util::atomic::write(&partial.join("tokenizer.json"), tokenizer.to_hf_json()?.as_bytes())?;
        crate::util::atomic::write(
            &partial.join("tokenizer_config.json"),
            pretty(&tokenizer_config).as_bytes(),
        )?;
        write_f32(&partial.join("model.safetensors"), &tensors)?;
        std::fs::rename(&partial, out)
            .with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    written.map(|()| family)
}

fn partial_dir(out: &Path) -> Result<PathBuf> {
    let name = out.file_name().with_context(|| format!("--out {} has no folder name", out.display()))?;
    Ok(out.with_file_name(format!("{}.partial-{}", name.to_string_lossy(), std::process::id())))
}

/// `config.json` of `family` for `m`.
fn config_json(m: &ModelConfig, family: Family, tokenizer: &Tokenizer) -> Value {
    let layers = m.layers().expect("checked by family()");
    let mut c = json!({
        "architectures": [family.class()],
        "model_type": family.model_type(),
        "vocab_size": m.vocab_size,
        "hidden_size": m.d_model,
        "num_hidden_layers": layers.len(),
        "tie_word_embeddings": m.tie_embeddings,
        "hidden_act": "silu",
        "initializer_range": m.init_std,
        "torch_dtype": "float32",
        "bos_token_id": null,
        "eos_token_id": tokenizer.eot(),
        "pad_token_id": null,
    });
    let moe = &m.moe;
    let attention = || {
        json!({
            "num_attention_heads": m.n_heads,
            "num_key_value_heads": m.kv_heads(),
            "max_position_embeddings": m.max_seq_len,
            "rms_norm_eps": m.norm_eps,
            "attention_bias": false,
            "attention_dropout": 0.0,
        })
    };
    let mamba = &m.mamba;
    let extra = match family {
        Family::Llama => json!({
            "intermediate_size": m.d_ff, "rope_theta": m.rope_theta, "mlp_bias": false, "head_dim": m.head_dim(),
        }),
        Family::Mixtral => json!({
            "intermediate_size": moe.expert_width(m.d_ff), "rope_theta": m.rope_theta,
            "num_local_experts": moe.n_experts, "num_experts_per_tok": moe.top_k,
            "router_aux_loss_coef": moe.balance_coef, "router_jitter_noise": moe.jitter, "sliding_window": null,
            "head_dim": m.head_dim(),
        }),
        Family::Mamba => json!({
            "state_size": mamba.d_state, "conv_kernel": mamba.d_conv, "expand": mamba.expand,
            "intermediate_size": mamba.inner(m.d_model), "time_step_rank": mamba.rank(m.d_model),
            "use_bias": mamba.bias, "use_conv_bias": mamba.conv_bias, "layer_norm_epsilon": m.norm_eps,
            "residual_in_fp32": true,
        }),
        Family::Mamba2 => {
            let c2 = &m.mamba2;
            json!({
                "state_size": c2.d_state, "conv_kernel": c2.d_conv, "expand": c2.expand,
                "head_dim": c2.head_dim, "num_heads": c2.heads(m.d_model), "n_groups": c2.n_groups,
                "chunk_size": c2.chunk_size, "use_bias": c2.bias, "use_conv_bias": c2.conv_bias,
                "layer_norm_epsilon": m.norm_eps, "rms_norm": true, "norm_before_gate": false,
                "residual_in_fp32": true,
            })
        }
        Family::Jamba => {
            let attn: Vec<bool> = layers.iter().map(|l| l.mixer == MixerKind::Attention).collect();
            let experts: Vec<bool> = layers.iter().map(|l| l.ffn == FfnKind::Moe).collect();
            let (attn_period, attn_offset) = period(&attn);
            let (expert_period, expert_offset) = period(&experts);
            let n_experts = if experts.contains(&true) { moe.n_experts } else { 1 };
            let width = if experts.contains(&true) && !experts.contains(&false) {
                moe.expert_width(m.d_ff)
            } else {
                m.d_ff
            };
            json!({
                "intermediate_size": width,
                "attn_layer_period": attn_period, "attn_layer_offset": attn_offset,
                "expert_layer_period": expert_period, "expert_layer_offset": expert_offset,
                "num_experts": n_experts, "num_experts_per_tok": moe.top_k.min(n_experts),
                "router_aux_loss_coef": moe.balance_coef,
                "mamba_d_state": mamba.d_state, "mamba_d_conv": mamba.d_conv, "mamba_expand": mamba.expand,
                "mamba_dt_rank": mamba.rank(m.d_model), "mamba_conv_bias": mamba.conv_bias,
                "mamba_proj_bias": mamba.bias, "use_mamba_kernels": false,
            })
        }
        Family::Qwen3Next => {
            let g = &m.gdn;
            let has_moe = layers.iter().any(|l| l.ffn == FfnKind::Moe);
            let mlp_only: Vec<usize> = (0..layers.len()).filter(|&i| layers[i].ffn != FfnKind::Moe).collect();
            let types: Vec<&str> = layers
                .iter()
                .map(|l| if l.mixer == MixerKind::Attention { "full_attention" } else { "linear_attention" })
                .collect();
            json!({
                "intermediate_size": m.d_ff, "head_dim": m.head_dim(), "rope_theta": m.rope_theta,
                "partial_rotary_factor": m.partial_rotary_factor, "layer_types": types,
                "linear_conv_kernel_dim": g.d_conv, "linear_key_head_dim": g.head_dim,
                "linear_value_head_dim": g.value_head_dim(), "linear_num_key_heads": g.key_heads(m.d_model),
                "linear_num_value_heads": g.value_heads(m.d_model),
                "decoder_sparse_step": 1, "mlp_only_layers": if has_moe { mlp_only } else { vec![] },
                "num_experts": if has_moe { moe.n_experts } else { 0 },
                "num_experts_per_tok": moe.top_k, "moe_intermediate_size": moe.expert_width(m.d_ff),
                "shared_expert_intermediate_size": moe.shared_expert_d_ff,
                "norm_topk_prob": moe.renormalize && moe.top_k >= 2,
                "router_aux_loss_coef": moe.balance_coef,
            })
        }
    };
    let merge = |c: &mut Value, v: Value| {
        for (k, v) in v.as_object().expect("objects").clone() {
            c[k] = v;
        }
    };
    if matches!(family, Family::Llama | Family::Mixtral | Family::Jamba | Family::Qwen3Next) {
        merge(&mut c, attention());
    }
    merge(&mut c, extra);
    c
}

/// Jamba's `(period, offset)` for the layers marked `on`: layer i is marked exactly when
/// `i % period == offset`. No marked layer: a period past the last layer. `(0, 0)` when no
/// period fits ([`family`] refuses those layouts).
fn period(on: &[bool]) -> (usize, usize) {
    let n = on.len();
    let Some(offset) = on.iter().position(|&b| b) else { return (n + 1, n) };
    (offset + 1..=n)
        .find(|&p| (0..n).all(|i| on[i] == (i % p == offset)))
        .map(|p| (p, offset))
        .unwrap_or((0, 0))
}

/// Whether Jamba's periodic layout can express the marked layers.
fn is_periodic(on: &[bool]) -> bool {
    period(on).0 > 0
}

/// Every tensor of `model` under its `transformers` name.
fn tensors<B: Backend>(model: &LanguageModel<B>, family: Family) -> Result<BTreeMap<String, HostTensor>> {
    let mut w = Writer { out: BTreeMap::new(), zero_centred: family == Family::Qwen3Next };
    let (prefix, embed, final_norm) = match family {
        Family::Mamba | Family::Mamba2 => {
            ("backbone.layers", "backbone.embeddings.weight", "backbone.norm_f.weight")
        }
        Family::Jamba => ("model.layers", "model.embed_tokens.weight", "model.final_layernorm.weight"),
        _ => ("model.layers", "model.embed_tokens.weight", "model.norm.weight"),
    };
    w.param(embed, &model.embed_tokens.weight);
    w.norm(final_norm, &model.norm);
    if let Some(head) = &model.lm_head {
        w.linear_weight("lm_head.weight", &head.weight);
    }
    for (i, layer) in model.layers.iter().enumerate() {
        let p = format!("{prefix}.{i}");
        match (&layer.mixer, family) {
            (SeqMixer::Mamba(mx), Family::Mamba | Family::Jamba) => {
                let (norm, q) = match family {
                    Family::Jamba => (format!("{p}.input_layernorm.weight"), format!("{p}.mamba")),
                    _ => (format!("{p}.norm.weight"), format!("{p}.mixer")),
                };
                w.norm(&norm, &layer.norm);
                if let Some(norms) = &mx.inner_norms {
                    w.norm(&format!("{q}.dt_layernorm.weight"), &norms.dt);
                    w.norm(&format!("{q}.b_layernorm.weight"), &norms.b);
                    w.norm(&format!("{q}.c_layernorm.weight"), &norms.c);
                }
                w.linear(&format!("{q}.in_proj"), &mx.in_proj);
                w.conv(&format!("{q}.conv1d"), &mx.conv1d);
                w.linear(&format!("{q}.x_proj"), &mx.x_proj);
                w.linear(&format!("{q}.dt_proj"), &mx.dt_proj);
                w.param(&format!("{q}.A_log"), &mx.a_log);
                w.param(&format!("{q}.D"), &mx.d_skip);
                w.linear(&format!("{q}.out_proj"), &mx.out_proj);
            }
            (SeqMixer::Mamba2(mx), Family::Mamba2) => {
                w.norm(&format!("{p}.norm.weight"), &layer.norm);
                let q = format!("{p}.mixer");
                w.linear(&format!("{q}.in_proj"), &mx.in_proj);
                w.conv(&format!("{q}.conv1d"), &mx.conv1d);
                w.param(&format!("{q}.dt_bias"), &mx.dt_bias);
                w.param(&format!("{q}.A_log"), &mx.a_log);
                w.param(&format!("{q}.D"), &mx.d_skip);
                w.param(&format!("{q}.norm.weight"), &mx.norm.weight);
                w.linear(&format!("{q}.out_proj"), &mx.out_proj);
            }
            (SeqMixer::Attention(a), _) => {
                w.norm(&format!("{p}.input_layernorm.weight"), &layer.norm);
                let q = format!("{p}.self_attn");
                w.linear(&format!("{q}.q_proj"), &a.q_proj);
                w.linear(&format!("{q}.k_proj"), &a.k_proj);
                w.linear(&format!("{q}.v_proj"), &a.v_proj);
                w.linear(&format!("{q}.o_proj"), &a.o_proj);
                if let (Some(qn), Some(kn)) = (&a.q_norm, &a.k_norm) {
                    w.gain(&format!("{q}.q_norm.weight"), qn);
                    w.gain(&format!("{q}.k_norm.weight"), kn);
                }
            }
            (SeqMixer::GatedDeltaNet(g), Family::Qwen3Next) => {
                w.norm(&format!("{p}.input_layernorm.weight"), &layer.norm);
                w.gated_deltanet(&format!("{p}.linear_attn"), g)?;
            }
            (other, _) => bail!("layer {i} ({}) has no place in {}", other.kind().name(), family.class()),
        }
        let Some(ffn) = &layer.ffn else { continue };
        let gate_up_down = |q: &str, names: [&str; 3]| names.map(|n| format!("{q}.{n}"));
        const HF: [&str; 3] = ["gate_proj", "up_proj", "down_proj"];
        if family == Family::Jamba {
            w.norm(&format!("{p}.pre_ff_layernorm.weight"), &ffn.norm);
            let q = format!("{p}.feed_forward");
            match &ffn.mixer {
                ChannelMixer::Mlp(mlp) => w.swiglu(mlp, &gate_up_down(&q, HF))?,
                ChannelMixer::Moe(moe) => {
                    w.linear(&format!("{q}.router"), &moe.router);
                    for (j, expert) in moe.experts.iter().enumerate() {
                        w.swiglu(expert, &gate_up_down(&format!("{q}.experts.{j}"), HF))?;
                    }
                }
            }
            continue;
        }
        w.norm(&format!("{p}.post_attention_layernorm.weight"), &ffn.norm);
        match (&ffn.mixer, family) {
            (ChannelMixer::Mlp(mlp), _) => w.swiglu(mlp, &gate_up_down(&format!("{p}.mlp"), HF))?,
            (ChannelMixer::Moe(moe), Family::Mixtral) => {
                let q = format!("{p}.block_sparse_moe");
                w.linear(&format!("{q}.gate"), &moe.router);
                for (j, expert) in moe.experts.iter().enumerate() {
                    w.swiglu(expert, &gate_up_down(&format!("{q}.experts.{j}"), ["w1", "w3", "w2"]))?;
                }
            }
            (ChannelMixer::Moe(moe), _) => {
                let q = format!("{p}.mlp");
                w.linear(&format!("{q}.gate"), &moe.router);
                for (j, expert) in moe.experts.iter().enumerate() {
                    w.swiglu(expert, &gate_up_down(&format!("{q}.experts.{j}"), HF))?;
                }
                if let (Some(shared), Some(gate)) = (&moe.shared_expert, &moe.shared_expert_gate) {
                    w.swiglu(shared, &gate_up_down(&format!("{q}.shared_expert"), HF))?;
                    w.linear(&format!("{q}.shared_expert_gate"), gate);
                }
            }
        }
    }
    Ok(w.out)
}

/// A tensor's values on the host, row-major.
fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> HostTensor {
    let shape = t.dims().to_vec();
    let data = t.into_data().convert::<f32>().into_vec::<f32>().expect("converted to f32");
    HostTensor { shape, data }
}

/// Collects tensors under their `transformers` names.
struct Writer {
    out: BTreeMap<String, HostTensor>,
    /// Norm gains are stored as `w` of `1 + w` (Qwen3-Next).
    zero_centred: bool,
}

impl Writer {
    fn put(&mut self, name: &str, t: HostTensor) {
        let previous = self.out.insert(name.to_string(), t);
        assert!(previous.is_none(), "tensor `{name}` written twice");
    }

    fn param<B: Backend, const D: usize>(&mut self, name: &str, p: &Param<Tensor<B, D>>) {
        self.put(name, host(p.val()));
    }

    /// An RMSNorm gain, zero-centred where the architecture stores it so.
    fn gain<B: Backend>(&mut self, name: &str, p: &Param<Tensor<B, 1>>) {
        let mut t = host(p.val());
        if self.zero_centred {
            t.data.iter_mut().for_each(|w| *w -= 1.0);
        }
        self.put(name, t);
    }

    fn norm<B: Backend>(&mut self, name: &str, norm: &Norm<B>) {
        self.gain(name, &norm.weight);
    }

    /// archlab's `[in, out]` weight as PyTorch's `[out, in]`.
    fn linear_weight<B: Backend>(&mut self, name: &str, p: &Param<Tensor<B, 2>>) {
        self.put(name, transposed(host(p.val())));
    }

    fn linear<B: Backend>(&mut self, prefix: &str, lin: &Linear<B>) {
        self.linear_weight(&format!("{prefix}.weight"), &lin.weight);
        if let Some(bias) = &lin.bias {
            self.param(&format!("{prefix}.bias"), bias);
        }
    }

    /// `[ch, k]` as PyTorch's depthwise `Conv1d` weight `[ch, 1, k]` (same tap order).
    fn conv<B: Backend>(&mut self, prefix: &str, conv: &CausalConv1d<B>) {
        let mut t = host(conv.weight.val());
        t.shape = vec![t.shape[0], 1, t.shape[1]];
        self.put(&format!("{prefix}.weight"), t);
        if let Some(bias) = &conv.bias {
            self.param(&format!("{prefix}.bias"), bias);
        }
    }

    /// A SwiGLU MLP as its gate, up and down projections, named in that order.
    fn swiglu<B: Backend>(&mut self, mlp: &Mlp<B>, names: &[String; 3]) -> Result<()> {
        let gate = mlp.gate_proj.as_ref().context("a GELU MLP has no SwiGLU gate to export")?;
        self.linear(&names[0], gate);
        self.linear(&names[1], &mlp.up_proj);
        self.linear(&names[2], &mlp.down_proj);
        Ok(())
    }

    /// Qwen3-Next's `linear_attn`: archlab's fused `in_proj` split back into `in_proj_qkvz`
    /// and `in_proj_ba` ([`super::gdn_rows`] says where each column goes), the gated norm's
    /// gain as it is (that norm is not zero-centred).
    fn gated_deltanet<B: Backend>(
        &mut self,
        prefix: &str,
        g: &crate::model::gated_deltanet::GatedDeltaNet<B>,
    ) -> Result<()> {
        let (Some(dt_bias), Some(a_log)) = (&g.dt_bias, &g.a_log) else {
            bail!("`{prefix}`: DeltaNet (no decay gate) has no Qwen3-Next form");
        };
        let w = host(g.in_proj.weight.val());
        let (d, cols) = (w.shape[0], w.shape[1]);
        let rows = super::gdn_rows(g.key_heads, g.value_heads, g.head_dim, g.v_head_dim);
        assert_eq!(rows.len(), cols, "in_proj columns");
        let qkvz_rows = 2 * g.key_heads * g.head_dim + 2 * g.value_heads * g.v_head_dim;
        let mut qkvz = vec![0.0f32; qkvz_rows * d];
        let mut ba = vec![0.0f32; 2 * g.value_heads * d];
        for (o, &(in_ba, row)) in rows.iter().enumerate() {
            let target = if in_ba { &mut ba } else { &mut qkvz };
            for i in 0..d {
                target[row * d + i] = w.data[i * cols + o];
            }
        }
        self.put(
            &format!("{prefix}.in_proj_qkvz.weight"),
            HostTensor { shape: vec![qkvz_rows, d], data: qkvz },
        );
        self.put(
            &format!("{prefix}.in_proj_ba.weight"),
            HostTensor { shape: vec![2 * g.value_heads, d], data: ba },
        );
        self.conv(&format!("{prefix}.conv1d"), &g.conv1d);
        self.param(&format!("{prefix}.dt_bias"), dt_bias);
        self.param(&format!("{prefix}.A_log"), a_log);
        self.param(&format!("{prefix}.norm.weight"), &g.norm_weight);
        self.linear(&format!("{prefix}.out_proj"), &g.out_proj);
        Ok(())
    }
}

fn transposed(t: HostTensor) -> HostTensor {
    let (r, c) = (t.shape[0], t.shape[1]);
    let mut data = vec![0.0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            data[j * r + i] = t.data[i * c + j];
        }
    }
    HostTensor { shape: vec![c, r], data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jamba_periods_are_found_or_refused() {
        let marks = |s: &str| s.chars().map(|c| c == 'x').collect::<Vec<_>>();
        assert_eq!(period(&marks("....x...")), (5, 4));
        assert_eq!(period(&marks(".x.x.x.x")), (2, 1));
        assert_eq!(period(&marks("x...x...")), (4, 0));
        assert_eq!(period(&marks("xxxx")), (1, 0));
        assert_eq!(period(&marks("....")), (5, 4));
        assert_eq!(period(&marks("x......x")), (7, 0), "AMMMMMMA: attention every 7 layers from 0");
        assert!(!is_periodic(&marks(".xx.")));
    }
}
