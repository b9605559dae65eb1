//! Training batches from a token file (`archlab bench --tokens FILE`), so that archlab and a
//! PyTorch baseline (`tools/torch_baseline.py`) train on exactly the same batches.
//!
//! The format is the simplest one both sides can write and read without a library: raw
//! little-endian `u32` token ids, nothing else. Step `s` takes the `s`-th run of
//! `batch · (T + 1)` tokens; each of its `batch` rows of `T + 1` tokens gives the inputs (the
//! first `T`) and the targets (the last `T`, shifted by one). Once the whole runs are used up
//! the steps start again from the first run (a tail shorter than one run is never used), so a
//! short file still feeds any number of steps, and both sides agree on which tokens step `s`
//! sees.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// A token file read into memory and checked to be whole `u32`s.
pub struct TokenFile {
    path: PathBuf,
    ids: Vec<u32>,
}

impl TokenFile {
    /// Reads the whole file. Errors name the file: unreadable, empty, or a length that is not
    /// a whole number of 4-byte ids.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read token file {}", path.display()))?;
        if bytes.is_empty() {
            bail!("token file {} is empty; it must hold little-endian u32 token ids", path.display());
        }
        if !bytes.len().is_multiple_of(4) {
            bail!(
                "token file {} has {} bytes, not a whole number of 4-byte little-endian u32 token ids",
                path.display(),
                bytes.len()
            );
        }
        let ids = bytes.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        Ok(Self { path: path.to_path_buf(), ids })
    }

    /// Builds one from ids in memory (tests).
    pub fn from_ids(path: &Path, ids: Vec<u32>) -> Self {
        Self { path: path.to_path_buf(), ids }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whole steps of `batch · (seq_len + 1)` tokens the file holds before it cycles.
    pub fn steps_before_cycling(&self, batch: usize, seq_len: usize) -> usize {
        self.ids.len() / step_tokens(batch, seq_len)
    }

    /// Checks that the file can feed a model of `vocab` entries with `batch × seq_len` batches:
    /// at least one whole step, and every id below `vocab` (the first offender is named, with
    /// its position, so a file written for another vocabulary is caught before any training).
    pub fn check(&self, batch: usize, seq_len: usize, vocab: usize) -> Result<()> {
        let need = step_tokens(batch, seq_len);
        if self.ids.len() < need {
            bail!(
                "token file {} holds {} tokens, fewer than one training step needs: batch {batch} × (T {seq_len} + 1) = {need}",
                self.path.display(),
                self.ids.len()
            );
        }
        if let Some((i, &id)) = self.ids.iter().enumerate().find(|&(_, &id)| id as usize >= vocab) {
            bail!(
                "token file {}: token {i} is id {id}, not below the model's vocabulary size {vocab}",
                self.path.display()
            );
        }
        Ok(())
    }

    /// Step `step`'s inputs and targets, each `batch · seq_len` ids in row-major `[batch, T]`
    /// order. The caller has run [`check`](Self::check) for this shape.
    pub fn batch(&self, step: usize, batch: usize, seq_len: usize) -> (Vec<u32>, Vec<u32>) {
        let per_step = step_tokens(batch, seq_len);
        let runs = self.steps_before_cycling(batch, seq_len);
        assert!(runs > 0, "token file {} is too short for one step (unchecked)", self.path.display());
        let start = (step % runs) * per_step;
        let mut inputs = Vec::with_capacity(batch * seq_len);
        let mut targets = Vec::with_capacity(batch * seq_len);
        for row in self.ids[start..start + per_step].chunks_exact(seq_len + 1) {
            inputs.extend_from_slice(&row[..seq_len]);
            targets.extend_from_slice(&row[1..]);
        }
        (inputs, targets)
    }
}

/// Tokens one step consumes: `batch` rows of `T + 1` (inputs and the one-shifted targets).
fn step_tokens(batch: usize, seq_len: usize) -> usize {
    batch * (seq_len + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("archlab-bench-tokens-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn le_bytes(ids: &[u32]) -> Vec<u8> {
        ids.iter().flat_map(|id| id.to_le_bytes()).collect()
    }

    #[test]
    fn reads_little_endian_u32() {
        let path = temp_file("le.bin", &[1, 0, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0, 0]);
        let f = TokenFile::open(&path).unwrap();
        assert_eq!(f.ids, [1, 256, 65535]);
    }

    #[test]
    fn rows_give_inputs_and_shifted_targets_and_steps_cycle() {
        // batch 2, T 3: a step is 2 rows of 4 tokens; 17 tokens hold 2 whole steps (+1 unused).
        let ids: Vec<u32> = (0..17).collect();
        let f = TokenFile::from_ids(Path::new("t.bin"), ids);
        f.check(2, 3, 17).unwrap();
        assert_eq!(f.steps_before_cycling(2, 3), 2);
        let (x, y) = f.batch(0, 2, 3);
        assert_eq!(x, [0, 1, 2, 4, 5, 6]);
        assert_eq!(y, [1, 2, 3, 5, 6, 7]);
        let (x1, y1) = f.batch(1, 2, 3);
        assert_eq!(x1, [8, 9, 10, 12, 13, 14]);
        assert_eq!(y1, [9, 10, 11, 13, 14, 15]);
        // Step 2 starts again from the first run; token 16 (the tail) is never used.
        assert_eq!(f.batch(2, 2, 3), (x, y));
        assert_eq!(f.batch(3, 2, 3), (x1, y1));
    }

    #[test]
    fn errors_name_the_file_and_the_problem() {
        let err = |r: Result<()>| format!("{:#}", r.unwrap_err());

        let missing = std::env::temp_dir().join("archlab-no-such-token-file.bin");
        let e = format!("{:#}", TokenFile::open(&missing).err().unwrap());
        assert!(e.contains("archlab-no-such-token-file.bin"), "{e}");

        let e = format!("{:#}", TokenFile::open(&temp_file("empty.bin", &[])).err().unwrap());
        assert!(e.contains("empty.bin") && e.contains("empty"), "{e}");

        let e = format!("{:#}", TokenFile::open(&temp_file("odd.bin", &[1, 2, 3, 4, 5])).err().unwrap());
        assert!(e.contains("odd.bin") && e.contains("5 bytes"), "{e}");

        // 7 tokens cannot make one step of batch 2 × (T 3 + 1) = 8.
        let short = TokenFile::open(&temp_file("short.bin", &le_bytes(&[1; 7]))).unwrap();
        let e = err(short.check(2, 3, 100));
        assert!(e.contains("short.bin") && e.contains("holds 7 tokens") && e.contains("= 8"), "{e}");

        let big = TokenFile::open(&temp_file("big.bin", &le_bytes(&[1, 2, 3, 99, 4, 5, 6, 7]))).unwrap();
        big.check(2, 3, 100).unwrap();
        let e = err(big.check(2, 3, 99));
        assert!(e.contains("big.bin") && e.contains("token 3 is id 99") && e.contains("99"), "{e}");
    }
}
