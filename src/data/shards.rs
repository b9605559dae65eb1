//! Token shards: a flat little-endian array of token ids behind a 64-byte header, read through
//! a memory map so that corpora larger than RAM cost nothing to open.
//!
//! ```text
//! offset  size  field
//!      0     8  magic  b"ARCHTOK\0"
//!      8     4  version (1)
//!     12     4  bytes per token (2 = u16, 4 = u32)
//!     16     8  token count
//!     24     4  vocabulary size of the tokenizer that wrote the shard
//!     28     4  reserved (0)
//!     32     8  tokenizer fingerprint (see Tokenizer::fingerprint)
//!     40     8  UTF-8 bytes of the text the tokens came from (for bits per byte)
//!     48    16  reserved (0)
//!     64     …  tokens
//! ```
//! (llm.c's `.bin` shards carry a similar header: magic, version, count.)

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use memmap2::Mmap;

pub const MAGIC: &[u8; 8] = b"ARCHTOK\0";
pub const VERSION: u32 = 1;
pub const HEADER_BYTES: usize = 64;

/// Header fields of a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    pub token_bytes: u32,
    pub count: u64,
    pub vocab_size: u32,
    pub tokenizer_fingerprint: u64,
    pub text_bytes: u64,
}

/// A read-only, memory-mapped shard.
pub struct TokenShard {
    path: PathBuf,
    header: ShardHeader,
    map: Mmap,
}

impl TokenShard {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| {
            format!("cannot open token shard {}; run `archlab data prepare` to create it", path.display())
        })?;
        // SAFETY: the shard is opened read-only and archlab never writes a shard in place
        // (writers create a new file and rename it), so the mapped bytes cannot change under us.
        let map =
            unsafe { Mmap::map(&file) }.with_context(|| format!("cannot memory-map {}", path.display()))?;
        let header = parse_header(&map, path)?;
        Ok(Self { path: path.to_path_buf(), header, map })
    }

    pub fn header(&self) -> &ShardHeader {
        &self.header
    }

    pub fn len(&self) -> usize {
        self.header.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.header.count == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Token at index `i`.
    #[inline]
    pub fn get(&self, i: usize) -> u32 {
        let at = HEADER_BYTES + i * self.header.token_bytes as usize;
        let b = &self.map[at..];
        match self.header.token_bytes {
            2 => u16::from_le_bytes([b[0], b[1]]) as u32,
            _ => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }

    /// Copies `len` tokens starting at `start` into `out`.
    pub fn read_into(&self, start: usize, len: usize, out: &mut Vec<u32>) {
        assert!(start + len <= self.len(), "window past the end of {}", self.path.display());
        out.extend((start..start + len).map(|i| self.get(i)));
    }

    /// Average UTF-8 bytes of source text per token (for converting nats/token to bits/byte).
    pub fn bytes_per_token(&self) -> f64 {
        self.header.text_bytes as f64 / self.header.count.max(1) as f64
    }
}

fn parse_header(bytes: &[u8], path: &Path) -> Result<ShardHeader> {
    let hint = "re-run `archlab data prepare` (or delete the data cache) to rebuild it";
    if bytes.len() < HEADER_BYTES {
        bail!(
            "corrupt token shard {}: {} bytes is shorter than the {HEADER_BYTES}-byte header; {hint}",
            path.display(),
            bytes.len()
        );
    }
    if &bytes[0..8] != MAGIC {
        bail!("corrupt token shard {}: bad magic (not an archlab token shard); {hint}", path.display());
    }
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap());
    let version = u32_at(8);
    if version != VERSION {
        bail!(
            "token shard {} has format version {version}, this archlab reads version {VERSION}; {hint}",
            path.display()
        );
    }
    let header = ShardHeader {
        token_bytes: u32_at(12),
        count: u64_at(16),
        vocab_size: u32_at(24),
        tokenizer_fingerprint: u64_at(32),
        text_bytes: u64_at(40),
    };
    if header.token_bytes != 2 && header.token_bytes != 4 {
        bail!(
            "corrupt token shard {}: {} bytes per token (expected 2 or 4); {hint}",
            path.display(),
            header.token_bytes
        );
    }
    let expected =
        header.count.checked_mul(header.token_bytes as u64).and_then(|n| n.checked_add(HEADER_BYTES as u64));
    if expected != Some(bytes.len() as u64) {
        let expected = expected.map_or("more than 2^64".into(), |n| n.to_string());
        bail!(
            "corrupt token shard {}: header says {} tokens ({expected} bytes) but the file has {} bytes; {hint}",
            path.display(),
            header.count,
            bytes.len()
        );
    }
    Ok(header)
}

/// Writes `tokens` as a shard, atomically (temporary file + rename).
pub fn write_shard(
    path: &Path,
    tokens: &[u32],
    vocab_size: usize,
    tokenizer_fingerprint: u64,
    text_bytes: u64,
) -> Result<()> {
    let token_bytes: u32 = if vocab_size <= 1 << 16 { 2 } else { 4 };
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&token_bytes.to_le_bytes());
    header[16..24].copy_from_slice(&(tokens.len() as u64).to_le_bytes());
    header[24..28].copy_from_slice(&(vocab_size as u32).to_le_bytes());
    header[32..40].copy_from_slice(&tokenizer_fingerprint.to_le_bytes());
    header[40..48].copy_from_slice(&text_bytes.to_le_bytes());
    crate::util::atomic::write_with(path, |w| {
        w.write_all(&header)?;
        for &t in tokens {
            if token_bytes == 2 {
                w.write_all(&(t as u16).to_le_bytes())?;
            } else {
                w.write_all(&t.to_le_bytes())?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("archlab-shards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn round_trip_u16_and_u32() {
        for (vocab, width) in [(256usize, 2u32), (100_000, 4)] {
            let path = tmp(&format!("rt{vocab}.bin"));
            let tokens: Vec<u32> = (0..1000).map(|i| (i * 37 % vocab) as u32).collect();
            write_shard(&path, &tokens, vocab, 42, 1234).unwrap();
            let shard = TokenShard::open(&path).unwrap();
            assert_eq!(shard.header().token_bytes, width);
            assert_eq!(shard.len(), 1000);
            assert_eq!(shard.header().tokenizer_fingerprint, 42);
            let mut out = Vec::new();
            shard.read_into(10, 20, &mut out);
            assert_eq!(out, tokens[10..30]);
        }
    }

    #[test]
    fn corrupt_headers_are_named() {
        let path = tmp("bad.bin");
        std::fs::write(&path, b"not a shard at all, just some bytes that are long enough to parse....")
            .unwrap();
        let err = TokenShard::open(&path).err().unwrap().to_string();
        assert!(err.contains("bad magic"), "{err}");

        write_shard(&path, &[1, 2, 3], 256, 0, 3).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 1);
        std::fs::write(&path, &bytes).unwrap();
        let err = TokenShard::open(&path).err().unwrap().to_string();
        assert!(err.contains("header says 3 tokens"), "{err}");

        std::fs::write(&path, b"short").unwrap();
        let err = TokenShard::open(&path).err().unwrap().to_string();
        assert!(err.contains("shorter than"), "{err}");
    }

    /// Damaged and crafted headers are errors, never panics or overflows; a header that passes
    /// promises no more tokens than the file holds.
    #[test]
    fn survives_mutated_files() {
        let path = tmp("fuzz.bin");
        write_shard(&path, &(0..40).collect::<Vec<u32>>(), 300, 7, 99).unwrap();
        let valid = std::fs::read(&path).unwrap();
        for bytes in crate::util::mutate::mutants(&valid, 500, 5) {
            if let Ok(h) = parse_header(&bytes, &path) {
                assert_eq!(HEADER_BYTES as u64 + h.count * h.token_bytes as u64, bytes.len() as u64);
            }
        }
    }
}
