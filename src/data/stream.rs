//! What training reads: a prepared text corpus or a synthetic task (`data.source =
//! "task:<name>"`), as numbered batches. Both are pure functions of (seed, index), so every
//! architecture of a comparison sees the same batches and a resumed run continues exactly.
//! A task's batches carry an answer mask: only answer positions count in the loss and the
//! accuracy (Zoology's `-100` labels).

use anyhow::Result;

use super::batcher::{Batcher, TokenBatch, selection_batches, validation_batches};
use super::prepare::{Dataset, ensure_prepared};
use super::tasks::{Split, Task};
use crate::config::DataConfig;

/// A batch and, for a task, which targets are answers (`[batch · seq_len]`).
#[derive(Clone, Debug)]
pub struct Batch {
    pub tokens: TokenBatch,
    pub answer: Option<Vec<bool>>,
}

/// The data of a run.
pub enum TrainData {
    Corpus(Dataset),
    Task(Task),
}

impl TrainData {
    /// Prepares (or opens the cached) corpus, or sets up the task; the task's settings are
    /// checked against the training length first.
    pub fn open(cfg: &DataConfig, seq_len: usize) -> Result<Self> {
        match Task::from_source(&cfg.source, &cfg.task)? {
            Some(task) => {
                task.check(seq_len)?;
                Ok(TrainData::Task(task))
            }
            None => Ok(TrainData::Corpus(ensure_prepared(cfg)?)),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            TrainData::Corpus(d) => d.tokenizer.vocab_size(),
            TrainData::Task(t) => t.vocab_size(),
        }
    }

    /// The tokenizer to save beside the run (`None` for a task: its tokens are ids).
    pub fn tokenizer_json(&self) -> Result<Option<String>> {
        match self {
            TrainData::Corpus(d) => Ok(Some(d.tokenizer.to_json()?)),
            TrainData::Task(_) => Ok(None),
        }
    }

    /// The bytes of text each token id stands for, for bits per byte (`None` for a task: no
    /// text).
    pub fn token_bytes(&self) -> Option<Vec<u32>> {
        match self {
            TrainData::Corpus(d) => Some(d.tokenizer.token_bytes()),
            TrainData::Task(_) => None,
        }
    }

    pub fn task(&self) -> Option<&Task> {
        match self {
            TrainData::Task(t) => Some(t),
            TrainData::Corpus(_) => None,
        }
    }

    /// The training batches of seed `seed`.
    pub fn batches(&self, batch: usize, seq_len: usize, seed: u64) -> Result<Batches<'_>> {
        Ok(match self {
            TrainData::Corpus(d) => Batches::Corpus(Batcher::new(&d.train, batch, seq_len, seed)?),
            TrainData::Task(task) => Batches::Task { task, seed, batch, seq_len },
        })
    }

    /// The fixed validation set: the corpus's first windows of its validation split, or the
    /// task's held-out sequences (`data.task.val_sequences` of them, whatever `n_batches`).
    pub fn validation(
        &self,
        n_batches: usize,
        batch: usize,
        seq_len: usize,
        seed: u64,
    ) -> Result<Vec<Batch>> {
        Ok(match self {
            TrainData::Corpus(d) => text_batches(validation_batches(&d.val, n_batches, batch, seq_len)?),
            TrainData::Task(task) => answer_batches(task.validation_batches(seed, batch, seq_len)),
        })
    }

    /// The held-out selection set, disjoint from [`TrainData::validation`]'s: the corpus's last
    /// windows of its validation split, or the task's held-out sequences after the reported
    /// ones (`compare` decides its learning-rate grid on it).
    pub fn selection(&self, n_batches: usize, batch: usize, seq_len: usize, seed: u64) -> Result<Vec<Batch>> {
        Ok(match self {
            TrainData::Corpus(d) => text_batches(selection_batches(&d.val, n_batches, batch, seq_len)?),
            TrainData::Task(task) => answer_batches(task.selection_batches(seed, batch, seq_len)),
        })
    }
}

/// Corpus batches: every target scored.
fn text_batches(batches: Vec<TokenBatch>) -> Vec<Batch> {
    batches.into_iter().map(|tokens| Batch { tokens, answer: None }).collect()
}

/// Task batches: scored on their answers.
fn answer_batches(batches: Vec<crate::data::tasks::TaskBatch>) -> Vec<Batch> {
    batches.into_iter().map(|b| Batch { tokens: b.tokens, answer: Some(b.answer) }).collect()
}

/// Numbered training batches.
pub enum Batches<'a> {
    Corpus(Batcher<'a>),
    Task { task: &'a Task, seed: u64, batch: usize, seq_len: usize },
}

impl Batches<'_> {
    /// The `index`-th micro-batch of the run.
    pub fn batch(&mut self, index: u64) -> Batch {
        match self {
            Batches::Corpus(b) => Batch { tokens: b.batch(index), answer: None },
            Batches::Task { task, seed, batch, seq_len } => {
                let b = task.batch(*seed, Split::Train, index, *batch, *seq_len);
                let answer = (!task.kind.trains_on_every_token()).then_some(b.answer);
                Batch { tokens: b.tokens, answer }
            }
        }
    }
}
