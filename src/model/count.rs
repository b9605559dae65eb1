//! Analytic parameter and FLOP counts, from the config alone (no model is built).
//! Tests check `ParamCounts::total` against the built model's parameter count.

use serde::Serialize;

use crate::config::{MlpKind, ModelConfig, Positions};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    pub total: usize,
    /// Token and position embedding tables. With a tied head the token table is also the
    /// output layer; it is still counted here, once.
    pub embedding: usize,
    /// `total - embedding` (Kaplan et al. 2020's N). An untied output head counts here.
    pub non_embedding: usize,
    /// Weights that multiply the token stream in a forward pass (all linear layers and the
    /// output head, tied or not); the N of the 6·N FLOPs rule.
    pub matmul: usize,
}

impl ModelConfig {
    pub fn param_counts(&self) -> ParamCounts {
        let (d, v, f) = (self.d_model, self.vocab_size, self.d_ff);
        let (q, kv) = (self.n_heads * self.head_dim(), self.kv_heads() * self.head_dim());
        let bias = usize::from(self.bias);
        let norm = d + if self.norm == crate::config::NormKind::Layer { bias * d } else { 0 };

        let attention_mm = d * q + 2 * d * kv + q * d;
        let attention_bias = bias * (q + 2 * kv + d);
        let (mlp_mm, mlp_bias) = match self.mlp {
            MlpKind::Swiglu => (3 * d * f, bias * (2 * f + d)),
            MlpKind::Gelu => (2 * d * f, bias * (f + d)),
        };
        let layer = attention_mm + attention_bias + mlp_mm + mlp_bias + 2 * norm;

        let positions = if self.positions == Positions::Learned { self.max_seq_len * d } else { 0 };
        let embedding = v * d + positions;
        let head = if self.tie_embeddings { 0 } else { d * v };
        let total = embedding + self.n_layers * layer + norm + head;
        ParamCounts {
            total,
            embedding,
            non_embedding: total - embedding,
            matmul: self.n_layers * (attention_mm + mlp_mm) + d * v,
        }
    }

    /// Training FLOPs per token at context `seq_len`: `6·N_matmul + 6·L·d_attn·T`.
    /// The attention term counts QKᵀ and AV causally (average context T/2, ×3 for
    /// forward + backward), the llm.c convention; PaLM/nanoGPT use 12 (no causal halving).
    pub fn train_flops_per_token(&self, seq_len: usize) -> f64 {
        let d_attn = (self.n_heads * self.head_dim()) as f64;
        6.0 * self.param_counts().matmul as f64 + 6.0 * self.n_layers as f64 * d_attn * seq_len as f64
    }
}
