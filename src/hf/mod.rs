//! Hugging Face `transformers` interop: reads a checkpoint folder (`config.json` +
//! safetensors) of `MambaForCausalLM`, `Mamba2ForCausalLM`, `LlamaForCausalLM`,
//! `MixtralForCausalLM`, `JambaForCausalLM` or `Qwen3NextForCausalLM` into an archlab
//! [`ModelConfig`] and [`LanguageModel`]. Each architecture's `config.json` is read in a file
//! of its own (`mamba.rs`, `llama.rs`, `jamba.rs`, `qwen3_next.rs`), which maps its layers onto
//! the table of layer kinds (a Jamba checkpoint fills attention, Mamba, MoE and MLP layers);
//! the weights then load per layer kind, under each family's tensor names. The mapping is
//! exact (tests match the logits `transformers` computes, `tools/hf_fixtures.py`); every tensor
//! of the checkpoint must be used and have the shape archlab expects, so an unsupported
//! variant fails loudly instead of loading half its weights.

pub mod export;
mod jamba;
mod json;
mod llama;
mod mamba;
mod qwen3_next;
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

use crate::config::{ModelConfig, RunConfig};
use crate::model::LanguageModel;
use crate::model::block::{ChannelMixer, SeqMixer};
use crate::model::gated_deltanet::GatedDeltaNet;
use crate::model::layers::{Linear, float_tensor};
use crate::model::mlp::Mlp;
use json::HfConfig;
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
        "mamba" => mamba::read_mamba(&hf, m)?,
        "mamba2" => mamba::read_mamba2(&hf, m)?,
        "llama" => llama::read_llama(&hf, m)?,
        "mixtral" => llama::read_mixtral(&hf, m)?,
        "jamba" => jamba::read_jamba(&hf, m)?,
        "qwen3_next" => qwen3_next::read_qwen3_next(&hf, m)?,
        other => bail!(
            "{}: model_type `{other}` is not supported; archlab imports {}",
            path.display(),
            SUPPORTED.join(", ")
        ),
    }
    cfg.model.validate().with_context(|| format!("the model in {}", path.display()))?;
    Ok(cfg)
}

/// The `model_type` of the checkpoint in `dir`.
fn model_type(dir: &Path) -> Result<String> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: Value = serde_json::from_str(&text).with_context(|| format!("malformed {}", path.display()))?;
    Ok(HfConfig { json: &json, path: &path }.str("model_type")?.to_string())
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
