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
use super::mixer::{LayerParams, MixerSpec, SequenceMixer, StateKnob, row_indices, select_rows, tensor_bytes};
use super::registry::MixerKind;
use crate::util::checks::{largest_divisor_at_most, must_be_positive};
use super::config::{ModelConfig, Positions};
use anyhow::bail;
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
///
/// Sequences decoded together may have seen different numbers of tokens: each row's entries
/// are right-aligned, and the `t_kept − min(seen, window − 1)` entries in front of a shorter
/// row's are padding that its queries do not see. `t_kept` is always `min(max seen, window − 1)`
/// (no limit for global attention), so the padding follows from `seen` alone.
#[derive(Clone, Debug)]
pub struct KvCache<B: Backend> {
    pub k: Option<Tensor<B, 4>>,
    pub v: Option<Tensor<B, 4>>,
    /// Tokens each row has seen: the absolute position of its next one. Empty until the first
    /// tokens arrive.
    pub seen: Vec<usize>,
}

impl<B: Backend> KvCache<B> {
    pub fn empty() -> Self {
        Self { k: None, v: None, seen: Vec::new() }
    }

    /// Cached entries per row, padding included (≤ the most any row has seen).
    pub fn len(&self) -> usize {
        self.k.as_ref().map_or(0, |k| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Leading padding entries of each row.
    fn padding(&self) -> Vec<usize> {
        let len = self.len();
        // Every row keeps its last `len` tokens at most (the window's cut applies to all alike).
        self.seen.iter().map(|&s| len - s.min(len)).collect()
    }

    /// Several sequences' caches as one batch: shorter rows padded in front with zeros.
    pub fn stack(caches: Vec<Self>) -> Self {
        let len = caches.iter().map(|c| c.len()).max().unwrap_or(0);
        let seen: Vec<usize> = caches.iter().flat_map(|c| c.seen.iter().copied()).collect();
        let shape = caches.iter().find_map(|c| c.k.as_ref().map(|k| k.dims()));
        let like = caches.iter().find_map(|c| c.k.as_ref().map(|k| (k.device(), k.dtype())));
        let pad_front = |t: Option<Tensor<B, 4>>, rows: usize| -> Option<Tensor<B, 4>> {
            let ([_, kv, _, hd], (device, dtype)) = (shape?, like.clone()?);
            let have = t.as_ref().map_or(0, |t| t.dims()[2]);
            let zeros = (have < len).then(|| Tensor::zeros([rows, kv, len - have, hd], (&device, dtype)));
            Some(Tensor::cat(zeros.into_iter().chain(t).collect(), 2))
        };
        let (mut ks, mut vs) = (Vec::new(), Vec::new());
        for c in caches {
            let rows = c.seen.len();
            ks.extend(pad_front(c.k, rows));
            vs.extend(pad_front(c.v, rows));
        }
        let cat = |parts: Vec<Tensor<B, 4>>| (!parts.is_empty()).then(|| Tensor::cat(parts, 0));
        Self { k: cat(ks), v: cat(vs), seen }
    }

    /// Rows `rows`, with the entries that are padding in every one of them dropped.
    pub fn select(self, rows: &[usize]) -> Self {
        let len = self.len();
        let seen: Vec<usize> = rows.iter().map(|&r| self.seen[r]).collect();
        // `len` is min(max seen, window − 1) before, so min(max seen of the kept rows, len) after.
        let keep = seen.iter().copied().max().unwrap_or(0).min(len);
        let cut = |t: Option<Tensor<B, 4>>| select_rows(t, rows).map(|t| t.narrow(2, len - keep, keep));
        Self { k: cut(self.k), v: cut(self.v), seen }
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
            rope: (cfg.positions == super::config::Positions::Rope)
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

    /// Attends from the new tokens `x` (each row's at positions `cache.seen[row]..`) to the
    /// cached ones and to themselves, and appends their keys and values to the cache. With an
    /// empty cache this is the ordinary causal forward; with one new token it is an O(t)
    /// decoding step.
    ///
    /// # Shapes
    /// - x: `[b, t_new, d]` → `[b, t_new, d]`
    ///
    /// # Panics
    /// If the cache holds another number of sequences than `x`.
    pub fn forward_cached(&self, x: Tensor<B, 3>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let [b, t, _] = x.dims();
        let (h, kv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        if cache.seen.is_empty() {
            cache.seen = vec![0; b];
        }
        assert_eq!(cache.seen.len(), b, "the decoding state holds {} sequences, the input {b}", cache.seen.len());
        let padding = cache.padding();
        let start = cache.seen.clone();

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
            Some(rope) => (rope.apply_at(q, &start), rope.apply_at(k, &start)),
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
        cache.seen.iter_mut().for_each(|s| *s += t);

        let out = if cached == 0 {
            // A whole sequence: the fused kernel where the backend has one.
            kernels::attention(q, k, v, self.window)
        } else {
            let (k, v) = (repeat_kv(k, h / kv), repeat_kv(v, h / kv)); // [b, h, t_all, hd]
            let scores = q.matmul(k.swap_dims(2, 3)) / (hd as f64).sqrt(); // [b, h, t, t_all]
            let window = if self.window > 0 { self.window } else { usize::MAX };
            let mask = if padding.iter().all(|&p| p == 0) {
                band_mask::<B>(t, cached, window, &scores.device()).unsqueeze::<4>() // [1, 1, t, t_all]
            } else {
                padded_band_mask::<B>(t, cached, window, &padding, &scores.device()).unsqueeze_dim::<4>(1)
            };
            let scores = scores.mask_fill(mask.expand([b, h, t, t_all]), f32::NEG_INFINITY);
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

/// [`band_mask`] for each row, which also hides the row's first `padding[row]` keys.
///
/// # Shapes
/// → `[b, t, cached + t]`, true where masked
fn padded_band_mask<B: Backend>(
    t: usize,
    cached: usize,
    window: usize,
    padding: &[usize],
    device: &B::Device,
) -> Tensor<B, 3, burn::tensor::Bool> {
    let t_all = cached + t;
    let data: Vec<bool> = padding
        .iter()
        .flat_map(|&pad| {
            (0..t).flat_map(move |i| (0..t_all).map(move |j| j < pad || j > cached + i || cached + i - j >= window))
        })
        .collect();
    Tensor::from_data(TensorData::new(data, [padding.len(), t, t_all]), device)
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
        self.apply_at(x, &[start])
    }

    /// [`Self::apply`] with each row's tokens at their own positions `starts[row]..` (one start
    /// for every row: the same positions for all).
    pub fn apply_at(&self, x: Tensor<B, 4>, starts: &[usize]) -> Tensor<B, 4> {
        let [b, _, t, _] = x.dims();
        let [max, rotary] = self.cos.dims();
        let last = starts.iter().max().copied().unwrap_or(0) + t;
        assert!(last <= max, "position {last} is past model.max_seq_len {max}");
        if starts.iter().all(|&s| s == starts[0]) {
            // The same positions for every row (training, prefill): the fused op where the
            // backend has one.
            let table = |m: &Tensor<B, 2>| m.clone().narrow(0, starts[0], t); // [t, rotary]
            return kernels::rope(x, table(&self.cos), table(&self.sin));
        }
        assert_eq!(starts.len(), b, "one start position per row");
        let positions: Vec<usize> = starts.iter().flat_map(|&s| s..s + t).collect();
        let index = row_indices::<B>(&positions, &x.device());
        let table = |m: &Tensor<B, 2>| m.clone().select(0, index.clone()).reshape([b, 1, t, rotary]);
        kernels::rope::rope(x, table(&self.cos), table(&self.sin))
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

    fn stack_states(states: Vec<KvCache<B>>) -> KvCache<B> {
        KvCache::stack(states)
    }

    fn select_states(state: KvCache<B>, rows: &[usize]) -> KvCache<B> {
        state.select(rows)
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
    /// Heads that divide the width and the key/value heads, a RoPE width that is even, and a
    /// window for local attention.
    fn validate(cfg: &ModelConfig, kind: MixerKind) -> anyhow::Result<()> {
        if kind == MixerKind::Local {
            must_be_positive(&[("model.window", cfg.window)])?;
        }
        let m = cfg;
        must_be_positive(&[("model.n_heads", m.n_heads), ("model.max_seq_len", m.max_seq_len)])?;
        if m.head_dim == 0 && !m.d_model.is_multiple_of(m.n_heads) {
            bail!(
                "model.d_model ({}) must be divisible by model.n_heads ({}); try n_heads = {}, or set \
                 model.head_dim",
                m.d_model,
                m.n_heads,
                largest_divisor_at_most(m.d_model, m.n_heads)
            );
        }
        let kv = m.kv_heads();
        if !m.n_heads.is_multiple_of(kv) {
            bail!("model.n_heads ({}) must be a multiple of model.n_kv_heads ({kv})", m.n_heads);
        }
        let f = m.partial_rotary_factor;
        if !(f > 0.0 && f <= 1.0) {
            bail!("model.partial_rotary_factor must be in (0, 1] (got {f}); 1 rotates every channel");
        }
        let (hd, rotary) = (m.head_dim(), m.rotary_dim());
        if m.positions == Positions::Rope && (rotary == 0 || !rotary.is_multiple_of(2)) {
            bail!(
                "RoPE needs an even number of rotated channels; head_dim {hd} × model.partial_rotary_factor \
                 {f} = {rotary}; choose a factor (or n_heads) that makes it even and at least 2"
            );
        }
        Ok(())
    }

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

    /// Local attention's window (its cache holds the last `window − 1` tokens); a global cache
    /// follows the width and the context alone.
    fn state_knob(cfg: &ModelConfig, kind: MixerKind) -> Option<StateKnob> {
        (kind == MixerKind::Local).then_some(StateKnob {
            key: "model.window",
            value: cfg.window,
            range: (2, 16_384),
            set: |c, v| c.window = v,
        })
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
