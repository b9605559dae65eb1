//! Held-out evaluation: validation loss, perplexity and bits per byte.

pub mod corpus;
pub mod generate;
pub mod health;
pub mod score;

use crate::kernels::Backend;
use burn::tensor::ElementConversion;

use crate::data::stream::Batch;
use crate::data::tasks::{Accuracy, TaskBatch};
use crate::model::LanguageModel;
use crate::model::lm::{batch_tensors, cross_entropy, mask_tensor, masked_cross_entropy};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ValMetrics {
    /// Mean cross-entropy, nats per token (per answer token on a synthetic task).
    pub loss: f64,
    pub ppl: f64,
    /// Bits per UTF-8 byte of the text the evaluated targets stand for: comparable across
    /// tokenizers (nanochat's val_bpb). NaN on a synthetic task (no text).
    pub bpb: f64,
    /// Synthetic tasks: the fraction of answer tokens predicted exactly (argmax).
    pub accuracy: Option<f64>,
}

/// Bits per byte: `nats`, the summed loss of some target tokens, over the `bytes` of text those
/// tokens stand for ([`crate::data::tokenizer::Tokenizer::token_bytes`]). The one definition
/// every report, `eval` and run use; NaN without bytes (a synthetic task has no text).
pub fn bits_per_byte(nats: f64, bytes: u64) -> f64 {
    if bytes == 0 { f64::NAN } else { nats / (std::f64::consts::LN_2 * bytes as f64) }
}

/// Evaluates `model` on the fixed validation batches. `token_bytes` (the tokenizer's bytes of
/// text per token id; `None` for a synthetic task) gives bits per byte exactly: the summed loss
/// of the evaluated target tokens over the bytes those targets stand for ([`bits_per_byte`]).
/// Batches with an answer mask (a task) are scored on their answers, and their accuracy is
/// measured too.
pub fn evaluate<B: Backend>(
    model: &LanguageModel<B>,
    batches: &[Batch],
    token_bytes: Option<&[u32]>,
    device: &B::Device,
) -> ValMetrics {
    let (mut total, mut weight) = (0.0, 0.0);
    let (mut nats, mut bytes) = (0.0, 0u64);
    let mut accuracy: Option<Accuracy> = None;
    for batch in batches {
        let (x, y) = batch_tensors::<B>(&batch.tokens, device);
        let logits = model.forward(x);
        match &batch.answer {
            None => {
                let mean = cross_entropy(logits, y).into_scalar().elem::<f64>();
                total += mean;
                weight += 1.0;
                if let Some(per_id) = token_bytes {
                    nats += mean * batch.tokens.targets.len() as f64;
                    bytes += batch
                        .tokens
                        .targets
                        .iter()
                        .map(|&id| u64::from(per_id.get(id as usize).copied().unwrap_or(0)))
                        .sum::<u64>();
                }
            }
            Some(answer) => {
                // Weight each batch by its answers: the mean over all answer tokens.
                let n = answer.iter().filter(|a| **a).count() as f64;
                let shape = [batch.tokens.batch, batch.tokens.seq_len];
                let mask = mask_tensor::<B>(answer, shape, device);
                total += n * masked_cross_entropy(logits.clone(), y, mask).into_scalar().elem::<f64>();
                weight += n;
                let a = Accuracy::of(&argmax_ids(logits), &batch.tokens, answer);
                accuracy.get_or_insert_with(Accuracy::default).merge(&a);
            }
        }
    }
    let loss = total / weight.max(1.0);
    ValMetrics {
        loss,
        ppl: loss.exp(),
        bpb: bits_per_byte(nats, bytes),
        accuracy: accuracy.map(|a| a.token_accuracy()),
    }
}

/// Accuracy of `model` on task batches (token and whole-sequence).
pub fn task_accuracy<B: Backend>(
    model: &LanguageModel<B>,
    batches: &[TaskBatch],
    device: &B::Device,
) -> Accuracy {
    let mut total = Accuracy::default();
    for batch in batches {
        let (x, _) = batch_tensors::<B>(&batch.tokens, device);
        total.merge(&Accuracy::of(&argmax_ids(model.forward(x)), &batch.tokens, &batch.answer));
    }
    total
}

/// The most likely next token at every position, `[b·t]`.
fn argmax_ids<B: Backend>(logits: burn::tensor::Tensor<B, 3>) -> Vec<u32> {
    logits
        .argmax(2)
        .into_data()
        .convert::<i64>()
        .into_vec::<i64>()
        .expect("argmax ids")
        .into_iter()
        .map(|i| i as u32)
        .collect()
}
