//! Scoring a whole corpus (`archlab eval --data`): every token of a source, tokenized with the
//! run's tokenizer, predicted once.
//!
//! The token stream (documents joined as training joins them, each followed by the
//! end-of-text token when the tokenizer has one) is cut into consecutive windows of `seq_len`
//! targets, each window predicted from its own start (no context carried across a window
//! boundary, as the validation loss is measured). The last, shorter window is scored too:
//! every token but the first is a target exactly once, so the loss, perplexity and bits per
//! byte are those of the whole source, not of the part that fills whole batches.

use anyhow::{Result, bail};
use burn::tensor::ElementConversion;

use super::{ValMetrics, bits_per_byte};
use crate::data::batcher::TokenBatch;
use crate::data::sources::Source;
use crate::data::tokenizer::Tokenizer;
use crate::kernels::Backend;
use crate::model::LanguageModel;
use crate::model::lm::{batch_tensors, cross_entropy};

/// A corpus as token ids, and how much of it there was.
pub struct CorpusTokens {
    pub tokens: Vec<u32>,
    pub documents: usize,
}

/// Tokenizes every document of `source` with `tokenizer`, joined as training joins them.
pub fn tokenize(
    source: &Source,
    text_field: &str,
    tokenizer: &Tokenizer,
    name: &str,
) -> Result<CorpusTokens> {
    let eot = tokenizer.eot();
    let (mut tokens, mut documents) = (Vec::new(), 0);
    source.for_each_doc(text_field, |doc| {
        tokens.extend(tokenizer.encode(&doc)?);
        tokens.extend(eot);
        documents += 1;
        Ok(())
    })?;
    if tokens.len() < 2 {
        bail!(
            "{name} has {} tokens: scoring needs at least 2 (one to predict from, one to predict)",
            tokens.len()
        );
    }
    Ok(CorpusTokens { tokens, documents })
}

/// What scoring a stream gave: the metrics and what they cover.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamScore {
    pub metrics: ValMetrics,
    /// Target tokens scored (every token of the stream but the first, or `max_targets`).
    pub targets: usize,
    /// Bytes of text those targets stand for.
    pub bytes: u64,
    /// Summed loss of those targets, in nats.
    pub nats: f64,
}

/// Scores the first `max_targets` targets of `tokens` (all of them with `None`) in windows of
/// `seq_len` targets, `batch` windows at a time; `token_bytes` is the tokenizer's bytes per id.
pub fn score_stream<B: Backend>(
    model: &LanguageModel<B>,
    tokens: &[u32],
    seq_len: usize,
    batch: usize,
    max_targets: Option<usize>,
    token_bytes: &[u32],
    device: &B::Device,
) -> StreamScore {
    let available = tokens.len().saturating_sub(1);
    let targets = max_targets.map_or(available, |m| m.min(available));
    let stream = &tokens[..targets + 1];
    let (seq_len, batch) = (seq_len.max(1), batch.max(1));
    let full = targets / seq_len;
    let mut nats = 0.0;
    // Whole windows, `batch` at a time, then the shorter last window on its own.
    let mut first = 0;
    while first < full {
        let n = batch.min(full - first);
        nats += summed_loss(model, stream, first * seq_len, n, seq_len, device);
        first += n;
    }
    let rest = targets - full * seq_len;
    if rest > 0 {
        nats += summed_loss(model, stream, full * seq_len, 1, rest, device);
    }
    let bytes =
        stream[1..].iter().map(|&id| u64::from(token_bytes.get(id as usize).copied().unwrap_or(0))).sum();
    let loss = nats / targets.max(1) as f64;
    StreamScore {
        metrics: ValMetrics { loss, ppl: loss.exp(), bpb: bits_per_byte(nats, bytes), accuracy: None },
        targets,
        bytes,
        nats,
    }
}

/// The summed loss of `n` consecutive windows of `len` targets starting at token `start`.
fn summed_loss<B: Backend>(
    model: &LanguageModel<B>,
    stream: &[u32],
    start: usize,
    n: usize,
    len: usize,
    device: &B::Device,
) -> f64 {
    let (mut inputs, mut targets) = (Vec::with_capacity(n * len), Vec::with_capacity(n * len));
    for w in 0..n {
        let from = start + w * len;
        inputs.extend_from_slice(&stream[from..from + len]);
        targets.extend_from_slice(&stream[from + 1..from + len + 1]);
    }
    let tokens = TokenBatch { batch: n, seq_len: len, inputs, targets };
    let (x, y) = batch_tensors::<B>(&tokens, device);
    let mean = cross_entropy(model.forward(x), y).into_scalar().elem::<f64>();
    mean * (n * len) as f64
}
