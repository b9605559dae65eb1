//! Causal multi-head self-attention with rotary or learned positions and optional
//! grouped-query attention (Ainslie et al. 2023), plus its KV cache for decoding.
//!
//! Parameter names follow Hugging Face `LlamaAttention` (`q_proj`, `k_proj`, `v_proj`,
//! `o_proj`) so that weight import needs no renaming table. RoPE uses Llama's "rotate half"
//! layout (`transformers` `apply_rotary_pos_emb`), not GPT-NeoX's interleaved one.
//!
//! With `window = W > 0` it is sliding-window (local) attention: query `p` sees keys
//! `p − W < j ≤ p`. Training runs it blocked, O(T·W) instead of O(T²): queries in blocks of W
//! attend to their own block and the one before (`windowed`); decoding keeps at most W − 1
//! cached keys. Tests compare it with global attention under a band mask (tests/all/hybrid.rs).
//!
//! Three options of Qwen3-Next's gated attention (Qiu et al. 2025, arXiv 2505.06708), each off
//! by default: an output gate (`model.attn_output_gate`: `q_proj` also emits a per-channel gate,
//! laid out per head as `[query_h | gate_h]`, and the attention output is multiplied by its
//! sigmoid before `o_proj`), an RMSNorm over each head of q and k before RoPE
//! (`model.qk_norm`), and partial RoPE (`model.partial_rotary_factor`: only the first
//! `factor · head_dim` channels of each head rotate).
//!
//! On a whole sequence the scores come from the fused flash-attention kernel where the backend
//! has one ([`causal_attention`] is its plain-ops twin); decoding with a cache materialises the
//! `[b, h, t_new, t_all]` scores.

use crate::kernels::{self, Backend};
use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Tensor, TensorData};

use super::activation::sigmoid;
use super::layers::{Linear, float_tensor, param};
use super::mixer::{LayerParams, MixerSpec, SequenceMixer, tensor_bytes};
use crate::config::MixerKind;
use crate::config::ModelConfig;
use crate::kernels::attention::{band_mask, repeat_kv};
use crate::rng::Rng;

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub o_proj: Linear<B>,
    pub rope: Option<Rope<B>>,
    /// Gains of the per-head RMSNorms of q and k (`[head_dim]` each); `None` without qk-norm.
    pub q_norm: Option<burn::module::Param<Tensor<B, 1>>>,
    pub k_norm: Option<burn::module::Param<Tensor<B, 1>>>,
    /// `q_proj` also emits a sigmoid output gate per channel.
    pub output_gate: bool,
    pub norm_eps: f64,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Sliding window in tokens; 0 means global attention.
    pub window: usize,
}

/// Keys and values of the tokens seen so far (the last `window − 1` of them for local
/// attention), `[b, n_kv_heads, t_kept, head_dim]` each.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    pub k: Option<Tensor<B, 4>>,
    pub v: Option<Tensor<B, 4>>,
    /// Tokens seen so far: the absolute position of the next one.
    pub seen: usize,
}

impl<B: Backend> KvCache<B> {
    pub fn empty() -> Self {
        Self { k: None, v: None, seen: 0 }
    }

    /// Cached entries (≤ `seen`).
    pub fn len(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> Attention<B> {
    /// `resid_std` initialises `o_proj`, which writes into the residual stream (GPT-2 scaling).
    /// `window` 0 is global attention.
    pub fn new(cfg: &ModelConfig, window: usize, resid_std: f64, rng: &mut Rng, device: &B::Device) -> Self {
        let (d, hd, kv) = (cfg.d_model, cfg.head_dim(), cfg.kv_heads());
        let std = cfg.init_std;
        let gate = usize::from(cfg.attn_output_gate);
        Self {
            q_proj: Linear::new(d, (1 + gate) * cfg.n_heads * hd, cfg.bias, std, rng, device),
            k_proj: Linear::new(d, kv * hd, cfg.bias, std, rng, device),
            v_proj: Linear::new(d, kv * hd, cfg.bias, std, rng, device),
            o_proj: Linear::new(cfg.n_heads * hd, d, cfg.bias, resid_std, rng, device),
            rope: (cfg.positions == crate::config::Positions::Rope)
                .then(|| Rope::new(cfg.rotary_dim(), cfg.max_seq_len, cfg.rope_theta, device)),
            q_norm: cfg.qk_norm.then(|| param([hd], device, || 1.0)),
            k_norm: cfg.qk_norm.then(|| param([hd], device, || 1.0)),
            output_gate: cfg.attn_output_gate,
            norm_eps: cfg.norm_eps,
            n_heads: cfg.n_heads,
            n_kv_heads: kv,
            head_dim: hd,
            window,
        }
    }

    /// Full-sequence causal attention.
    ///
    /// # Shapes
    /// - x: `[b, t, d]` → `[b, t, d]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.forward_cached(x, &mut KvCache::empty())
    }

    /// Attends from the new tokens `x` (positions `cache.len()..`) to the cached ones and to
    /// themselves, and appends their keys and values to the cache. With an empty cache this is
    /// the ordinary causal forward; with one new token it is an O(t) decoding step.
    ///
    /// # Shapes
    /// - x: `[b, t_new, d]` → `[b, t_new, d]`
    pub fn forward_cached(&self, x: Tensor<B, 3>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (h, kv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let start = cache.seen;

        let (q, gate) = if self.output_gate {
            // Per head: [query_h | gate_h] (Qwen3-Next's row layout).
            let both = self.q_proj.forward(x.clone()).reshape([b, t, h, 2 * hd]);
            let gate = both.clone().narrow(3, hd, hd).reshape([b, t, h * hd]);
            (both.narrow(3, 0, hd), Some(gate))
        } else {
            (self.q_proj.forward(x.clone()).reshape([b, t, h, hd]), None)
        };
        let q = head_norm(q.swap_dims(1, 2), &self.q_norm, self.norm_eps); // [b, h, t, hd]
        let k = self.k_proj.forward(x.clone()).reshape([b, t, kv, hd]).swap_dims(1, 2); // [b, kv, t, hd]
        let k = head_norm(k, &self.k_norm, self.norm_eps);
        let v = self.v_proj.forward(x).reshape([b, t, kv, hd]).swap_dims(1, 2);
        let (q, k) = match &self.rope {
            Some(rope) => (rope.apply(q, start), rope.apply(k, start)),
            None => (q, k),
        };

        let cached = cache.len();
        let k = match cache.k.take() {
            Some(prev) => Tensor::cat(vec![prev, k], 2),
            None => k,
        };
        let v = match cache.v.take() {
            Some(prev) => Tensor::cat(vec![prev, v], 2),
            None => v,
        };
        let t_all = cached + t;
        // Local attention: later queries see at most the last `window − 1` keys before them.
        let keep = if self.window > 0 { t_all.min(self.window - 1) } else { t_all };
        cache.k = Some(k.clone().narrow(2, t_all - keep, keep));
        cache.v = Some(v.clone().narrow(2, t_all - keep, keep));
        cache.seen += t;

        let out = if cached == 0 {
            // A whole sequence: the fused kernel where the backend has one.
            kernels::attention(q, k, v, self.window)
        } else {
            let (k, v) = (repeat_kv(k, h / kv), repeat_kv(v, h / kv)); // [b, h, t_all, hd]
            let scores = q.matmul(k.swap_dims(2, 3)) / (hd as f64).sqrt(); // [b, h, t, t_all]
            let window = if self.window > 0 { self.window } else { usize::MAX };
            let mask = band_mask::<B>(t, cached, window, &scores.device()); // [t, t_all]
            let scores = scores.mask_fill(mask.unsqueeze::<4>().expand([b, h, t, t_all]), f32::NEG_INFINITY);
            softmax(scores, 3).matmul(v)
        };
        let out = out.swap_dims(1, 2).reshape([b, t, h * hd]);
        let out = match gate {
            Some(gate) => out * sigmoid(gate),
            None => out,
        };
        self.o_proj.forward(out) // [b, t, h·hd] → [b, t, d]
    }
}

/// RMSNorm over each head's channels with gain `weight` (`[hd]`), or `x` as it is without one;
/// the fused kernel where the backend has one.
///
/// # Shapes
/// - x: `[b, heads, t, hd]` → `[b, heads, t, hd]`
fn head_norm<B: Backend>(
    x: Tensor<B, 4>,
    weight: &Option<burn::module::Param<Tensor<B, 1>>>,
    eps: f64,
) -> Tensor<B, 4> {
    match weight {
        Some(w) => {
            let [b, h, t, hd] = x.dims();
            kernels::rms_norm(x.reshape([b * h, t, hd]), w.val(), eps).reshape([b, h, t, hd])
        }
        None => x,
    }
}

/// Rotary position embedding tables (Su et al. 2021, "RoFormer"), `[max_seq_len, rotary_dim]`;
/// a head's channels past `rotary_dim` pass unrotated (partial RoPE).
#[derive(Module, Debug)]
pub struct Rope<B: Backend> {
    cos: Tensor<B, 2>,
    sin: Tensor<B, 2>,
}

impl<B: Backend> Rope<B> {
    pub fn new(rotary_dim: usize, max_seq_len: usize, theta: f64, device: &B::Device) -> Self {
        let half = rotary_dim / 2;
        let mut cos = Vec::with_capacity(max_seq_len * rotary_dim);
        let mut sin = Vec::with_capacity(max_seq_len * rotary_dim);
        for pos in 0..max_seq_len {
            // Llama layout: the angle of pair i is repeated in both halves of the head.
            for _ in 0..2 {
                for i in 0..half {
                    let inv_freq = theta.powf(-((2 * i) as f64) / rotary_dim as f64);
                    let angle = pos as f64 * inv_freq;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
        }
        Self {
            cos: float_tensor(TensorData::new(cos, [max_seq_len, rotary_dim]), device),
            sin: float_tensor(TensorData::new(sin, [max_seq_len, rotary_dim]), device),
        }
    }

    /// Rotates `x` (`[b, heads, t, hd]`) as if its tokens sat at positions `start..start + t`.
    pub fn apply(&self, x: Tensor<B, 4>, start: usize) -> Tensor<B, 4> {
        let [_, _, t, head_dim] = x.dims();
        let [max, hd] = self.cos.dims();
        if hd < head_dim {
            let rotated = self.apply(x.clone().narrow(3, 0, hd), start);
            return Tensor::cat(vec![rotated, x.narrow(3, hd, head_dim - hd)], 3);
        }
        assert!(start + t <= max, "position {} is past model.max_seq_len {max}", start + t);
        let cos = self.cos.clone().narrow(0, start, t).unsqueeze::<4>(); // [1, 1, t, hd]
        let sin = self.sin.clone().narrow(0, start, t).unsqueeze::<4>();
        let x1 = x.clone().narrow(3, 0, hd / 2);
        let x2 = x.clone().narrow(3, hd / 2, hd / 2);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3); // rotate_half
        x * cos + rotated * sin
    }
}

impl<B: Backend> SequenceMixer<B> for Attention<B> {
    type State = KvCache<B>;

    /// Global attention (`A`), or sliding-window attention over `model.window` tokens (`L`).
    fn build(
        cfg: &ModelConfig,
        kind: MixerKind,
        resid_scale: f64,
        rng: &mut Rng,
        device: &B::Device,
    ) -> Self {
        let window = if kind == MixerKind::Local { cfg.window } else { 0 };
        Attention::new(cfg, window, cfg.init_std * resid_scale, rng, device)
    }

    fn kind(&self) -> MixerKind {
        if self.window > 0 { MixerKind::Local } else { MixerKind::Attention }
    }

    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        Attention::forward(self, x)
    }

    fn forward_step(&self, x: Tensor<B, 3>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        self.forward_cached(x, cache)
    }

    fn empty_state(&self) -> KvCache<B> {
        KvCache::empty()
    }

    fn state_bytes(cache: &KvCache<B>) -> usize {
        tensor_bytes(&cache.k) + tensor_bytes(&cache.v)
    }

    fn linears_mut(&mut self) -> Vec<&mut Linear<B>> {
        vec![&mut self.q_proj, &mut self.k_proj, &mut self.v_proj, &mut self.o_proj]
    }
}

/// Attention's analytic side, from the config alone.
pub struct Spec;

impl MixerSpec for Spec {
    /// Parameters of one attention layer (global or local alike): q (and its output gate), k, v
    /// and o, their biases, and the qk-norm gains.
    fn params(cfg: &ModelConfig, _kind: MixerKind) -> LayerParams {
        let (d, bias) = (cfg.d_model, usize::from(cfg.bias));
        let (q, kv) = (cfg.n_heads * cfg.head_dim(), cfg.kv_heads() * cfg.head_dim());
        let q_out = q * (1 + usize::from(cfg.attn_output_gate)); // queries and gates
        LayerParams {
            matmul: d * q_out + 2 * d * kv + q * d,
            other: bias * (q_out + 2 * kv + d) + usize::from(cfg.qk_norm) * 2 * cfg.head_dim(),
            ..Default::default()
        }
    }

    /// Forward FLOPs per token of QKᵀ and AV: `2·d_attn·T` for global attention (causal: average
    /// context T/2; the llm.c convention, where PaLM/nanoGPT count 12·L·d·T without the causal
    /// halving), and `4·d_attn·c` for a window W, `c` the mean over positions p of min(p + 1, W).
    fn flops(cfg: &ModelConfig, kind: MixerKind, seq_len: usize) -> f64 {
        match kind {
            MixerKind::Local => local_flops(cfg, cfg.window, seq_len),
            _ => global_flops(cfg, seq_len),
        }
    }

    /// The f32 KV cache: per token of context for global attention; `window − 1` tokens, fixed,
    /// for local attention.
    fn state_bytes(cfg: &ModelConfig, kind: MixerKind) -> (usize, usize) {
        match kind {
            MixerKind::Local => (0, kv_bytes_per_token(cfg) * cfg.window.saturating_sub(1)),
            _ => (kv_bytes_per_token(cfg), 0),
        }
    }
}

pub fn global_flops(cfg: &ModelConfig, seq_len: usize) -> f64 {
    2.0 * (cfg.n_heads * cfg.head_dim()) as f64 * seq_len as f64
}

pub fn local_flops(cfg: &ModelConfig, window: usize, seq_len: usize) -> f64 {
    let t = seq_len.max(1);
    let mean_context = (0..t).map(|p| (p + 1).min(window)).sum::<usize>() as f64 / t as f64;
    4.0 * (cfg.n_heads * cfg.head_dim()) as f64 * mean_context
}

/// One token's keys and values in f32.
pub fn kv_bytes_per_token(cfg: &ModelConfig) -> usize {
    2 * cfg.kv_heads() * cfg.head_dim() * 4
}
