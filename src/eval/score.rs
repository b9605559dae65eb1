//! Per-token log-probabilities of a token sequence (`archlab score`): what a scoring client
//! (lm-evaluation-harness's log-likelihood requests, a perplexity filter) asks of a model.
//!
//! Position 0 has no log-probability (nothing precedes it); position `i > 0` gets
//! `log p(x_i | x_<i)` from one forward pass over the sequence, and optionally the `k` most
//! likely tokens there. A sequence longer than the model's context is an error, never cut.

use anyhow::{Result, bail};
use burn::tensor::activation::log_softmax;
use serde::Serialize;

use crate::data::tokenizer::Tokenizer;
use crate::kernels::Backend;
use crate::model::LanguageModel;
use crate::model::lm::ids_tensor;

/// One token of a scored sequence.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TokenScore {
    pub id: u32,
    /// The token's text (bytes that are not UTF-8 on their own show as U+FFFD).
    pub token: String,
    /// Where the token starts in the sequence's text, in bytes (the sum of the text bytes of
    /// the tokens before it).
    pub offset: usize,
    /// `ln p(token | tokens before it)`; `None` for the first token.
    pub logprob: Option<f64>,
    /// The most likely tokens at this position, most likely first (empty for the first token
    /// or without top-k).
    pub top: Vec<Alternative>,
}

/// A candidate token at a position.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Alternative {
    pub id: u32,
    pub token: String,
    pub logprob: f64,
}

/// The longest sequence `score_tokens` takes for a model whose positions go to `max_seq_len`.
pub fn check_length(n: usize, max_seq_len: usize) -> Result<()> {
    if n == 0 {
        bail!("nothing to score: the sequence has no tokens");
    }
    if n > max_seq_len {
        bail!(
            "the sequence has {n} tokens, more than the model's context of {max_seq_len} \
             (model.max_seq_len); split it, or score a file with `archlab eval --data`"
        );
    }
    Ok(())
}

/// Scores `ids` with `model`, with the `top_k` most likely tokens at every position.
pub fn score_tokens<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &Tokenizer,
    ids: &[u32],
    max_seq_len: usize,
    top_k: usize,
    device: &B::Device,
) -> Result<Vec<TokenScore>> {
    check_length(ids.len(), max_seq_len)?;
    let vocab = model.vocab_size();
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        bail!("token id {id} is outside the model's vocabulary of {vocab} (ids 0..{})", vocab - 1);
    }
    let t = ids.len();
    let logits = model.forward(ids_tensor::<B>(ids, [1, t], device));
    // Rows 0..t-1 predict tokens 1..t.
    let rows: Vec<f32> = log_softmax(logits, 2).into_data().convert::<f32>().to_vec().expect("f32 data");
    let bytes = tokenizer.token_bytes();
    let text = |id: u32| tokenizer.decode(&[id]);
    let mut out = Vec::with_capacity(t);
    let mut offset = 0;
    for (i, &id) in ids.iter().enumerate() {
        let (logprob, top) = if i == 0 {
            (None, Vec::new())
        } else {
            let row = &rows[(i - 1) * vocab..i * vocab];
            (Some(f64::from(row[id as usize])), most_likely(row, top_k, &text)?)
        };
        out.push(TokenScore { id, token: text(id)?, offset, logprob, top });
        offset += bytes.get(id as usize).copied().unwrap_or(0) as usize;
    }
    Ok(out)
}

/// The `k` largest entries of a log-probability row, largest first (ties: lower id first).
fn most_likely(row: &[f32], k: usize, text: &impl Fn(u32) -> Result<String>) -> Result<Vec<Alternative>> {
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    let k = k.min(row.len());
    if k == 0 {
        return Ok(Vec::new());
    }
    let by_prob = |a: &u32, b: &u32| row[*b as usize].total_cmp(&row[*a as usize]).then(a.cmp(b));
    order.select_nth_unstable_by(k - 1, by_prob);
    order.truncate(k);
    order.sort_by(by_prob);
    order
        .into_iter()
        .map(|id| Ok(Alternative { id, token: text(id)?, logprob: f64::from(row[id as usize]) }))
        .collect()
}
