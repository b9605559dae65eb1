//! tokens → batches.
//!
//! The training shard is cut into contiguous windows of `seq_len + 1` tokens that start every
//! `seq_len` tokens (input `x = w[..T]`, target `y = w[1..]`), so each token is a target
//! exactly once per epoch. Each epoch visits the windows in a permutation drawn from the
//! seed, and micro-batch `i` of a run is a pure function of (seed, i): every architecture in
//! a comparison sees the same tokens in the same order, and a resumed run continues exactly
//! where it stopped without saving any data-loader state.

use anyhow::{Result, bail};

use super::shards::TokenShard;
use crate::rng::Rng;

/// A batch of token windows, row-major `[batch, seq_len]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBatch {
    pub batch: usize,
    pub seq_len: usize,
    pub inputs: Vec<u32>,
    pub targets: Vec<u32>,
}

pub struct Batcher<'a> {
    shard: &'a TokenShard,
    seq_len: usize,
    batch: usize,
    seed: u64,
    n_windows: usize,
    /// The permutation of the epoch last used (cached: consecutive batches share it).
    epoch: Option<(usize, Vec<u32>)>,
}

impl<'a> Batcher<'a> {
    pub fn new(shard: &'a TokenShard, batch: usize, seq_len: usize, seed: u64) -> Result<Self> {
        let n_windows = shard.len().saturating_sub(1) / seq_len;
        if n_windows < batch {
            bail!(
                "the training split has {} tokens: fewer than one batch of {batch} × {} tokens; \
                 use more data (data.builtin_bytes or a larger corpus) or lower train.batch_size / train.seq_len",
                shard.len(),
                seq_len + 1
            );
        }
        Ok(Self { shard, seq_len, batch, seed, n_windows, epoch: None })
    }

    /// Windows per epoch.
    pub fn windows_per_epoch(&self) -> usize {
        self.n_windows
    }

    /// The `index`-th micro-batch of the run.
    pub fn batch(&mut self, index: u64) -> TokenBatch {
        let mut out = TokenBatch {
            batch: self.batch,
            seq_len: self.seq_len,
            inputs: Vec::with_capacity(self.batch * self.seq_len),
            targets: Vec::with_capacity(self.batch * self.seq_len),
        };
        let mut window = Vec::with_capacity(self.seq_len + 1);
        for row in 0..self.batch as u64 {
            let flat = index * self.batch as u64 + row;
            let epoch = (flat / self.n_windows as u64) as usize;
            let pos = (flat % self.n_windows as u64) as usize;
            let w = self.permutation(epoch)[pos] as usize;
            window.clear();
            self.shard.read_into(w * self.seq_len, self.seq_len + 1, &mut window);
            out.inputs.extend_from_slice(&window[..self.seq_len]);
            out.targets.extend_from_slice(&window[1..]);
        }
        out
    }

    fn permutation(&mut self, epoch: usize) -> &[u32] {
        if self.epoch.as_ref().map(|(e, _)| *e) != Some(epoch) {
            let mut perm: Vec<u32> = (0..self.n_windows as u32).collect();
            Rng::fork(self.seed, &format!("batches-epoch-{epoch}")).shuffle(&mut perm);
            self.epoch = Some((epoch, perm));
        }
        &self.epoch.as_ref().expect("just set").1
    }
}

/// The fixed validation set: the first `n_batches · batch` windows of the validation split,
/// in order, identical at every evaluation and for every architecture.
pub fn validation_batches(
    shard: &TokenShard,
    n_batches: usize,
    batch: usize,
    seq_len: usize,
) -> Result<Vec<TokenBatch>> {
    let available = shard.len().saturating_sub(1) / seq_len;
    if available < batch {
        bail!(
            "the validation split has {} tokens, fewer than one batch of {batch} × {} tokens; \
             raise data.val_fraction, use more data, or lower train.batch_size / train.seq_len",
            shard.len(),
            seq_len + 1
        );
    }
    if let Some(note) = shortfall_note(available, n_batches, batch, seq_len) {
        eprintln!("{note}");
    }
    Ok(windows(shard, 0, validation_batch_count(available, n_batches, batch), batch, seq_len))
}

/// What to tell a user whose `eval.batches` asks for more batches than the validation split
/// holds: the loss is then measured on fewer tokens than configured, which must not pass
/// silently.
fn shortfall_note(available: usize, n_batches: usize, batch: usize, seq_len: usize) -> Option<String> {
    let n = validation_batch_count(available, n_batches, batch);
    (n < n_batches).then(|| {
        format!(
            "note: eval.batches = {n_batches}, but the validation split holds only {n} batches of \
             {batch} × {seq_len} tokens; validating on those {n} (raise data.val_fraction or use \
             more data for more)"
        )
    })
}

/// How many of the `n_batches` validation batches fit in `available` windows: the one rule
/// both the validation set and the selection set beside it follow.
fn validation_batch_count(available: usize, n_batches: usize, batch: usize) -> usize {
    n_batches.min(available / batch.max(1))
}

/// The held-out selection set: up to `n_batches` batches of windows from the end of the
/// validation split, disjoint from [`validation_batches`]' windows. `compare` decides its
/// learning-rate grid on them, so that no reported loss is scored on the data that chose it.
pub fn selection_batches(
    shard: &TokenShard,
    n_batches: usize,
    batch: usize,
    seq_len: usize,
) -> Result<Vec<TokenBatch>> {
    let available = shard.len().saturating_sub(1) / seq_len;
    let reported = validation_batch_count(available, n_batches, batch) * batch;
    let n = n_batches.min(available.saturating_sub(reported) / batch.max(1));
    if n == 0 {
        bail!(
            "the validation split ({} tokens) has no room for a held-out learning-rate selection set \
             beside its reported validation batches ({reported} windows of {seq_len} tokens); raise \
             data.val_fraction, use more data, or lower eval.batches",
            shard.len()
        );
    }
    Ok(windows(shard, available - n * batch, n, batch, seq_len))
}

/// `n_batches` batches of consecutive windows of `seq_len + 1` tokens, from window `first`.
fn windows(
    shard: &TokenShard,
    first: usize,
    n_batches: usize,
    batch: usize,
    seq_len: usize,
) -> Vec<TokenBatch> {
    let mut window = Vec::with_capacity(seq_len + 1);
    (0..n_batches)
        .map(|b| {
            let mut out = TokenBatch {
                batch,
                seq_len,
                inputs: Vec::with_capacity(batch * seq_len),
                targets: Vec::with_capacity(batch * seq_len),
            };
            for row in 0..batch {
                window.clear();
                shard.read_into((first + b * batch + row) * seq_len, seq_len + 1, &mut window);
                out.inputs.extend_from_slice(&window[..seq_len]);
                out.targets.extend_from_slice(&window[1..]);
            }
            out
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::shards::write_shard;

    fn shard(n: usize) -> TokenShard {
        let path = std::env::temp_dir().join(format!("archlab-batcher-{}-{n}.bin", std::process::id()));
        let tokens: Vec<u32> = (0..n as u32).collect();
        write_shard(&path, &tokens, 1 << 20, 0, n as u64).unwrap();
        TokenShard::open(&path).unwrap()
    }

    #[test]
    fn a_validation_split_too_small_for_eval_batches_is_said() {
        // 10 windows of 16 hold two batches of 4: asking for 5 is capped, and said.
        let note = shortfall_note(10, 5, 4, 16).unwrap();
        assert!(note.contains("eval.batches = 5") && note.contains("only 2 batches of 4 × 16"), "{note}");
        assert_eq!(shortfall_note(10, 2, 4, 16), None);
        let s = shard(16 * 10 + 1);
        assert_eq!(validation_batches(&s, 5, 4, 16).unwrap().len(), 2);
    }

    #[test]
    fn targets_are_inputs_shifted_by_one() {
        let s = shard(1000);
        let mut b = Batcher::new(&s, 4, 16, 0).unwrap();
        let batch = b.batch(3);
        for r in 0..4 {
            let x = &batch.inputs[r * 16..(r + 1) * 16];
            let y = &batch.targets[r * 16..(r + 1) * 16];
            assert_eq!(x[0] % 16, 0, "windows start on a stride boundary");
            for t in 0..16 {
                assert_eq!(y[t], x[t] + 1);
            }
        }
    }

    #[test]
    fn an_epoch_covers_every_window_once_and_order_depends_only_on_seed() {
        let s = shard(16 * 40 + 1);
        let mut a = Batcher::new(&s, 8, 16, 7).unwrap();
        assert_eq!(a.windows_per_epoch(), 40);
        let mut starts: Vec<u32> = (0..5).flat_map(|i| a.batch(i).inputs.into_iter().step_by(16)).collect();
        let first_epoch = starts.clone();
        starts.sort();
        assert_eq!(starts, (0..40).map(|w| w * 16).collect::<Vec<u32>>());

        // Random access (as after a resume) gives the same batches as sequential access.
        let mut b = Batcher::new(&s, 8, 16, 7).unwrap();
        assert_eq!(b.batch(4).inputs, a.batch(4).inputs);
        let again: Vec<u32> = (0..5).flat_map(|i| b.batch(i).inputs.into_iter().step_by(16)).collect();
        assert_eq!(again, first_epoch);

        let mut c = Batcher::new(&s, 8, 16, 8).unwrap();
        assert_ne!(c.batch(0).inputs, a.batch(0).inputs);
    }

    #[test]
    fn too_little_data_is_an_error_not_a_panic() {
        let s = shard(50);
        assert!(Batcher::new(&s, 4, 16, 0).is_err());
        assert!(validation_batches(&s, 2, 4, 16).is_err());
        assert_eq!(validation_batches(&s, 10, 1, 16).unwrap().len(), 3);
    }

    #[test]
    fn the_selection_set_is_held_out_from_the_reported_one() {
        let s = shard(16 * 20 + 1); // 20 windows of 16
        let first_tokens = |b: &[TokenBatch]| -> Vec<u32> {
            b.iter().flat_map(|b| b.inputs.iter().step_by(16).copied()).collect()
        };
        let reported = first_tokens(&validation_batches(&s, 3, 4, 16).unwrap()); // windows 0..12
        let selection = first_tokens(&selection_batches(&s, 3, 4, 16).unwrap()); // 8 windows left: 2 batches
        assert_eq!(reported, (0..12).map(|w| w * 16).collect::<Vec<u32>>());
        assert_eq!(selection, (12..20).map(|w| w * 16).collect::<Vec<u32>>());
        // All 20 windows reported: none left to select on.
        let err = selection_batches(&s, 5, 4, 16).unwrap_err().to_string();
        assert!(err.contains("no room for a held-out"), "{err}");
    }
}
