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

/// A tokenizer with each token's length in bytes, for text offsets ([`Tokenizer::token_bytes`]
/// reads the whole vocabulary, so a scorer of many sequences computes it once).
pub struct Text<'a> {
    pub tokenizer: &'a Tokenizer,
    pub bytes: Vec<u32>,
}

impl<'a> Text<'a> {
    pub fn new(tokenizer: &'a Tokenizer) -> Self {
        Self { tokenizer, bytes: tokenizer.token_bytes() }
    }
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
    text: &Text,
    ids: &[u32],
    max_seq_len: usize,
    top_k: usize,
    device: &B::Device,
) -> Result<Vec<TokenScore>> {
    let mut scored = score_batch(model, text, &[ids], max_seq_len, top_k, device)?;
    Ok(scored.pop().expect("one sequence in, one out").tokens)
}

/// A scored sequence and the model's next-token distribution after it.
#[derive(Clone, Debug)]
pub struct Scored {
    pub tokens: Vec<TokenScore>,
    /// `ln p(· | the whole sequence)` over the vocabulary: where a generated token comes from.
    pub next: Vec<f32>,
}

/// Scores several sequences in one forward pass: they are right-padded to the longest, and
/// since every mixer is causal the padding after a sequence never reaches its positions (a
/// batch scores what each sequence alone scores, up to float summation order).
pub fn score_batch<B: Backend>(
    model: &LanguageModel<B>,
    text: &Text,
    sequences: &[&[u32]],
    max_seq_len: usize,
    top_k: usize,
    device: &B::Device,
) -> Result<Vec<Scored>> {
    let vocab = model.vocab_size();
    for ids in sequences {
        check_length(ids.len(), max_seq_len)?;
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            bail!("token id {id} is outside the model's vocabulary of {vocab} (ids 0..{})", vocab - 1);
        }
    }
    let (b, t) = (sequences.len(), sequences.iter().map(|s| s.len()).max().unwrap_or(0));
    if b == 0 {
        return Ok(Vec::new());
    }
    let mut padded = vec![0u32; b * t];
    for (row, ids) in padded.chunks_mut(t).zip(sequences) {
        row[..ids.len()].copy_from_slice(ids);
    }
    let log_probs = log_softmax(model.forward(ids_tensor::<B>(&padded, [b, t], device)), 2);
    let mut out = Vec::with_capacity(b);
    for (i, ids) in sequences.iter().enumerate() {
        // Rows 0..n-1 predict tokens 1..n; row n-1 predicts the token after the sequence.
        let n = ids.len();
        let rows: Vec<f32> = log_probs
            .clone()
            .slice([i..i + 1, 0..n, 0..vocab])
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 data");
        let tokens = score_rows(text, ids, &rows, vocab, top_k)?;
        out.push(Scored { tokens, next: rows[(n - 1) * vocab..].to_vec() });
    }
    Ok(out)
}

/// Every token of `ids` scored by the log-probability rows of the model's output (`rows`,
/// `[≥ n − 1, vocab]`: row p predicts token p + 1), at byte offsets that add up the tokens'
/// lengths, with the `top_k` most likely tokens at each position.
pub fn score_rows(
    text: &Text,
    ids: &[u32],
    rows: &[f32],
    vocab: usize,
    top_k: usize,
) -> Result<Vec<TokenScore>> {
    let mut tokens = Vec::with_capacity(ids.len());
    let mut offset = 0;
    for (p, &id) in ids.iter().enumerate() {
        let row = (p > 0).then(|| &rows[(p - 1) * vocab..p * vocab]);
        tokens.push(token_score(text.tokenizer, row, id, offset, top_k)?);
        offset += text.bytes.get(id as usize).copied().unwrap_or(0) as usize;
    }
    Ok(tokens)
}

/// Token `id` at byte `offset`, scored by the log-probability `row` that predicted it
/// (`None` for a sequence's first token), with the `top_k` most likely tokens of that row.
pub fn token_score(
    tokenizer: &Tokenizer,
    row: Option<&[f32]>,
    id: u32,
    offset: usize,
    top_k: usize,
) -> Result<TokenScore> {
    let text = |id: u32| tokenizer.decode(&[id]);
    let (logprob, top) = match row {
        None => (None, Vec::new()),
        Some(row) => (Some(f64::from(row[id as usize])), most_likely(row, top_k, &text)?),
    };
    Ok(TokenScore { id, token: text(id)?, offset, logprob, top })
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
