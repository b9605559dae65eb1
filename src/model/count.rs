//! Analytic parameter and FLOP counts, from the config alone (no model is built).
//! Tests check `ParamCounts::total` against the built model's parameter count.

use serde::Serialize;

use super::config::{LayerKind, ModelConfig, NormKind, Positions};
use super::mixer::{self, LayerParams};
use super::registry::FfnKind;
use super::registry::MixerKind;

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
                let (per_token, fixed) = mixer::state_bytes(self, kind.mixer);
                LayerCount {
                    mixer: kind.mixer,
                    ffn: kind.ffn,
                    params: p.total(),
                    active: p.total() - p.idle_matmul - p.idle_other,
                    train_flops: 6.0 * (p.matmul - p.idle_matmul) as f64
                        + 3.0 * mixer::flops(self, kind.mixer, seq_len),
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
        mixer::params(self, kind.mixer)
            .add(mixer::channel_params(self, kind.ffn))
            .add(LayerParams { other: norms, ..Default::default() })
    }

    fn norm_params(&self) -> usize {
        self.d_model + if self.norm == NormKind::Layer { usize::from(self.bias) * self.d_model } else { 0 }
    }

    /// Decoding-state bytes of one sequence after `seq_len` tokens: every layer's growing part
    /// (a global attention KV cache) at that length plus its fixed part (SSM and delta-rule
    /// states, conv history, a sliding window's cache), as each mixer accounts for it.
    pub fn state_bytes(&self, seq_len: usize) -> usize {
        self.layer_counts(seq_len)
            .iter()
            .map(|l| l.state_bytes_per_token * seq_len + l.state_bytes_fixed)
            .sum()
    }

    /// Training FLOPs per token at context `seq_len`: `6·N_matmul` (for MoE, the k experts a
    /// token is routed to and the router, at full capacity; the dispatch itself is data
    /// movement, not FLOPs) plus, per layer, the sequence mixer's own work, ×3 for forward +
    /// backward:
    /// each mixer's `flops` in its own file (`mixer.rs` lists them).
    pub fn train_flops_per_token(&self, seq_len: usize) -> f64 {
        self.layer_counts(seq_len).iter().map(|l| l.train_flops).sum::<f64>()
            + 6.0 * (self.d_model * self.vocab_size) as f64
    }
}
