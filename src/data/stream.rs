//! What training reads: a prepared text corpus or a synthetic task (`data.source =
//! "task:<name>"`), as numbered batches. Both are pure functions of (seed, index), so every
//! architecture of a comparison sees the same batches and a resumed run continues exactly.
//! A task's batches carry an answer mask: only answer positions count in the loss and the
//! accuracy (Zoology's `-100` labels).

use anyhow::Result;

use super::batcher::{Batcher, TokenBatch, validation_batches};
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

    /// Bytes of text per validation token, for bits per byte (NaN for a task: no text).
    pub fn bytes_per_token(&self) -> f64 {
        match self {
            TrainData::Corpus(d) => d.val.bytes_per_token(),
            TrainData::Task(_) => f64::NAN,
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
            TrainData::Corpus(d) => validation_batches(&d.val, n_batches, batch, seq_len)?
                .into_iter()
                .map(|tokens| Batch { tokens, answer: None })
                .collect(),
            TrainData::Task(task) => task
                .validation_batches(seed, batch, seq_len)
                .into_iter()
                .map(|b| Batch { tokens: b.tokens, answer: Some(b.answer) })
                .collect(),
        })
    }
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
                Batch { tokens: b.tokens, answer: Some(b.answer) }
            }
        }
    }
}
