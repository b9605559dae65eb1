//! The model side of the server: one thread owns the model and answers [`Job`]s from a queue.
//!
//! Whatever is waiting when the thread turns to the queue is answered together: every prompt
//! that generates at most one token (the scoring requests of lm-evaluation-harness) goes
//! through [`score_batch`], shortest first, as few forward passes as the batch limits allow;
//! prompts that generate more are prefilled and decoded one at a time with the model's
//! decoding state. A job whose client has gone (its reply channel closed) is dropped before
//! its turn and stopped between generated tokens, so a disconnect frees its slot.

use std::sync::mpsc::Receiver;

use anyhow::Result;
use burn::tensor::activation::log_softmax;
use tokio::sync::oneshot;

use super::protocol::{Completion, Finish};
use crate::data::tokenizer::Tokenizer;
use crate::eval::generate::{SamplingConfig, sample};
use crate::eval::score::{Scored, TokenScore, score_batch, score_rows, token_score};
use crate::kernels::Backend;
use crate::model::LanguageModel;
use crate::model::lm::ids_tensor;
use crate::rng::Rng;

/// What a job asks of each of its prompts.
#[derive(Clone, Debug)]
pub struct Params {
    pub max_tokens: usize,
    /// Alternatives to list per position.
    pub top_logprobs: usize,
    /// `temperature`, `top_k`, `top_p` and `seed` (its `max_new_tokens` is not read).
    pub sampling: SamplingConfig,
    pub stop: Vec<String>,
}

/// One request: its prompts (token ids, checked against the model's vocabulary and context),
/// and where the answer goes (an error message if the model failed).
pub struct Job {
    pub prompts: Vec<Vec<u32>>,
    pub params: Params,
    pub reply: oneshot::Sender<Result<Vec<Completion>, String>>,
}

/// How much one forward pass may take.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Sequences per forward pass (1: no batching).
    pub max_batch: usize,
    /// Padded tokens per forward pass (a longer single sequence goes alone).
    pub max_batch_tokens: usize,
    /// The longest prompt (`score_batch`'s check).
    pub max_prompt: usize,
}

/// Answers jobs until every sender is dropped.
pub fn run<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &Tokenizer,
    limits: Limits,
    jobs: &Receiver<Job>,
    device: &B::Device,
) {
    let text = Text { tokenizer, bytes: tokenizer.token_bytes() };
    while let Ok(first) = jobs.recv() {
        let mut waiting = vec![first];
        waiting.extend(jobs.try_iter());
        answer(model, &text, limits, waiting, device);
    }
}

/// The tokenizer, with each token's length in bytes (for text offsets; computed once, as it
/// reads the whole vocabulary).
struct Text<'a> {
    tokenizer: &'a Tokenizer,
    bytes: Vec<u32>,
}

/// Answers a set of jobs that arrived together.
fn answer<B: Backend>(
    model: &LanguageModel<B>,
    text: &Text,
    limits: Limits,
    mut jobs: Vec<Job>,
    device: &B::Device,
) {
    jobs.retain(|j| !j.reply.is_closed());
    let mut done: Vec<Vec<Option<Completion>>> = jobs.iter().map(|j| vec![None; j.prompts.len()]).collect();
    let mut failed: Vec<Option<String>> = vec![None; jobs.len()];

    // Scoring (at most one generated token): batched across jobs, shortest first.
    let mut scoring: Vec<(usize, usize)> = jobs
        .iter()
        .enumerate()
        .filter(|(_, j)| j.params.max_tokens <= 1)
        .flat_map(|(ji, j)| (0..j.prompts.len()).map(move |pi| (ji, pi)))
        .collect();
    scoring.sort_by_key(|&(ji, pi)| jobs[ji].prompts[pi].len());
    for chunk in batches(&scoring, |&(ji, pi)| jobs[ji].prompts[pi].len(), limits) {
        let sequences: Vec<&[u32]> = chunk.iter().map(|&(ji, pi)| jobs[ji].prompts[pi].as_slice()).collect();
        let top_k = chunk.iter().map(|&(ji, _)| jobs[ji].params.top_logprobs).max().unwrap_or(0);
        let scored =
            score_batch(model, text.tokenizer, &text.bytes, &sequences, limits.max_prompt, top_k, device)
                .and_then(|all| {
                    chunk
                        .iter()
                        .zip(all)
                        .map(|(&(ji, pi), s)| Ok(((ji, pi), one_token(text, s, &jobs[ji].params, pi)?)))
                        .collect::<Result<Vec<_>>>()
                });
        match scored {
            Ok(all) => all.into_iter().for_each(|((ji, pi), c)| done[ji][pi] = Some(c)),
            Err(e) => chunk.iter().for_each(|&(ji, _)| failed[ji] = Some(format!("{e:#}"))),
        }
    }

    // Generation: one prompt at a time.
    for (ji, job) in jobs.iter().enumerate().filter(|(_, j)| j.params.max_tokens > 1) {
        for (pi, ids) in job.prompts.iter().enumerate() {
            if failed[ji].is_some() || job.reply.is_closed() {
                break;
            }
            match generate(model, text, ids, &job.params, pi, device, || job.reply.is_closed()) {
                Ok(c) => done[ji][pi] = Some(c),
                Err(e) => failed[ji] = Some(format!("{e:#}")),
            }
        }
    }

    for ((job, completions), failure) in jobs.into_iter().zip(done).zip(failed) {
        let answer = match failure {
            Some(e) => Err(e),
            None => completions.into_iter().map(|c| c.ok_or_else(|| "client gone".to_string())).collect(),
        };
        // The client may have gone meanwhile; nothing to do then.
        let _ = job.reply.send(answer);
    }
}

/// Splits length-sorted items into forward passes within the limits.
fn batches<T: Copy>(items: &[T], len: impl Fn(&T) -> usize, limits: Limits) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut current: Vec<T> = Vec::new();
    for item in items {
        // Sorted by length: this item is the longest of the pass so far.
        let padded = (current.len() + 1) * len(item);
        if !current.is_empty() && (current.len() >= limits.max_batch || padded > limits.max_batch_tokens) {
            out.push(std::mem::take(&mut current));
        }
        current.push(*item);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A scored prompt completed by at most one token drawn from its next-token distribution.
fn one_token(text: &Text, scored: Scored, params: &Params, prompt_index: usize) -> Result<Completion> {
    let prompt_ids: Vec<u32> = scored.tokens.iter().map(|t| t.id).collect();
    let mut completion = Completion {
        prompt_text: text.tokenizer.decode(&prompt_ids)?,
        prompt: scored.tokens,
        generated: Vec::new(),
        text: String::new(),
        finish: Finish::Length,
    };
    if params.max_tokens == 1 {
        let mut rng = Rng::fork(params.sampling.seed, &format!("sampling {prompt_index}"));
        let id = sample(&scored.next, &params.sampling, &mut rng);
        push_token(text, &mut completion, &scored.next, id, params)?;
    }
    Ok(completion)
}

/// Prefills `ids`, then draws up to `max_tokens` tokens, one decoding step each.
fn generate<B: Backend>(
    model: &LanguageModel<B>,
    text: &Text,
    ids: &[u32],
    params: &Params,
    prompt_index: usize,
    device: &B::Device,
    cancelled: impl Fn() -> bool,
) -> Result<Completion> {
    let vocab = model.vocab_size();
    let mut state = model.decode_state();
    let rows_of = |logits| -> Vec<f32> {
        log_softmax(logits, 2).into_data().convert::<f32>().to_vec().expect("f32 data")
    };
    let rows = rows_of(model.forward_step(ids_tensor::<B>(ids, [1, ids.len()], device), &mut state));
    let prompt = score_rows(text.tokenizer, &text.bytes, ids, &rows, vocab, params.top_logprobs)?;
    let mut completion = Completion {
        prompt,
        prompt_text: text.tokenizer.decode(ids)?,
        generated: Vec::new(),
        text: String::new(),
        finish: Finish::Length,
    };
    let mut next = rows[(ids.len() - 1) * vocab..].to_vec();
    let mut rng = Rng::fork(params.sampling.seed, &format!("sampling {prompt_index}"));
    for _ in 0..params.max_tokens {
        let id = sample(&next, &params.sampling, &mut rng);
        if push_token(text, &mut completion, &next, id, params)? == Finish::Stop
            || completion.generated.len() == params.max_tokens
        {
            break;
        }
        if cancelled() {
            anyhow::bail!("the client disconnected");
        }
        next = rows_of(model.forward_step(ids_tensor::<B>(&[id], [1, 1], device), &mut state));
    }
    Ok(completion)
}

/// Appends generated token `id` (drawn from `row`) and updates the text; `Finish::Stop` when
/// it is the end-of-text token or completes a stop string (the text is cut before it).
fn push_token(text: &Text, c: &mut Completion, row: &[f32], id: u32, params: &Params) -> Result<Finish> {
    let tokenizer = text.tokenizer;
    let offset = match c.generated.last().or(c.prompt.last()) {
        Some(last) => last.offset + text.bytes.get(last.id as usize).copied().unwrap_or(0) as usize,
        None => 0,
    };
    c.generated.push(token_score(tokenizer, Some(row), id, offset, params.top_logprobs)?);
    // The end-of-text token is listed with its log-prob (a scoring client counts on one
    // generated entry) but is not text.
    if Some(id) == tokenizer.eot() {
        c.finish = Finish::Stop;
        return Ok(Finish::Stop);
    }
    let ids: Vec<u32> = c.generated.iter().map(|t: &TokenScore| t.id).collect();
    c.text = tokenizer.decode(&ids)?;
    if let Some(cut) = params.stop.iter().filter_map(|s| c.text.find(s.as_str())).min() {
        c.text.truncate(cut);
        c.finish = Finish::Stop;
    }
    Ok(c.finish)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_both_limits_and_keep_a_long_sequence_alone() {
        let limits = Limits { max_batch: 3, max_batch_tokens: 20, max_prompt: 100 };
        let lens = [2, 3, 4, 5, 6, 30];
        let got = batches(&lens, |&n| n, limits);
        assert_eq!(got, vec![vec![2, 3, 4], vec![5, 6], vec![30]]);
        let one = Limits { max_batch: 1, ..limits };
        assert_eq!(batches(&lens, |&n| n, one).len(), lens.len(), "max_batch 1: no batching");
    }
}
