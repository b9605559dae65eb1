//! Analytic parameter and FLOP counts, from the config alone (no model is built).
//! Tests check `ParamCounts::total` against the built model's parameter count.

use serde::Serialize;

use crate::config::{FfnKind, LayerKind, MixerKind, MlpKind, ModelConfig, NormKind, Positions};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    pub total: usize,
    /// Token and position embedding tables. With a tied head the token table is also the
    /// output layer; it is still counted here, once.
    pub embedding: usize,
    /// `total - embedding` (Kaplan et al. 2020's N). An untied output head counts here.
    pub non_embedding: usize,
    /// Parameters one token uses: `total` minus the experts an MoE layer did not route it
    /// to (`(E − k)` experts per MoE layer); equal to `total` for a model without MoE.
    pub active: usize,
    /// Weights that multiply a token in a forward pass (the linear layers it goes through,
    /// MoE router and its k experts included, and the output head, tied or not); the N of the
    /// 6·N FLOPs rule.
    pub matmul: usize,
}

/// One layer's analytic counts: a row of `archlab describe`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LayerCount {
    pub mixer: MixerKind,
    pub ffn: FfnKind,
    /// All parameters of the layer (its norms included).
    pub params: usize,
    /// Those a token uses.
    pub active: usize,
    /// Training FLOPs per token of this layer at the given context (see
    /// [`ModelConfig::train_flops_per_token`]).
    pub train_flops: f64,
    /// Decoding state per sequence: bytes that grow with every token of context (a global
    /// attention KV cache, f32), and bytes that do not (SSM state, conv history, a sliding
    /// window's cache at its full size).
    pub state_bytes_per_token: usize,
    pub state_bytes_fixed: usize,
}

/// One layer's parameters: `matmul` (weights multiplying the token stream) and `other`;
/// `idle_*` are the parts of those a token does not use (the MoE experts it is not sent to).
#[derive(Clone, Copy, Debug, Default)]
struct LayerParams {
    matmul: usize,
    other: usize,
    idle_matmul: usize,
    idle_other: usize,
}

impl LayerParams {
    fn add(self, o: LayerParams) -> LayerParams {
        LayerParams {
            matmul: self.matmul + o.matmul,
            other: self.other + o.other,
            idle_matmul: self.idle_matmul + o.idle_matmul,
            idle_other: self.idle_other + o.idle_other,
        }
    }

    fn total(self) -> usize {
        self.matmul + self.other
    }
}

impl ModelConfig {
    pub fn param_counts(&self) -> ParamCounts {
        let (d, v) = (self.d_model, self.vocab_size);
        let layers: Vec<LayerParams> = self.layer_kinds().iter().map(|&k| self.layer_params(k)).collect();
        let positions = if self.positions == Positions::Learned { self.max_seq_len * d } else { 0 };
        // Meta tokens are learned inputs, counted with the embeddings.
        let embedding = v * d + positions + self.hymba.meta_tokens * d;
        let head = if self.tie_embeddings { 0 } else { d * v };
        let total = embedding + layers.iter().map(|l| l.total()).sum::<usize>() + self.norm_params() + head;
        let idle: usize = layers.iter().map(|l| l.idle_matmul + l.idle_other).sum();
        ParamCounts {
            total,
            embedding,
            non_embedding: total - embedding,
            active: total - idle,
            matmul: layers.iter().map(|l| l.matmul - l.idle_matmul).sum::<usize>() + d * v,
        }
    }

    /// Per-layer counts at context `seq_len`: the table `archlab describe` prints.
    pub fn layer_counts(&self, seq_len: usize) -> Vec<LayerCount> {
        self.layer_kinds()
            .into_iter()
            .map(|kind| {
                let p = self.layer_params(kind);
                let (per_token, fixed) = self.state_bytes(kind.mixer);
                LayerCount {
                    mixer: kind.mixer,
                    ffn: kind.ffn,
                    params: p.total(),
                    active: p.total() - p.idle_matmul - p.idle_other,
                    train_flops: 6.0 * (p.matmul - p.idle_matmul) as f64
                        + 3.0 * self.mixer_flops(kind.mixer, seq_len),
                    state_bytes_per_token: per_token,
                    state_bytes_fixed: fixed,
                }
            })
            .collect()
    }

    fn layer_kinds(&self) -> Vec<LayerKind> {
        self.layers().unwrap_or_else(|e| panic!("counting an invalid model config: {e:#}"))
    }

    /// A layer: its norms, sequence mixer and channel mixer.
    fn layer_params(&self, kind: LayerKind) -> LayerParams {
        let norms = self.norm_params() * (1 + usize::from(kind.ffn != FfnKind::None));
        self.mixer_params(kind.mixer)
            .add(self.ffn_params(kind.ffn))
            .add(LayerParams { other: norms, ..Default::default() })
    }

    fn norm_params(&self) -> usize {
        self.d_model + if self.norm == NormKind::Layer { usize::from(self.bias) * self.d_model } else { 0 }
    }

    fn mixer_params(&self, mixer: MixerKind) -> LayerParams {
        let d = self.d_model;
        match mixer {
            MixerKind::Attention | MixerKind::Local => {
                let bias = usize::from(self.bias);
                let (q, kv) = (self.n_heads * self.head_dim(), self.kv_heads() * self.head_dim());
                let q_out = q * (1 + usize::from(self.attn_output_gate)); // queries and gates
                LayerParams {
                    matmul: d * q_out + 2 * d * kv + q * d,
                    other: bias * (q_out + 2 * kv + d) + usize::from(self.qk_norm) * 2 * self.head_dim(),
                    ..Default::default()
                }
            }
            MixerKind::Mamba => {
                let c = &self.mamba;
                let (di, n, r, bias) = (c.inner(d), c.d_state, c.rank(d), usize::from(c.bias));
                LayerParams {
                    // in_proj, x_proj, dt_proj, out_proj
                    matmul: d * 2 * di + di * (r + 2 * n) + r * di + di * d,
                    // their biases, conv taps and bias, A_log, D, Jamba's norms
                    other: bias * (2 * di + d)
                        + di
                        + di * c.d_conv
                        + usize::from(c.conv_bias) * di
                        + di * n
                        + di
                        + usize::from(c.inner_norms) * (r + 2 * n),
                    ..Default::default()
                }
            }
            MixerKind::Mamba2 => {
                let c = &self.mamba2;
                let (di, heads, conv, bias) =
                    (c.inner(d), c.heads(d), c.conv_channels(d), usize::from(c.bias));
                let proj = di + conv + heads;
                LayerParams {
                    matmul: d * proj + di * d,
                    // projection biases, conv, dt_bias, A_log, D, gated-norm gain
                    other: bias * (proj + d)
                        + conv * c.d_conv
                        + usize::from(c.conv_bias) * conv
                        + 3 * heads
                        + di,
                    ..Default::default()
                }
            }
            MixerKind::GatedDeltaNet | MixerKind::DeltaNet => {
                let c = &self.gdn;
                let gated = mixer == MixerKind::GatedDeltaNet;
                let (conv, hv) = (c.conv_channels(d), c.value_heads(d));
                LayerParams {
                    // in_proj, out_proj
                    matmul: d * c.projections(d, gated) + c.value_dim(d) * d,
                    // conv taps and bias, A_log and dt_bias (gated), the output norm's gain
                    other: conv * c.d_conv
                        + usize::from(c.conv_bias) * conv
                        + usize::from(gated) * 2 * hv
                        + c.value_head_dim(),
                    ..Default::default()
                }
            }
            // Both branches and the two per-channel scales.
            MixerKind::Hymba => self
                .mixer_params(MixerKind::Attention)
                .add(self.mixer_params(MixerKind::Mamba))
                .add(LayerParams { other: 2 * d, ..Default::default() }),
        }
    }

    fn ffn_params(&self, ffn: FfnKind) -> LayerParams {
        match ffn {
            FfnKind::None => LayerParams::default(),
            FfnKind::Mlp => self.mlp_params(self.d_ff),
            FfnKind::Moe => {
                let c = &self.moe;
                let (d, e, k) = (self.d_model, c.n_experts, c.top_k);
                let expert = self.mlp_params(c.expert_width(self.d_ff));
                let shared = if c.shared_expert_d_ff > 0 {
                    self.mlp_params(c.shared_expert_d_ff)
                } else {
                    LayerParams::default()
                };
                let gates = d * e + usize::from(c.shared_expert_gate) * d;
                LayerParams {
                    matmul: e * expert.matmul + shared.matmul + gates,
                    other: e * expert.other + shared.other,
                    idle_matmul: (e - k) * expert.matmul,
                    idle_other: (e - k) * expert.other,
                }
            }
        }
    }

    /// One MLP of hidden width `f`.
    fn mlp_params(&self, f: usize) -> LayerParams {
        let (d, bias) = (self.d_model, usize::from(self.bias));
        let (matmul, other) = match self.mlp {
            MlpKind::Swiglu => (3 * d * f, bias * (2 * f + d)),
            MlpKind::Gelu => (2 * d * f, bias * (f + d)),
        };
        LayerParams { matmul, other, ..Default::default() }
    }

    /// Training FLOPs per token at context `seq_len`: `6·N_matmul` (for MoE, the k experts a
    /// token is routed to and the router, at full capacity; the dispatch itself is data
    /// movement, not FLOPs) plus, per layer, the sequence mixer's own work, ×3 for forward +
    /// backward:
    /// - attention: `2·d_attn·T` (QKᵀ and AV, causal: average context T/2), the llm.c
    ///   convention; PaLM/nanoGPT count 12·L·d·T (no causal halving);
    /// - local attention (window W): `4·d_attn·c` with `c` the mean context, the mean over
    ///   positions p of min(p + 1, W);
    /// - Mamba: the convolution `2·di·k` and the scan, ~9 FLOPs per state entry (exp(ΔA), ΔBx,
    ///   the multiply-add update, the C readout), `9·di·n`;
    /// - Mamba-2 (chunked SSD, chunk Q): the within-chunk matmuls `Q·(2·g·n + 2·di)` (C Bᵀ
    ///   and its product with x, causal halves), the chunk states and their readout `4·di·n`,
    ///   and the convolution;
    /// - Hymba: its attention (global or windowed) plus its Mamba;
    /// - (Gated) DeltaNet (chunked WY form, chunk C): per value head `4·C·dk` (β k kᵀ, q kᵀ),
    ///   the triangular inverse, `U`, `W` and `P·V'` (`O(C·(dk + dv) + C²·log C)`), and
    ///   `6·dk·dv` for the state's three products, plus the convolution.
    pub fn train_flops_per_token(&self, seq_len: usize) -> f64 {
        self.layer_counts(seq_len).iter().map(|l| l.train_flops).sum::<f64>()
            + 6.0 * (self.d_model * self.vocab_size) as f64
    }

    /// The non-matmul forward FLOPs per token of a sequence mixer.
    fn mixer_flops(&self, mixer: MixerKind, seq_len: usize) -> f64 {
        let d_attn = (self.n_heads * self.head_dim()) as f64;
        let local = |w: usize| {
            let t = seq_len.max(1);
            let mean_context = (0..t).map(|p| (p + 1).min(w)).sum::<usize>() as f64 / t as f64;
            4.0 * d_attn * mean_context
        };
        match mixer {
            MixerKind::Attention => 2.0 * d_attn * seq_len as f64,
            MixerKind::Local => local(self.window),
            MixerKind::Mamba => {
                let c = &self.mamba;
                let di = c.inner(self.d_model) as f64;
                2.0 * di * c.d_conv as f64 + 9.0 * di * c.d_state as f64
            }
            MixerKind::Mamba2 => {
                let c = &self.mamba2;
                let (di, n, g) = (c.inner(self.d_model) as f64, c.d_state as f64, c.n_groups as f64);
                let q = c.chunk_size.min(seq_len) as f64;
                q * (2.0 * g * n + 2.0 * di)
                    + 4.0 * di * n
                    + 2.0 * c.conv_channels(self.d_model) as f64 * c.d_conv as f64
            }
            MixerKind::GatedDeltaNet | MixerKind::DeltaNet => {
                let c = &self.gdn;
                let (hv, dk, dv) =
                    (c.value_heads(self.d_model) as f64, c.head_dim as f64, c.value_head_dim() as f64);
                let q = c.chunk_size.min(seq_len.max(1)) as f64;
                let squarings = (q.log2().ceil() - 1.0).max(0.0);
                // Per value head and token, as `delta_rule::chunked` computes them: β k kᵀ and
                // q kᵀ (2·C·dk each), the doubling inverse (2 C×C products per squaring),
                // U and W (2·C·(dv + dk)), P·V' (2·C·dv), and W·S, q·S and the state update
                // (2·dk·dv each); plus the convolution.
                hv * (4.0 * q * dk
                    + 4.0 * squarings * q * q
                    + 2.0 * q * (dv + dk)
                    + 2.0 * q * dv
                    + 6.0 * dk * dv)
                    + 2.0 * c.conv_channels(self.d_model) as f64 * c.d_conv as f64
            }
            MixerKind::Hymba => {
                let attn = if self.hymba.window > 0 {
                    local(self.hymba.window)
                } else {
                    2.0 * d_attn * seq_len as f64
                };
                attn + self.mixer_flops(MixerKind::Mamba, seq_len)
            }
        }
    }

    /// Decoding state of one sequence in f32: (bytes per token of context, fixed bytes).
    fn state_bytes(&self, mixer: MixerKind) -> (usize, usize) {
        let kv_per_token = 2 * self.kv_heads() * self.head_dim() * 4;
        match mixer {
            MixerKind::Attention => (kv_per_token, 0),
            MixerKind::Local => (0, kv_per_token * self.window.saturating_sub(1)),
            MixerKind::Mamba => {
                let c = &self.mamba;
                let di = c.inner(self.d_model);
                (0, 4 * (di * c.d_state + di * (c.d_conv - 1)))
            }
            MixerKind::Mamba2 => {
                let c = &self.mamba2;
                let (di, conv) = (c.inner(self.d_model), c.conv_channels(self.d_model));
                (0, 4 * (di * c.d_state + conv * (c.d_conv - 1)))
            }
            MixerKind::GatedDeltaNet | MixerKind::DeltaNet => {
                let c = &self.gdn;
                let d = self.d_model;
                (
                    0,
                    4 * (c.value_heads(d) * c.head_dim * c.value_head_dim()
                        + c.conv_channels(d) * (c.d_conv - 1)),
                )
            }
            MixerKind::Hymba => {
                let (_, ssm) = self.state_bytes(MixerKind::Mamba);
                if self.hymba.window > 0 {
                    (0, ssm + kv_per_token * (self.hymba.window - 1))
                } else {
                    (kv_per_token, ssm)
                }
            }
        }
    }
}
