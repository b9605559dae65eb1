//! Synthetic long-range tasks: sequences generated in process, with answer positions.
//!
//! Probes of what a sequence mixer can carry across a context, used with
//! `data.source = "task:<name>"` and configured by `[data.task]` ([`TaskConfig`]). Four recall
//! tasks, whose answers are next tokens:
//!
//! - `mqar`: multi-query associative recall, the Zoology protocol (Arora et al. 2023,
//!   "Zoology: Measuring and Improving Recall in Efficient Language Models"; HazyResearch/zoology
//!   `multiquery_ar`). The row opens with `n_pairs` key-value pairs `k1 v1 k2 v2 …` (keys
//!   distinct, values distinct); the rest is blank (`PAD`) except that every key comes back
//!   once, in a random order, at a random even offset, followed by its value. The answer is the
//!   value after each queried key. Zoology draws the query offsets from a power law that favours
//!   short gaps; here they are uniform over the remainder, so that a longer row puts the queries
//!   further from their pairs, which is what the length-extrapolation evaluation wants to see.
//! - `copy`: a random segment of `copy_len` tokens, blank padding, a separator, then the segment
//!   again (the answers). The segment sits at the very start and the copy at the very end, so a
//!   longer row moves them further apart.
//! - `selective-copy`: selective copying (Gu & Dao 2023, "Mamba", §4.1.1): `copy_len` data
//!   tokens at random positions among blank noise, then a separator after which the data tokens
//!   come back in order (the answers). Unlike `copy`, where the tokens are is content-dependent:
//!   a fixed convolution or a time-invariant recurrence cannot solve it.
//! - `passkey`: passkey retrieval (Mohtashami & Jaggi 2023, "Landmark Attention"): a repeated
//!   filler "sentence" with `PASSKEY d1 … dn` hidden at a random depth, and at the end
//!   `QUERY d1 … dn` (the digits are the answers).
//!
//! four state-tracking tasks, whose answer at every position is the state after the word
//! read so far (token tagging: the target is a label, not the next input): `parity`,
//! `modular-add`, `s5` and `a5` ([`super::state_tracking`]); and five tasks of the MAD suite in
//! MAD's own format and vocabulary layout ([`super::mad`]): `in-context-recall`,
//! `noisy-recall`, `fuzzy-recall`, `mad-selective-copy` and `memorization`.
//!
//! # Vocabulary (`data.task.vocab` = V ids in all)
//!
//! | id | token | used by |
//! |---|---|---|
//! | 0 | `PAD`: blank, padding, noise | mqar gaps, copy padding, selective-copy noise |
//! | 1 | `SEP`: "now repeat" | copy, selective-copy |
//! | 2 | `PASSKEY`: "the pass key is" | passkey |
//! | 3 | `QUERY`: "what is the pass key?" | passkey |
//! | 4 .. V | data tokens | split per task, below |
//!
//! - mqar: keys are `4 .. 4 + (V-4)/2`, values the rest, `4 + (V-4)/2 .. V` (Zoology's split of
//!   the vocabulary into a key half and a value half);
//! - copy, selective-copy: the segment tokens are drawn uniformly from `4 .. V`;
//! - passkey: the ten digits are `4 .. 14`; the filler repeats `14, 15, …` (up to 8 ids) from
//!   the rest, so digits, markers and filler never share an id;
//! - state tracking: group element `e` is id `4 + e`, as input and as state (2 ids for parity,
//!   `modulus` for modular-add, 120 for s5, 60 for a5); the special ids are not used.
//!
//! # Sequences, targets, answers
//!
//! Each row is built as a stream of `seq_len + 1` tokens and cut like the text batcher cuts a
//! window: inputs `stream[..T]`, targets `stream[1..]` (the state-tracking tasks build inputs
//! and targets apart, both `T` long). `TaskBatch::answer` marks the targets
//! that are answers (only those count in the loss and the accuracy); every answer follows from
//! the inputs at and before its position. Row `n` of a split is a pure function of
//! `(seed, split, seq_len, n)`, and batch `i` holds rows `i·batch ..`: the same seed gives every
//! architecture the same sequences, train and validation rows come from independent streams,
//! and nothing needs to be stored.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::batcher::TokenBatch;
use super::mad;
use super::state_tracking::{self, Group};
use crate::rng::Rng;

/// Blank: padding, the gaps between MQAR queries, selective-copy noise.
pub const PAD: u32 = 0;
/// Separator after which a copy task repeats its segment.
pub const SEP: u32 = 1;
/// Passkey marker, "the pass key is", before the hidden digits.
pub const PASSKEY: u32 = 2;
/// Passkey query, "what is the pass key?", after which the digits are the answers.
pub const QUERY: u32 = 3;
/// The first data id; ids below are the special tokens above.
pub const FIRST_DATA: u32 = 4;
/// Passkey digit tokens are `FIRST_DATA .. FIRST_DATA + DIGITS`.
pub const DIGITS: u32 = 10;
/// Longest passkey filler "sentence" (ids right after the digits, repeated).
const FILLER_PATTERN: u32 = 8;

/// `[data.task]` settings (TOML), used when `data.source = "task:<name>"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// Total vocabulary, special tokens included (the model's vocabulary size).
    pub vocab: usize,
    /// MQAR: key-value pairs per row (each is queried once).
    pub n_pairs: usize,
    /// Copying and selective copying: tokens to copy.
    pub copy_len: usize,
    /// Passkey retrieval: digits in the passkey.
    pub passkey_len: usize,
    /// Modular addition: the modulus m of the running sum (numbers `0..m`).
    pub modulus: usize,
    /// Noisy recall: the top `noise_vocab` ids of the vocabulary are noise tokens (MAD: 16).
    pub noise_vocab: usize,
    /// Noisy recall: the probability that a pair slot holds two noise tokens (MAD: 0.2).
    pub noise_fraction: f64,
    /// Fuzzy recall: keys and values are runs of 1 to `motif_size` tokens (MAD: 3).
    pub motif_size: usize,
    /// Distinct training sequences, cycled (MAD trains on 12,800; memorization on 256); 0 draws
    /// a fresh sequence for every row of every step.
    pub train_sequences: usize,
    /// Held-out accuracy is also measured at these sequence lengths (longer than trained on); empty: 2× and 4× train.seq_len.
    pub eval_seq_lens: Vec<usize>,
    /// Held-out sequences per evaluated length.
    pub val_sequences: usize,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            vocab: 64,
            n_pairs: 8,
            copy_len: 16,
            passkey_len: 5,
            modulus: 5,
            noise_vocab: 16,
            noise_fraction: 0.2,
            motif_size: 3,
            train_sequences: 0,
            eval_seq_lens: Vec::new(),
            val_sequences: 256,
        }
    }
}

impl TaskConfig {
    /// The longer lengths held-out accuracy is measured at, besides the training length.
    pub fn eval_lengths(&self, train_seq_len: usize) -> Vec<usize> {
        if self.eval_seq_lens.is_empty() {
            vec![2 * train_seq_len, 4 * train_seq_len]
        } else {
            self.eval_seq_lens.clone()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskKind {
    Mqar,
    Copy,
    SelectiveCopy,
    Passkey,
    Parity,
    ModularAdd,
    S5,
    A5,
    InContextRecall,
    NoisyRecall,
    FuzzyRecall,
    MadSelectiveCopy,
    Memorization,
}

pub const TASK_NAMES: &[&str] = &[
    "mqar",
    "copy",
    "selective-copy",
    "passkey",
    "parity",
    "modular-add",
    "s5",
    "a5",
    "in-context-recall",
    "noisy-recall",
    "fuzzy-recall",
    "mad-selective-copy",
    "memorization",
];

impl TaskKind {
    pub const ALL: [TaskKind; 13] = [
        TaskKind::Mqar,
        TaskKind::Copy,
        TaskKind::SelectiveCopy,
        TaskKind::Passkey,
        TaskKind::Parity,
        TaskKind::ModularAdd,
        TaskKind::S5,
        TaskKind::A5,
        TaskKind::InContextRecall,
        TaskKind::NoisyRecall,
        TaskKind::FuzzyRecall,
        TaskKind::MadSelectiveCopy,
        TaskKind::Memorization,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Mqar => "mqar",
            TaskKind::Copy => "copy",
            TaskKind::SelectiveCopy => "selective-copy",
            TaskKind::Passkey => "passkey",
            TaskKind::Parity => "parity",
            TaskKind::ModularAdd => "modular-add",
            TaskKind::S5 => "s5",
            TaskKind::A5 => "a5",
            TaskKind::InContextRecall => "in-context-recall",
            TaskKind::NoisyRecall => "noisy-recall",
            TaskKind::FuzzyRecall => "fuzzy-recall",
            TaskKind::MadSelectiveCopy => "mad-selective-copy",
            TaskKind::Memorization => "memorization",
        }
    }

    /// MAD's recall tasks train on every next token (MAD's training format); the others on
    /// their answers only.
    pub fn trains_on_every_token(self) -> bool {
        matches!(self, TaskKind::InContextRecall | TaskKind::NoisyRecall | TaskKind::FuzzyRecall)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

#[derive(Clone, Debug)]
pub struct Task {
    pub kind: TaskKind,
    pub cfg: TaskConfig,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// A batch of task sequences: tokens plus which target positions are answers.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskBatch {
    pub tokens: TokenBatch,
    /// `[batch * seq_len]`, row-major like `tokens.targets`: true where the target is an answer.
    pub answer: Vec<bool>,
}

impl Task {
    /// `Some(task)` for a `task:<name>` source, `None` for any other source; unknown task names are an error listing TASK_NAMES.
    pub fn from_source(source: &str, cfg: &TaskConfig) -> Result<Option<Task>> {
        let Some(name) = source.strip_prefix("task:") else { return Ok(None) };
        match TaskKind::from_name(name.trim()) {
            Some(kind) => Ok(Some(Task { kind, cfg: cfg.clone() })),
            None => bail!(
                "unknown synthetic task `{name}` in data.source; available: {}",
                TASK_NAMES.iter().map(|n| format!("task:{n}")).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    pub fn vocab_size(&self) -> usize {
        self.cfg.vocab
    }

    /// The group whose word problem a state-tracking task poses; `None` for the recall tasks.
    pub fn group(&self) -> Option<Group> {
        match self.kind {
            TaskKind::Parity => Some(Group::Cyclic(2)),
            TaskKind::ModularAdd => Some(Group::Cyclic(self.cfg.modulus)),
            TaskKind::S5 => Some(Group::Permutations(state_tracking::s5())),
            TaskKind::A5 => Some(Group::Permutations(state_tracking::a5())),
            _ => None,
        }
    }

    /// Answer tokens in a row of `seq_len` (every position for state tracking; a fixed number
    /// at every length for the recall tasks); `None` where it varies from row to row (MAD's
    /// recall, which scores every repeated key).
    pub fn answers_per_sequence(&self, seq_len: usize) -> Option<usize> {
        Some(match self.kind {
            TaskKind::Mqar => self.cfg.n_pairs,
            TaskKind::Copy | TaskKind::SelectiveCopy | TaskKind::MadSelectiveCopy => self.cfg.copy_len,
            TaskKind::Passkey => self.cfg.passkey_len,
            TaskKind::Parity | TaskKind::ModularAdd | TaskKind::S5 | TaskKind::A5 => seq_len,
            TaskKind::Memorization => seq_len / 2,
            TaskKind::InContextRecall | TaskKind::NoisyRecall | TaskKind::FuzzyRecall => return None,
        })
    }

    /// The token accuracy of guessing uniformly among the ids an answer can take: the level
    /// at which a model has learnt nothing.
    pub fn chance_accuracy(&self) -> f64 {
        let choices = match (self.kind, self.group()) {
            (_, Some(group)) => group.order(),
            (TaskKind::Mqar, _) => mqar_ranges(self.cfg.vocab as u32).1.len(),
            (TaskKind::Passkey, _) => DIGITS as usize,
            (TaskKind::InContextRecall | TaskKind::NoisyRecall, _) => {
                let non_special = self.cfg.vocab - self.noise_ids();
                non_special - non_special / 2
            }
            // A value token among the value half (of the ids below the padding).
            (TaskKind::FuzzyRecall, _) => (self.cfg.vocab - 1) - (self.cfg.vocab - 1) / 2,
            (TaskKind::MadSelectiveCopy, _) => self.cfg.vocab - 2,
            (TaskKind::Memorization, _) => (self.cfg.vocab - 1) / 2,
            _ => self.cfg.vocab - FIRST_DATA as usize,
        };
        1.0 / choices.max(1) as f64
    }

    /// Clear error (naming the key and the fix) when the settings do not fit: seq_len too short for n_pairs/copy_len, vocab too small for distinct keys, etc. Called before any work.
    pub fn check(&self, seq_len: usize) -> Result<()> {
        if self.cfg.val_sequences == 0 {
            bail!("data.task.val_sequences is 0: the held-out accuracy would be measured on nothing");
        }
        if self.cfg.vocab > u32::MAX as usize {
            bail!("data.task.vocab = {} does not fit token ids of 32 bits", self.cfg.vocab);
        }
        self.check_len(seq_len, "train.seq_len")?;
        for &len in &self.cfg.eval_seq_lens {
            self.check_len(len, "data.task.eval_seq_lens")?;
        }
        Ok(())
    }

    /// Noise ids at the top of the vocabulary (noisy recall only).
    fn noise_ids(&self) -> usize {
        if self.kind == TaskKind::NoisyRecall { self.cfg.noise_vocab } else { 0 }
    }

    /// Whether rows of `seq_len` tokens can be built; `key` names the setting that chose it.
    fn check_len(&self, seq_len: usize, key: &str) -> Result<()> {
        let c = &self.cfg;
        let name = self.name();
        if let Some(group) = self.group() {
            return self.check_word_problem(group, seq_len, key);
        }
        if let Some(check) = self.check_mad(seq_len, key) {
            return check;
        }
        let (param, n) = match self.kind {
            TaskKind::Mqar => ("n_pairs", c.n_pairs),
            TaskKind::Copy | TaskKind::SelectiveCopy => ("copy_len", c.copy_len),
            TaskKind::Passkey => ("passkey_len", c.passkey_len),
            _ => unreachable!("the state-tracking tasks returned above"),
        };
        if n == 0 {
            bail!("data.task.{param} is 0: task:{name} would have nothing to answer; set it to 1 or more");
        }
        // The smallest vocabulary and row that hold one instance of the task.
        let (min_vocab, vocab_why, min_len, len_why) = match self.kind {
            TaskKind::Mqar => (
                FIRST_DATA as usize + 2 * n,
                format!("{n} distinct keys and {n} distinct values"),
                4 * n,
                format!("{n} pairs and {n} queries, each 2 tokens, as in Zoology"),
            ),
            TaskKind::Copy | TaskKind::SelectiveCopy => (
                FIRST_DATA as usize + 1,
                "one data token".to_string(),
                2 * n,
                format!("the {n}-token segment, a separator and the {n}-token copy"),
            ),
            _ => (
                (FIRST_DATA + DIGITS) as usize + 1,
                "10 digit tokens and a filler token".to_string(),
                2 * n + 1,
                format!("the marker and {n} digits, then the query and {n} digits"),
            ),
        };
        if c.vocab < min_vocab {
            bail!(
                "data.task.vocab = {} is too small for task:{name}: it needs {vocab_why} besides the {FIRST_DATA} \
                 special tokens; raise data.task.vocab to at least {min_vocab}{}",
                c.vocab,
                if self.kind == TaskKind::Mqar { " or lower data.task.n_pairs" } else { "" }
            );
        }
        if seq_len < min_len {
            bail!(
                "{key} = {seq_len} is too short for task:{name} with data.task.{param} = {n}: a row must hold \
                 {len_why}; use {key} ≥ {min_len} or lower data.task.{param}"
            );
        }
        Ok(())
    }

    /// [`Task::check_len`] for a MAD task; `None` for the others.
    fn check_mad(&self, seq_len: usize, key: &str) -> Option<Result<()>> {
        let (c, name) = (&self.cfg, self.name());
        let vocab_error = |min: usize, why: &str| {
            Err(anyhow::anyhow!(
                "data.task.vocab = {} is too small for task:{name}: it needs {why}; raise data.task.vocab to at least {min}",
                c.vocab
            ))
        };
        Some(match self.kind {
            TaskKind::InContextRecall | TaskKind::NoisyRecall => {
                let noise = self.noise_ids();
                if self.kind == TaskKind::NoisyRecall {
                    if !(0.0..1.0).contains(&c.noise_fraction) {
                        return Some(Err(anyhow::anyhow!(
                            "data.task.noise_fraction = {} must be in [0, 1) (MAD: 0.2)",
                            c.noise_fraction
                        )));
                    }
                    if noise == 0 && c.noise_fraction > 0.0 {
                        return Some(Err(anyhow::anyhow!(
                            "data.task.noise_vocab is 0, so task:noisy-recall has no noise tokens; set it (MAD: 16)"
                        )));
                    }
                }
                if c.vocab < noise + 2 {
                    vocab_error(noise + 2, &format!("a key id and a value id besides the {noise} noise ids"))
                } else if seq_len < 3 {
                    Err(anyhow::anyhow!(
                        "{key} = {seq_len} is too short for task:{name}: a row holds at least two pairs; use {key} ≥ 3"
                    ))
                } else {
                    Ok(())
                }
            }
            TaskKind::FuzzyRecall => {
                let m = c.motif_size;
                if m == 0 {
                    Err(anyhow::anyhow!(
                        "data.task.motif_size is 0: task:{name} needs keys of 1 token or more (MAD: 3)"
                    ))
                } else if c.vocab < 2 * m + 1 {
                    vocab_error(
                        2 * m + 1,
                        &format!("{m} distinct key ids, {m} distinct value ids and a padding id"),
                    )
                } else if seq_len < 8 * m {
                    Err(anyhow::anyhow!(
                        "{key} = {seq_len} is too short for task:{name} with data.task.motif_size = {m}: a row \
                         holds pairs of up to {} tokens; use {key} ≥ {}",
                        2 * m,
                        8 * m
                    ))
                } else {
                    Ok(())
                }
            }
            TaskKind::MadSelectiveCopy => {
                if c.copy_len == 0 {
                    Err(anyhow::anyhow!(
                        "data.task.copy_len is 0: task:{name} would have nothing to copy; set it to 1 or more"
                    ))
                } else if c.vocab < 3 {
                    vocab_error(3, "a copy token, a blank token and a data token")
                } else if seq_len < 2 * c.copy_len + 1 {
                    Err(anyhow::anyhow!(
                        "{key} = {seq_len} is too short for task:{name} with data.task.copy_len = {}: a row holds the \
                         data, the copy token and the copies; use {key} ≥ {}",
                        c.copy_len,
                        2 * c.copy_len + 1
                    ))
                } else {
                    Ok(())
                }
            }
            TaskKind::Memorization => {
                if c.vocab < 3 {
                    vocab_error(3, "a key, a value and the insert token")
                } else if seq_len < 2 || seq_len % 2 == 1 {
                    Err(anyhow::anyhow!(
                        "{key} = {seq_len} does not hold whole [key, insert] pairs for task:{name}; use an even {key} (MAD: 32)"
                    ))
                } else {
                    Ok(())
                }
            }
            _ => return None,
        })
    }

    /// [`Task::check_len`] for a state-tracking task: a group of 2 or more elements, whose ids
    /// fit the vocabulary.
    fn check_word_problem(&self, group: Group, seq_len: usize, key: &str) -> Result<()> {
        let (c, name) = (&self.cfg, self.name());
        if self.kind == TaskKind::ModularAdd && c.modulus < 2 {
            bail!(
                "data.task.modulus = {} leaves task:modular-add nothing to track; set it to 2 or more",
                c.modulus
            );
        }
        let min_vocab = FIRST_DATA as usize + group.order();
        if c.vocab < min_vocab {
            bail!(
                "data.task.vocab = {} is too small for task:{name}: its {} group elements take ids {FIRST_DATA}..{min_vocab}; \
                 raise data.task.vocab to at least {min_vocab}{}",
                c.vocab,
                group.order(),
                if self.kind == TaskKind::ModularAdd { " or lower data.task.modulus" } else { "" }
            );
        }
        if seq_len == 0 {
            bail!("{key} = 0 leaves task:{name} no word to read; use {key} ≥ 1");
        }
        Ok(())
    }

    /// The `index`-th batch of a split: a pure function of (seed, split, index, batch, seq_len). Train and Val draw from independent RNG streams (held-out sequences).
    pub fn batch(&self, seed: u64, split: Split, index: u64, batch: usize, seq_len: usize) -> TaskBatch {
        self.rows(seed, split, index * batch as u64, batch, seq_len)
    }

    /// The fixed held-out set at one length: `cfg.val_sequences` rows in batches of `batch`
    /// (the last one smaller when `batch` does not divide it), the same at every evaluation.
    pub fn validation_batches(&self, seed: u64, batch: usize, seq_len: usize) -> Vec<TaskBatch> {
        assert!(batch > 0, "validation batch size 0");
        let total = self.cfg.val_sequences as u64;
        (0..total)
            .step_by(batch)
            .map(|first| {
                self.rows(seed, Split::Val, first, (total - first).min(batch as u64) as usize, seq_len)
            })
            .collect()
    }

    /// The held-out selection set: as many rows as [`Task::validation_batches`], the next ones
    /// of the held-out split (rows are drawn one stream per index: disjoint from the reported).
    pub fn selection_batches(&self, seed: u64, batch: usize, seq_len: usize) -> Vec<TaskBatch> {
        assert!(batch > 0, "selection batch size 0");
        let total = self.cfg.val_sequences as u64;
        (total..2 * total)
            .step_by(batch)
            .map(|first| {
                self.rows(seed, Split::Val, first, (2 * total - first).min(batch as u64) as usize, seq_len)
            })
            .collect()
    }

    /// Rows `first .. first + count` of a split.
    fn rows(&self, seed: u64, split: Split, first: u64, count: usize, seq_len: usize) -> TaskBatch {
        if let Err(e) = self.check_len(seq_len, "seq_len") {
            panic!("Task::batch called with settings Task::check rejects: {e:#}");
        }
        let mut out = TaskBatch {
            tokens: TokenBatch {
                batch: count,
                seq_len,
                inputs: Vec::with_capacity(count * seq_len),
                targets: Vec::with_capacity(count * seq_len),
            },
            answer: Vec::with_capacity(count * seq_len),
        };
        for n in first..first + count as u64 {
            // A finite training set is cycled; held-out rows are always new.
            let n = match (split, self.cfg.train_sequences as u64) {
                (Split::Train, k) if k > 0 => n % k,
                _ => n,
            };
            // One stream per row, named by everything that identifies it: rows do not depend
            // on the batch size, and no two (split, length) sets share a row.
            let label = format!("task/{}/{}/len{seq_len}/row{n}", self.name(), split.name());
            let rng = &mut Rng::fork(seed, &label);
            if let Some(group) = self.group() {
                let (inputs, states) = state_tracking::word_problem(rng, group, seq_len, FIRST_DATA);
                out.tokens.inputs.extend(inputs);
                out.tokens.targets.extend(states);
                out.answer.extend(std::iter::repeat_n(true, seq_len));
                continue;
            }
            if let Some(row) = self.mad_row(rng, split, seq_len) {
                out.tokens.inputs.extend(row.inputs);
                out.tokens.targets.extend(row.targets);
                out.answer.extend(row.answer);
                continue;
            }
            let row = self.stream(rng, seq_len + 1);
            out.tokens.inputs.extend_from_slice(&row.tokens[..seq_len]);
            out.tokens.targets.extend_from_slice(&row.tokens[1..]);
            out.answer.extend_from_slice(&row.answer[1..]);
        }
        out
    }

    /// A row of a MAD task; `None` for the others.
    fn mad_row(&self, rng: &mut Rng, split: Split, seq_len: usize) -> Option<mad::Row> {
        let (c, vocab) = (&self.cfg, self.cfg.vocab as u32);
        Some(match self.kind {
            TaskKind::InContextRecall => mad::in_context_recall(rng, vocab, 0, 0.0, seq_len),
            TaskKind::NoisyRecall => {
                mad::in_context_recall(rng, vocab, c.noise_vocab as u32, c.noise_fraction, seq_len)
            }
            TaskKind::FuzzyRecall => {
                mad::fuzzy_recall(rng, vocab, c.motif_size, split == Split::Train, seq_len)
            }
            TaskKind::MadSelectiveCopy => mad::selective_copy(rng, vocab, c.copy_len, seq_len),
            TaskKind::Memorization => mad::memorization(rng, vocab, seq_len),
            _ => return None,
        })
    }

    fn stream(&self, rng: &mut Rng, len: usize) -> Stream {
        let c = &self.cfg;
        match self.kind {
            TaskKind::Mqar => mqar(rng, c.vocab as u32, c.n_pairs, len),
            TaskKind::Copy => copy(rng, c.vocab as u32, c.copy_len, len),
            TaskKind::SelectiveCopy => selective_copy(rng, c.vocab as u32, c.copy_len, len),
            TaskKind::Passkey => passkey(rng, c.vocab as u32, c.passkey_len, len),
            _ => unreachable!("state-tracking rows are built by state_tracking::word_problem"),
        }
    }
}

/// One row before the input/target cut: `answer[i]` says `tokens[i]` is to be predicted.
struct Stream {
    tokens: Vec<u32>,
    answer: Vec<bool>,
}

impl Stream {
    fn blank(len: usize) -> Self {
        Self { tokens: vec![PAD; len], answer: vec![false; len] }
    }

    fn answer(&mut self, pos: usize, token: u32) {
        self.tokens[pos] = token;
        self.answer[pos] = true;
    }
}

/// MQAR key and value ids: the data ids split in two halves (Zoology).
pub fn mqar_ranges(vocab: u32) -> (std::ops::Range<u32>, std::ops::Range<u32>) {
    let mid = FIRST_DATA + (vocab - FIRST_DATA) / 2;
    (FIRST_DATA..mid, mid..vocab)
}

/// `k` distinct ids of `range`, in random order.
fn distinct_ids(rng: &mut Rng, range: std::ops::Range<u32>, k: usize) -> Vec<u32> {
    rng.distinct(range.len(), k).into_iter().map(|i| range.start + i as u32).collect()
}

/// `k` ids of `range`, drawn independently.
fn ids(rng: &mut Rng, range: std::ops::Range<u32>, k: usize) -> Vec<u32> {
    (0..k).map(|_| range.start + rng.below(range.len()) as u32).collect()
}

/// `k1 v1 … kn vn`, then `n` slots of two tokens among the blank remainder hold `ki vi` in a
/// random order; each `vi` there is an answer.
fn mqar(rng: &mut Rng, vocab: u32, pairs: usize, len: usize) -> Stream {
    let (key_ids, value_ids) = mqar_ranges(vocab);
    let keys = distinct_ids(rng, key_ids, pairs);
    let values = distinct_ids(rng, value_ids, pairs);
    let mut s = Stream::blank(len);
    for (i, (&k, &v)) in keys.iter().zip(&values).enumerate() {
        s.tokens[2 * i] = k;
        s.tokens[2 * i + 1] = v;
    }
    // Queries sit at even offsets of the remainder, as in Zoology, so two never overlap.
    let context = 2 * pairs;
    let slots = rng.distinct((len - context) / 2, pairs);
    for ((&k, &v), slot) in keys.iter().zip(&values).zip(slots) {
        let at = context + 2 * slot;
        s.tokens[at] = k;
        s.answer(at + 1, v);
    }
    s
}

/// `segment PAD … PAD SEP segment`: the copy is the answer.
fn copy(rng: &mut Rng, vocab: u32, copy_len: usize, len: usize) -> Stream {
    let segment = ids(rng, FIRST_DATA..vocab, copy_len);
    let mut s = Stream::blank(len);
    s.tokens[..copy_len].copy_from_slice(&segment);
    let sep = len - 1 - copy_len;
    s.tokens[sep] = SEP;
    for (i, &t) in segment.iter().enumerate() {
        s.answer(sep + 1 + i, t);
    }
    s
}

/// Data tokens at random positions among `PAD` noise, then `SEP` and the data tokens in order.
fn selective_copy(rng: &mut Rng, vocab: u32, copy_len: usize, len: usize) -> Stream {
    let data = ids(rng, FIRST_DATA..vocab, copy_len);
    let sep = len - 1 - copy_len;
    let mut at = rng.distinct(sep, copy_len);
    at.sort_unstable(); // the order of the data is the order of the positions
    let mut s = Stream::blank(len);
    for (&pos, &t) in at.iter().zip(&data) {
        s.tokens[pos] = t;
    }
    s.tokens[sep] = SEP;
    for (i, &t) in data.iter().enumerate() {
        s.answer(sep + 1 + i, t);
    }
    s
}

/// Passkey filler ids: a fixed "sentence" repeated, like Landmark Attention's "The grass is
/// green. The sky is blue. …"; right after the digits, so never a digit or a marker.
fn filler(vocab: u32, i: usize) -> u32 {
    let start = FIRST_DATA + DIGITS;
    let pattern = FILLER_PATTERN.min(vocab - start);
    start + (i as u32 % pattern)
}

/// Filler with `PASSKEY d1 … dn` at a random depth, then `QUERY d1 … dn` (the answers).
fn passkey(rng: &mut Rng, vocab: u32, digits: usize, len: usize) -> Stream {
    let key = ids(rng, FIRST_DATA..FIRST_DATA + DIGITS, digits);
    let query = len - 1 - digits;
    let depth = rng.below(query - digits); // the hidden block ends before the query
    let mut s = Stream::blank(len);
    let mut next_filler = 0;
    for pos in 0..query {
        s.tokens[pos] = match pos.checked_sub(depth) {
            Some(0) => PASSKEY,
            Some(i) if i <= digits => key[i - 1],
            _ => {
                next_filler += 1;
                filler(vocab, next_filler - 1)
            }
        };
    }
    s.tokens[query] = QUERY;
    for (i, &d) in key.iter().enumerate() {
        s.answer(query + 1 + i, d);
    }
    s
}

/// Counts of answer tokens right and sequences with all answers right, given argmax predictions ([batch*seq_len], aligned with targets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accuracy {
    pub tokens_right: usize,
    pub tokens: usize,
    pub sequences_right: usize,
    pub sequences: usize,
}

impl Accuracy {
    /// Counts over `tokens`' targets where `answer` is true, given one prediction per target.
    pub fn of(predictions: &[u32], t: &TokenBatch, answer: &[bool]) -> Self {
        assert_eq!(predictions.len(), t.targets.len(), "one prediction per target");
        let mut acc = Accuracy { sequences: t.batch, ..Default::default() };
        for row in 0..t.batch {
            let span = row * t.seq_len..(row + 1) * t.seq_len;
            let mut all_right = true;
            for i in span.filter(|&i| answer[i]) {
                acc.tokens += 1;
                if predictions[i] == t.targets[i] {
                    acc.tokens_right += 1;
                } else {
                    all_right = false;
                }
            }
            acc.sequences_right += all_right as usize;
        }
        acc
    }

    pub fn merge(&mut self, other: &Accuracy) {
        self.tokens_right += other.tokens_right;
        self.tokens += other.tokens;
        self.sequences_right += other.sequences_right;
        self.sequences += other.sequences;
    }

    /// Fraction of answer tokens right (0 when there were none).
    pub fn token_accuracy(&self) -> f64 {
        ratio(self.tokens_right, self.tokens)
    }

    /// Fraction of sequences with every answer right (0 when there were none).
    pub fn sequence_accuracy(&self) -> f64 {
        ratio(self.sequences_right, self.sequences)
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kind` at the default settings, with the vocabulary S5's 120 elements need.
    fn task(kind: TaskKind) -> Task {
        let vocab = if matches!(kind, TaskKind::S5 | TaskKind::A5) { 124 } else { 64 };
        Task { kind, cfg: TaskConfig { vocab, ..TaskConfig::default() } }
    }

    fn rows(b: &TaskBatch) -> impl Iterator<Item = (&[u32], &[u32], &[bool])> {
        let t = b.tokens.seq_len;
        (0..b.tokens.batch).map(move |r| {
            let s = r * t..(r + 1) * t;
            (&b.tokens.inputs[s.clone()], &b.tokens.targets[s.clone()], &b.answer[s])
        })
    }

    /// Solves the task from `prefix = inputs[..=t]` alone: what the next token must be.
    fn oracle(kind: TaskKind, prefix: &[u32]) -> u32 {
        let t = prefix.len() - 1;
        let first = |tok: u32| prefix.iter().position(|&x| x == tok).expect("marker in prefix");
        match kind {
            // The value right after the first occurrence of the queried key.
            TaskKind::Mqar => prefix[first(prefix[t]) + 1],
            TaskKind::Copy => prefix[t - first(SEP)],
            TaskKind::SelectiveCopy => {
                let sep = first(SEP);
                let data: Vec<u32> = prefix[..sep].iter().copied().filter(|&x| x != PAD).collect();
                data[t - sep]
            }
            TaskKind::Passkey => prefix[first(PASSKEY) + 1 + t - first(QUERY)],
            // The value of the first pair with the key at `t`.
            TaskKind::InContextRecall | TaskKind::NoisyRecall => {
                let noise = if kind == TaskKind::NoisyRecall { 16 } else { 0 };
                let values = (64 - noise) / 2..64 - noise;
                let q = (0..t).find(|&q| prefix[q] == prefix[t] && values.contains(&prefix[q + 1])).unwrap();
                prefix[q + 1]
            }
            // The key run before the value being read, found earlier as a whole run; its value
            // there, as far in as the target is.
            TaskKind::FuzzyRecall => {
                let is_key = |x: u32| x < 31;
                let mut v0 = t + 1; // where the value run of the target starts
                while !is_key(prefix[v0 - 1]) {
                    v0 -= 1;
                }
                let mut k0 = v0 - 1;
                while k0 > 0 && is_key(prefix[k0 - 1]) {
                    k0 -= 1;
                }
                let (key, n) = (&prefix[k0..v0], v0 - k0);
                let s = (0..k0)
                    .find(|&s| {
                        prefix[s..s + n] == *key
                            && (s == 0 || !is_key(prefix[s - 1]))
                            && !is_key(prefix[s + n])
                    })
                    .unwrap();
                prefix[s + n + (t + 1 - v0)]
            }
            TaskKind::MadSelectiveCopy => {
                let copy = first(63);
                let data: Vec<u32> = prefix[..copy].iter().copied().filter(|&x| x < 62).collect();
                data[t - copy - 1]
            }
            TaskKind::Memorization => {
                mad::fact_table(64).into_iter().find(|&(k, _)| k == prefix[t - 1]).unwrap().1
            }
            // The state after the whole prefix; the groups are checked in `state_tracking`.
            _ => {
                let group = task(kind).group().unwrap();
                let state = prefix.iter().fold(0, |s, &x| group.product(s, (x - FIRST_DATA) as usize));
                FIRST_DATA + state as u32
            }
        }
    }

    #[test]
    fn same_arguments_give_the_same_batch_and_others_differ() {
        for kind in TaskKind::ALL {
            let t = task(kind);
            let a = t.batch(1, Split::Train, 3, 4, 64);
            assert_eq!(a, t.batch(1, Split::Train, 3, 4, 64), "{kind:?}");
            assert_ne!(a, t.batch(1, Split::Train, 4, 4, 64), "{kind:?}: index");
            assert_ne!(a, t.batch(2, Split::Train, 3, 4, 64), "{kind:?}: seed");
            assert_ne!(a, t.batch(1, Split::Val, 3, 4, 64), "{kind:?}: split");
            // Rows depend on their number, not on how they are batched.
            let halves = t.batch(1, Split::Train, 6, 2, 64);
            assert_eq!(halves.tokens.inputs, a.tokens.inputs[..2 * 64], "{kind:?}");
            // Rows of a batch differ from each other.
            assert_ne!(a.tokens.inputs[..64], a.tokens.inputs[64..128], "{kind:?}");
        }
    }

    #[test]
    fn targets_are_inputs_shifted_by_one() {
        let tagged =
            |k| task(k).group().is_some() || matches!(k, TaskKind::MadSelectiveCopy | TaskKind::Memorization);
        for kind in TaskKind::ALL.into_iter().filter(|&k| !tagged(k)) {
            let b = task(kind).batch(0, Split::Train, 0, 3, 48);
            assert_eq!(b.tokens.inputs.len(), 3 * 48);
            assert_eq!(b.answer.len(), 3 * 48);
            for (x, y, _) in rows(&b) {
                assert_eq!(x[1..], y[..47], "{kind:?}");
            }
        }
    }

    #[test]
    fn every_answer_follows_from_the_inputs_before_it() {
        for kind in TaskKind::ALL {
            let t = task(kind);
            for (split, seq_len) in [(Split::Train, 32), (Split::Train, 64), (Split::Val, 257)] {
                // Rows of whole pairs only (memorization); no room for 2·16 + 1 (MAD's copying).
                let refused = (kind == TaskKind::Memorization && seq_len % 2 == 1)
                    || (kind == TaskKind::MadSelectiveCopy && seq_len < 33);
                assert_eq!(t.check(seq_len).is_err(), refused, "{kind:?} at {seq_len}");
                if refused {
                    continue;
                }
                let b = t.batch(5, split, 2, 8, seq_len);
                for (x, y, answer) in rows(&b) {
                    let answers: Vec<usize> = (0..seq_len).filter(|&i| answer[i]).collect();
                    if let Some(n) = t.answers_per_sequence(seq_len) {
                        assert_eq!(answers.len(), n, "{kind:?}");
                    }
                    for i in answers {
                        assert_eq!(oracle(kind, &x[..=i]), y[i], "{kind:?} len {seq_len} position {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn mqar_pairs_and_queries_follow_zoology() {
        let t = task(TaskKind::Mqar);
        let (keys, values) = mqar_ranges(64);
        let n = t.cfg.n_pairs;
        for (x, y, answer) in rows(&t.batch(9, Split::Train, 0, 16, 128)) {
            let pair_keys: Vec<u32> = x[..2 * n].iter().step_by(2).copied().collect();
            assert!(pair_keys.iter().all(|k| keys.contains(k)), "{pair_keys:?}");
            assert!(x[1..2 * n].iter().step_by(2).all(|v| values.contains(v)));
            let mut sorted = pair_keys.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted.len(), n, "keys are distinct within a row");
            // Every key is queried exactly once after the pairs; the answer is its value.
            let queried: Vec<u32> = (0..128).filter(|&i| answer[i]).map(|i| x[i]).collect();
            let mut q = queried.clone();
            q.sort();
            assert_eq!(q, sorted);
            assert_ne!(queried, pair_keys, "queries come in a random order (this seed)");
            for i in (0..128).filter(|&i| answer[i]) {
                assert!(i >= 2 * n);
                let k = pair_keys.iter().position(|&k| k == x[i]).unwrap();
                assert_eq!(y[i], x[2 * k + 1]);
            }
            // The rest of the remainder is blank.
            let used = (0..128).filter(|&i| answer[i]).count() * 2;
            assert_eq!(x[2 * n..].iter().filter(|&&v| v != PAD).count() + (y[127] != PAD) as usize, used);
        }
    }

    #[test]
    fn copies_repeat_their_data_and_specials_stay_out_of_it() {
        let c = TaskConfig::default().copy_len;
        for (x, y, answer) in rows(&task(TaskKind::Copy).batch(3, Split::Val, 1, 8, 100)) {
            let copied: Vec<u32> = (0..100).filter(|&i| answer[i]).map(|i| y[i]).collect();
            assert_eq!(copied, x[..c]);
            assert!(x[..c].iter().all(|&v| (FIRST_DATA..64).contains(&v)));
            assert!(x[c..100 - c].iter().all(|&v| v == PAD));
            assert_eq!(x[100 - c], SEP);
            assert!(answer[100 - c..].iter().all(|&a| a) && !answer[..100 - c].iter().any(|&a| a));
        }
        for (x, y, answer) in rows(&task(TaskKind::SelectiveCopy).batch(3, Split::Val, 1, 8, 100)) {
            let data: Vec<u32> = x[..100 - c].iter().copied().filter(|&v| v != PAD).collect();
            assert_eq!(data.len(), c, "data tokens are never PAD or SEP");
            assert!(data.iter().all(|&v| v >= FIRST_DATA));
            let copied: Vec<u32> = (0..100).filter(|&i| answer[i]).map(|i| y[i]).collect();
            assert_eq!(copied, data);
            assert_eq!(x[100 - c], SEP);
        }
        let mut depths = Vec::new();
        for (x, y, answer) in rows(&task(TaskKind::Passkey).batch(3, Split::Val, 1, 8, 100)) {
            let p = x.iter().position(|&v| v == PASSKEY).unwrap();
            depths.push(p);
            let digits = FIRST_DATA..FIRST_DATA + DIGITS;
            assert!(x[p + 1..p + 6].iter().all(|d| digits.contains(d)));
            assert_eq!(x.iter().filter(|&&v| v == PASSKEY || v == QUERY).count(), 2);
            assert_eq!(x[95], QUERY);
            // Filler everywhere else: never a digit, a marker or a blank.
            for (i, &v) in x[..95].iter().enumerate() {
                if !(p..p + 6).contains(&i) {
                    assert!(v >= FIRST_DATA + DIGITS, "filler {v} at {i}");
                }
            }
            let answered: Vec<u32> = (0..100).filter(|&i| answer[i]).map(|i| y[i]).collect();
            assert_eq!(answered, x[p + 1..p + 6]);
        }
        depths.dedup();
        assert!(depths.len() > 1, "the passkey moves: {depths:?}");
    }

    #[test]
    fn longer_rows_work_and_move_answers_further_from_their_source() {
        for kind in TaskKind::ALL {
            let t = task(kind);
            t.check(128).unwrap();
            for len in t.cfg.eval_lengths(128) {
                t.check(len).unwrap();
                let b = t.batch(0, Split::Val, 0, 2, len);
                assert_eq!(b.tokens.targets.len(), 2 * len);
                if let Some(n) = t.answers_per_sequence(len) {
                    assert_eq!(b.answer.iter().filter(|&&a| a).count(), 2 * n);
                }
            }
            assert_eq!(t.cfg.eval_lengths(128), vec![256, 512]);
        }
        // The copy answer sits at the end of the row, the segment at the start.
        let first_answer =
            |len| task(TaskKind::Copy).batch(0, Split::Val, 0, 1, len).answer.iter().position(|&a| a);
        assert_eq!(first_answer(64), Some(64 - 16));
        assert_eq!(first_answer(512), Some(512 - 16));
    }

    #[test]
    fn a_finite_training_set_is_cycled_and_held_out_rows_stay_new() {
        let mut t = task(TaskKind::InContextRecall);
        t.cfg.train_sequences = 6;
        let (a, b) = (t.batch(3, Split::Train, 0, 4, 31), t.batch(3, Split::Train, 3, 4, 31));
        // Rows 12..16 are rows 0..4 again.
        assert_eq!(a, b);
        assert_ne!(a, t.batch(3, Split::Train, 1, 4, 31));
        assert_ne!(t.batch(3, Split::Val, 0, 4, 31), t.batch(3, Split::Val, 3, 4, 31));
        assert!(
            TaskKind::InContextRecall.trains_on_every_token()
                && !TaskKind::Memorization.trains_on_every_token()
        );
    }

    #[test]
    fn validation_batches_hold_val_sequences_rows() {
        let mut t = task(TaskKind::Mqar);
        t.cfg.val_sequences = 10;
        let v = t.validation_batches(4, 4, 64);
        assert_eq!(v.iter().map(|b| b.tokens.batch).collect::<Vec<_>>(), vec![4, 4, 2]);
        assert_eq!(v[1], t.batch(4, Split::Val, 1, 4, 64));
        assert_ne!(v[0].tokens.inputs, t.batch(4, Split::Train, 0, 4, 64).tokens.inputs);
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let err = |kind, f: &dyn Fn(&mut TaskConfig), len| {
            let mut t = task(kind);
            f(&mut t.cfg);
            format!("{:#}", t.check(len).unwrap_err())
        };
        let e = err(TaskKind::Mqar, &|_| {}, 31);
        assert!(
            e.contains("train.seq_len = 31") && e.contains("≥ 32") && e.contains("data.task.n_pairs"),
            "{e}"
        );
        let e = err(TaskKind::Mqar, &|c| c.vocab = 19, 128);
        assert!(e.contains("data.task.vocab = 19") && e.contains("at least 20"), "{e}");
        let e = err(TaskKind::Copy, &|c| c.copy_len = 40, 64);
        assert!(e.contains("data.task.copy_len = 40") && e.contains("≥ 80"), "{e}");
        let e = err(TaskKind::SelectiveCopy, &|c| c.copy_len = 0, 64);
        assert!(e.contains("data.task.copy_len is 0"), "{e}");
        let e = err(TaskKind::Passkey, &|c| c.vocab = 14, 64);
        assert!(e.contains("at least 15"), "{e}");
        let e = err(TaskKind::Passkey, &|c| c.eval_seq_lens = vec![8], 64);
        assert!(e.contains("data.task.eval_seq_lens = 8"), "{e}");
        let e = err(TaskKind::Copy, &|c| c.val_sequences = 0, 64);
        assert!(e.contains("data.task.val_sequences"), "{e}");
        let e = err(TaskKind::S5, &|c| c.vocab = 64, 64);
        assert!(e.contains("data.task.vocab = 64") && e.contains("at least 124"), "{e}");
        let e = err(TaskKind::ModularAdd, &|c| c.modulus = 1, 64);
        assert!(e.contains("data.task.modulus = 1"), "{e}");
        let e = err(TaskKind::ModularAdd, &|c| c.modulus = 100, 64);
        assert!(e.contains("at least 104") && e.contains("lower data.task.modulus"), "{e}");
        let e = err(TaskKind::Parity, &|_| {}, 0);
        assert!(e.contains("train.seq_len = 0"), "{e}");
        let e = err(TaskKind::Memorization, &|_| {}, 31);
        assert!(e.contains("train.seq_len = 31") && e.contains("even"), "{e}");
        let e = err(TaskKind::NoisyRecall, &|c| c.noise_fraction = 1.0, 64);
        assert!(e.contains("data.task.noise_fraction = 1"), "{e}");
        let e = err(TaskKind::NoisyRecall, &|c| c.vocab = 17, 64);
        assert!(e.contains("at least 18"), "{e}");
        let e = err(TaskKind::MadSelectiveCopy, &|_| {}, 32);
        assert!(e.contains("≥ 33"), "{e}");
        // Smallest settings that do fit work.
        let mut t = task(TaskKind::Passkey);
        t.cfg.vocab = 15;
        t.check(11).unwrap();
        t.batch(0, Split::Train, 0, 2, 11);
        let mut t = task(TaskKind::Mqar);
        t.cfg.vocab = 20;
        t.check(32).unwrap();
        t.batch(0, Split::Train, 0, 2, 32);
    }

    #[test]
    fn sources_name_tasks() {
        let cfg = TaskConfig::default();
        assert_eq!(
            Task::from_source("task:selective-copy", &cfg).unwrap().unwrap().kind,
            TaskKind::SelectiveCopy
        );
        assert!(Task::from_source("builtin:stories", &cfg).unwrap().is_none());
        let e = Task::from_source("task:recall", &cfg).unwrap_err().to_string();
        assert!(e.contains("`recall`") && e.contains("task:mqar, task:copy"), "{e}");
        for name in TASK_NAMES {
            assert_eq!(Task::from_source(&format!("task:{name}"), &cfg).unwrap().unwrap().name(), *name);
        }
        let parsed: TaskConfig = toml::from_str("n_pairs = 4").unwrap();
        assert_eq!(parsed, TaskConfig { n_pairs: 4, ..TaskConfig::default() });
        assert!(toml::from_str::<TaskConfig>("pairs = 4").is_err());
    }

    #[test]
    fn accuracy_counts_answer_tokens_and_whole_sequences() {
        // Two rows of 4; answers at positions 2, 3 of each row.
        let batch = TaskBatch {
            tokens: TokenBatch {
                batch: 2,
                seq_len: 4,
                inputs: vec![0; 8],
                targets: vec![5, 6, 7, 8, 5, 6, 7, 8],
            },
            answer: vec![false, false, true, true, false, false, true, true],
        };
        // Row 0: both answers right (and a wrong non-answer); row 1: one of two right.
        let acc = Accuracy::of(&[0, 0, 7, 8, 5, 6, 7, 0], &batch.tokens, &batch.answer);
        assert_eq!(acc, Accuracy { tokens_right: 3, tokens: 4, sequences_right: 1, sequences: 2 });
        let mut total = acc;
        total.merge(&Accuracy::of(&[5, 6, 7, 8, 5, 6, 7, 8], &batch.tokens, &batch.answer));
        assert_eq!(total.token_accuracy(), 7.0 / 8.0);
        assert_eq!(total.sequence_accuracy(), 3.0 / 4.0);
        assert_eq!(Accuracy::default().token_accuracy(), 0.0);
    }
}
