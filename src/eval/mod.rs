//! Held-out evaluation: validation loss, perplexity and bits per byte.

pub mod generate;

use burn::tensor::ElementConversion;
use burn::tensor::backend::Backend;

use crate::data::batcher::TokenBatch;
use crate::model::LanguageModel;
use crate::model::lm::batch_tensors;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValMetrics {
    /// Mean cross-entropy, nats per token.
    pub loss: f64,
    pub ppl: f64,
    /// Bits per UTF-8 byte of the text: comparable across tokenizers (nanochat's val_bpb).
    pub bpb: f64,
}

/// Evaluates `model` on the fixed validation batches. `bytes_per_token` converts nats per
/// token into bits per byte: bpb = loss / ln 2 / bytes_per_token.
pub fn evaluate<B: Backend>(
    model: &LanguageModel<B>,
    batches: &[TokenBatch],
    bytes_per_token: f64,
    device: &B::Device,
) -> ValMetrics {
    let mut total = 0.0;
    for batch in batches {
        let (x, y) = batch_tensors::<B>(batch, device);
        total += model.loss(x, y).into_scalar().elem::<f64>();
    }
    let loss = total / batches.len().max(1) as f64;
    ValMetrics { loss, ppl: loss.exp(), bpb: loss / std::f64::consts::LN_2 / bytes_per_token }
}
