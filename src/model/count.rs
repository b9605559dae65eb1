//! Analytic parameter and FLOP counts, from the config alone (no model is built).
//! Tests check `ParamCounts::total` against the built model's parameter count.

use serde::Serialize;

use crate::config::{FfnKind, MixerKind, MlpKind, ModelConfig, NormKind, Positions};

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

/// One layer's parameters: `matmul` (weights multiplying the token stream) and `other`;
/// `idle_*` are the parts of those a token does not use (the MoE experts it is not sent to).
#[derive(Clone, Copy, Debug, Default)]
struct LayerParams {
    matmul: usize,
    other: usize,
    idle_matmul: usize,
    idle_other: usize,
}

impl ModelConfig {
    pub fn param_counts(&self) -> ParamCounts {
        let (d, v) = (self.d_model, self.vocab_size);
        let norm = self.norm_params();
        let mixer = self.seq_mixer_params();
        let ffn = self.ffn_params();
        let layer = mixer.matmul
            + mixer.other
            + ffn.matmul
            + ffn.other
            + norm * (1 + usize::from(self.ffn != FfnKind::None));

        let positions = if self.positions == Positions::Learned { self.max_seq_len * d } else { 0 };
        let embedding = v * d + positions;
        let head = if self.tie_embeddings { 0 } else { d * v };
        let total = embedding + self.n_layers * layer + norm + head;
        let idle = ffn.idle_matmul + ffn.idle_other;
        ParamCounts {
            total,
            embedding,
            non_embedding: total - embedding,
            active: total - self.n_layers * idle,
            matmul: self.n_layers * (mixer.matmul + ffn.matmul - ffn.idle_matmul) + d * v,
        }
    }

    fn norm_params(&self) -> usize {
        self.d_model + if self.norm == NormKind::Layer { usize::from(self.bias) * self.d_model } else { 0 }
    }

    fn seq_mixer_params(&self) -> LayerParams {
        let d = self.d_model;
        match self.mixer {
            MixerKind::Attention => {
                let bias = usize::from(self.bias);
                let (q, kv) = (self.n_heads * self.head_dim(), self.kv_heads() * self.head_dim());
                LayerParams {
                    matmul: d * q + 2 * d * kv + q * d,
                    other: bias * (q + 2 * kv + d),
                    ..Default::default()
                }
            }
            MixerKind::Mamba => {
                let c = &self.mamba;
                let (di, n, r, bias) = (c.inner(d), c.d_state, c.rank(d), usize::from(c.bias));
                LayerParams {
                    // in_proj, x_proj, dt_proj, out_proj
                    matmul: d * 2 * di + di * (r + 2 * n) + r * di + di * d,
                    // their biases, conv taps and bias, A_log, D
                    other: bias * (2 * di + d)
                        + di
                        + di * c.d_conv
                        + usize::from(c.conv_bias) * di
                        + di * n
                        + di,
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
        }
    }

    fn ffn_params(&self) -> LayerParams {
        match self.ffn {
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
    /// movement, not FLOPs) plus, per layer, the
    /// sequence mixer's own work, ×3 for forward + backward:
    /// - attention: `2·d_attn·T` (QKᵀ and AV, causal: average context T/2), the llm.c
    ///   convention; PaLM/nanoGPT count 12·L·d·T (no causal halving);
    /// - Mamba: the convolution `2·di·k` and the scan, ~9 FLOPs per state entry (exp(ΔA), ΔBx,
    ///   the multiply-add update, the C readout), `9·di·n`;
    /// - Mamba-2 (chunked SSD, chunk Q): the within-chunk matmuls `Q·(2·g·n + 2·di)` (C Bᵀ
    ///   and its product with x, causal halves), the chunk states and their readout `4·di·n`,
    ///   and the convolution.
    pub fn train_flops_per_token(&self, seq_len: usize) -> f64 {
        let mixer = match self.mixer {
            MixerKind::Attention => 2.0 * (self.n_heads * self.head_dim()) as f64 * seq_len as f64,
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
        };
        6.0 * self.param_counts().matmul as f64 + 3.0 * self.n_layers as f64 * mixer
    }
}
