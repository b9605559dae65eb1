//! The model side of the server: one thread owns the model and answers [`Job`]s from a queue.
//!
//! Scoring and generation share the thread, each batched its own way:
//! - Prompts that generate at most one token (lm-evaluation-harness's log-likelihood requests)
//!   are scored as they arrive: whatever is waiting goes through [`score_batch`], shortest
//!   first, in as few forward passes as the batch limits allow.
//! - Generation is batched continuously (as vLLM and text-generation-inference do): a prompt
//!   is prefilled alone, and its decoding state joins the batch of sequences being decoded
//!   ([`DecodeState::stack`]; each row keeps its own positions); every step decodes one token
//!   of every sequence in one forward pass, and a sequence that ends leaves the batch at once
//!   ([`DecodeState::select`]). New prompts and scoring requests are taken between steps, so
//!   none waits for a long generation to end.
//!
//! A job whose client has gone (its reply channel closed) is dropped between steps, its
//! sequences with it, so a disconnect frees its slot.

use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::Receiver;

use anyhow::Result;
use burn::tensor::activation::log_softmax;
use tokio::sync::oneshot;

use super::protocol::{Completion, Finish};
use crate::data::tokenizer::Tokenizer;
use crate::eval::generate::{SamplingConfig, sample};
use crate::eval::score::{Scored, Text, TokenScore, score_batch, score_rows, token_score};
use crate::kernels::Backend;
use crate::model::lm::ids_tensor;
use crate::model::{DecodeState, LanguageModel};
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
    /// Sequences per forward pass (1: no batching): scored together, or decoded together.
    pub max_batch: usize,
    /// Padded tokens per forward pass (a longer single sequence goes alone).
    pub max_batch_tokens: usize,
    /// The longest prompt (`score_batch`'s check).
    pub max_prompt: usize,
}

/// Answers jobs until every sender is dropped and the last generation has ended.
pub fn run<B: Backend>(
    model: &LanguageModel<B>,
    tokenizer: &Tokenizer,
    limits: Limits,
    jobs: &Receiver<Job>,
    device: &B::Device,
) {
    let mut engine = Engine {
        model,
        text: Text::new(tokenizer),
        limits,
        device,
        pending: BTreeMap::new(),
        next_job: 0,
        waiting: VecDeque::new(),
        decoding: Vec::new(),
        state: None,
    };
    loop {
        let mut arrived = Vec::new();
        if engine.is_idle() {
            match jobs.recv() {
                Ok(job) => arrived.push(job),
                Err(_) => return,
            }
        }
        arrived.extend(jobs.try_iter());
        engine.admit(arrived);
        engine.drop_gone();
        engine.start_waiting();
        engine.step();
        engine.reply_finished();
    }
}

/// A job being answered.
struct Pending {
    job: Job,
    done: Vec<Option<Completion>>,
    failed: Option<String>,
}

/// A sequence being generated: row `i` of the batched decoding state is `decoding[i]`.
struct Sequence {
    job: u64,
    prompt: usize,
    completion: Completion,
    /// Log-probabilities of the next token.
    next: Vec<f32>,
    rng: Rng,
}

struct Engine<'a, B: Backend> {
    model: &'a LanguageModel<B>,
    text: Text<'a>,
    limits: Limits,
    device: &'a B::Device,
    pending: BTreeMap<u64, Pending>,
    next_job: u64,
    /// Generation prompts waiting for a row of the batch.
    waiting: VecDeque<(u64, usize)>,
    decoding: Vec<Sequence>,
    /// The decoding state of `decoding`'s sequences (`None` when there are none).
    state: Option<DecodeState<B>>,
}

impl<B: Backend> Engine<'_, B> {
    fn is_idle(&self) -> bool {
        self.decoding.is_empty() && self.waiting.is_empty() && self.pending.is_empty()
    }

    /// Takes new jobs: scores the prompts that generate at most one token (batched across
    /// jobs, shortest first) and queues the others for generation.
    fn admit(&mut self, arrived: Vec<Job>) {
        let first = self.next_job;
        for job in arrived.into_iter().filter(|j| !j.reply.is_closed()) {
            let n = job.prompts.len();
            if job.params.max_tokens > 1 {
                self.waiting.extend((0..n).map(|pi| (self.next_job, pi)));
            }
            self.pending.insert(self.next_job, Pending { job, done: vec![None; n], failed: None });
            self.next_job += 1;
        }
        let mut scoring: Vec<(u64, usize)> = self
            .pending
            .range(first..)
            .filter(|(_, p)| p.job.params.max_tokens <= 1)
            .flat_map(|(&id, p)| (0..p.job.prompts.len()).map(move |pi| (id, pi)))
            .collect();
        let prompt = |&(id, pi): &(u64, usize)| self.pending[&id].job.prompts[pi].len();
        scoring.sort_by_key(prompt);
        for chunk in batches(&scoring, prompt, self.limits) {
            let jobs = &self.pending;
            let sequences: Vec<&[u32]> =
                chunk.iter().map(|(id, pi)| jobs[id].job.prompts[*pi].as_slice()).collect();
            let top_k = chunk.iter().map(|(id, _)| jobs[id].job.params.top_logprobs).max().unwrap_or(0);
            let scored =
                score_batch(self.model, &self.text, &sequences, self.limits.max_prompt, top_k, self.device)
                    .and_then(|all| {
                        chunk
                            .iter()
                            .zip(all)
                            .map(|(&(id, pi), s)| one_token(&self.text, s, &jobs[&id].job.params, pi))
                            .collect::<Result<Vec<_>>>()
                    });
            match scored {
                Ok(all) => {
                    for ((id, pi), c) in chunk.into_iter().zip(all) {
                        self.pending.get_mut(&id).expect("pending job").done[pi] = Some(c);
                    }
                }
                Err(e) => {
                    for (id, _) in chunk {
                        self.pending.get_mut(&id).expect("pending job").failed = Some(format!("{e:#}"));
                    }
                }
            }
        }
    }

    /// Forgets jobs whose client has gone, and their sequences.
    fn drop_gone(&mut self) {
        self.pending.retain(|_, p| !p.job.reply.is_closed());
        self.forget_orphans();
    }

    /// Drops waiting prompts and decoding sequences of jobs that have failed or gone.
    fn forget_orphans(&mut self) {
        let live =
            |id: &u64, pending: &BTreeMap<u64, Pending>| pending.get(id).is_some_and(|p| p.failed.is_none());
        let pending = &self.pending;
        self.waiting.retain(|(id, _)| live(id, pending));
        let keep: Vec<usize> =
            (0..self.decoding.len()).filter(|&r| live(&self.decoding[r].job, pending)).collect();
        self.keep_rows(&keep);
    }

    /// Keeps rows `keep` (in order) of the decoding batch.
    fn keep_rows(&mut self, keep: &[usize]) {
        if keep.len() == self.decoding.len() {
            return;
        }
        let mut rows: Vec<Option<Sequence>> =
            std::mem::take(&mut self.decoding).into_iter().map(Some).collect();
        self.decoding = keep.iter().map(|&r| rows[r].take().expect("each row kept once")).collect();
        self.state = match self.state.take() {
            Some(state) if !keep.is_empty() => Some(state.select(keep)),
            _ => None,
        };
    }

    /// Prefills waiting prompts while the batch has room, and adds them to it.
    fn start_waiting(&mut self) {
        let mut states = Vec::new();
        while self.decoding.len() + states.len() < self.limits.max_batch.max(1) {
            let Some((id, pi)) = self.waiting.pop_front() else { break };
            let pending = &self.pending[&id];
            match prefill(
                self.model,
                &self.text,
                &pending.job.prompts[pi],
                &pending.job.params,
                pi,
                self.device,
            ) {
                Ok((sequence, state)) => {
                    self.decoding.push(Sequence { job: id, ..sequence });
                    states.push(state);
                }
                Err(e) => {
                    self.pending.get_mut(&id).expect("pending job").failed = Some(format!("{e:#}"));
                    // Its sequences already started leave the batch (the new ones are at its end).
                    let started = self.decoding.len() - states.len();
                    self.decoding.truncate(started);
                    states.clear();
                    self.forget_orphans();
                    return self.start_waiting();
                }
            }
        }
        if !states.is_empty() {
            self.state = Some(DecodeState::stack(self.state.take().into_iter().chain(states).collect()));
        }
    }

    /// Draws one token for every decoding sequence; the ended ones leave the batch and the
    /// others take one decoding step, all in one forward pass.
    fn step(&mut self) {
        let mut keep = Vec::new();
        let mut ids = Vec::new();
        for (r, s) in self.decoding.iter_mut().enumerate() {
            let params = &self.pending[&s.job].job.params;
            let id = sample(&s.next, &params.sampling, &mut s.rng);
            match push_token(&self.text, &mut s.completion, &s.next, id, params) {
                Ok(Finish::Length) if s.completion.generated.len() < params.max_tokens => {
                    keep.push(r);
                    ids.push(id);
                }
                Ok(_) => {}
                Err(e) => {
                    let failed = &mut self.pending.get_mut(&s.job).expect("pending job").failed;
                    *failed = Some(format!("{e:#}"));
                }
            }
        }
        // Ended sequences hand their completions to their jobs (`keep` is in row order).
        let mut kept = keep.iter().peekable();
        let mut going_on = Vec::with_capacity(keep.len());
        for (r, s) in std::mem::take(&mut self.decoding).into_iter().enumerate() {
            if kept.next_if_eq(&&r).is_some() {
                going_on.push(s);
            } else if let Some(p) = self.pending.get_mut(&s.job) {
                p.done[s.prompt] = Some(s.completion);
            }
        }
        self.decoding = going_on;
        self.state = match self.state.take() {
            Some(state) if !keep.is_empty() => {
                Some(if keep.len() < state.rows() { state.select(&keep) } else { state })
            }
            _ => None,
        };
        if let Some(state) = self.state.as_mut() {
            let logits = self.model.forward_step(ids_tensor::<B>(&ids, [ids.len(), 1], self.device), state);
            let vocab = self.model.vocab_size();
            let rows = log_rows(logits);
            for (s, row) in self.decoding.iter_mut().zip(rows.chunks(vocab)) {
                s.next = row.to_vec();
            }
        }
        self.forget_orphans();
    }

    /// Answers every job that is complete or has failed.
    fn reply_finished(&mut self) {
        let finished: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.failed.is_some() || p.done.iter().all(Option::is_some))
            .map(|(&id, _)| id)
            .collect();
        for id in finished {
            let p = self.pending.remove(&id).expect("pending job");
            let answer = match p.failed {
                Some(e) => Err(e),
                None => Ok(p.done.into_iter().map(|c| c.expect("complete")).collect()),
            };
            // The client may have gone meanwhile; nothing to do then.
            let _ = p.job.reply.send(answer);
        }
    }
}

/// Log-probabilities of `[b, t, vocab]` logits, row-major.
fn log_rows<B: Backend>(logits: burn::tensor::Tensor<B, 3>) -> Vec<f32> {
    log_softmax(logits, 2).into_data().convert::<f32>().to_vec().expect("f32 data")
}

/// Prefills prompt `ids` (number `prompt_index` of its job) alone: its scores, and the
/// decoding state and next-token distribution its generation starts from.
fn prefill<B: Backend>(
    model: &LanguageModel<B>,
    text: &Text,
    ids: &[u32],
    params: &Params,
    prompt_index: usize,
    device: &B::Device,
) -> Result<(Sequence, DecodeState<B>)> {
    let vocab = model.vocab_size();
    let mut state = model.decode_state();
    let rows = log_rows(model.forward_step(ids_tensor::<B>(ids, [1, ids.len()], device), &mut state));
    let completion = Completion {
        prompt: score_rows(text, ids, &rows, vocab, params.top_logprobs)?,
        prompt_text: text.tokenizer.decode(ids)?,
        generated: Vec::new(),
        text: String::new(),
        finish: Finish::Length,
    };
    let sequence = Sequence {
        job: 0,
        prompt: prompt_index,
        completion,
        next: rows[(ids.len() - 1) * vocab..].to_vec(),
        rng: Rng::fork(params.sampling.seed, &format!("sampling {prompt_index}")),
    };
    Ok((sequence, state))
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
