//! Text ⇄ token ids.
//!
//! Two kinds, one interface: a byte-level tokenizer (256 symbols, nothing to train, bits per
//! byte is simply loss / ln 2) and any Hugging Face `tokenizer.json` (GPT-2, GPT-NeoX, SmolLM…),
//! loaded or trained here as a byte-level BPE with the `tokenizers` crate.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper};
use tokenizers::{PreTokenizerWrapper, TokenizerBuilder};

use crate::util::hash::fnv64;

/// The byte tokenizer's end-of-text symbol: ASCII 0x03 "End of Text", which never occurs in
/// the text we train on (sources strip it), so document boundaries stay unambiguous.
pub const BYTE_EOT: u32 = 0x03;

/// End-of-text marker that BPE tokenizers trained here reserve (GPT-2's spelling).
pub const BPE_EOT: &str = "<|endoftext|>";

/// What `data.tokenizer` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenizerSpec {
    Byte,
    /// A Hugging Face `tokenizer.json`.
    File(PathBuf),
    /// Train a byte-level BPE with this vocabulary size on the training split.
    TrainBpe(usize),
}

impl TokenizerSpec {
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "byte" {
            return Ok(Self::Byte);
        }
        if let Some(v) = s.strip_prefix("bpe:") {
            let vocab: usize = v
                .parse()
                .map_err(|_| anyhow!("data.tokenizer `{s}`: expected bpe:<vocab size>, e.g. bpe:8192"))?;
            if !(257..=1 << 20).contains(&vocab) {
                bail!("data.tokenizer `{s}`: a BPE vocabulary must be between 257 and 1048576");
            }
            return Ok(Self::TrainBpe(vocab));
        }
        if s.is_empty() {
            bail!("data.tokenizer is empty; use `byte`, `bpe:<vocab>` or a path to tokenizer.json");
        }
        Ok(Self::File(PathBuf::from(s)))
    }
}

/// A loaded tokenizer.
#[derive(Clone)]
pub enum Tokenizer {
    Byte,
    Hf(Box<tokenizers::Tokenizer>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tokenizer::Byte => write!(f, "Tokenizer::Byte"),
            Tokenizer::Hf(t) => write!(f, "Tokenizer::Hf(vocab {})", t.get_vocab_size(true)),
        }
    }
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!(
                "tokenizer file {} not found; pass a Hugging Face tokenizer.json, `byte`, or `bpe:<vocab>`",
                path.display()
            );
        }
        let tok = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("cannot load tokenizer {}: {e}", path.display()))?;
        Ok(Self::Hf(Box::new(tok)))
    }

    /// Trains a byte-level BPE (GPT-2 style: byte alphabet, no normaliser, `<|endoftext|>`
    /// reserved) on `texts`.
    pub fn train_bpe<I, S>(texts: I, vocab_size: usize) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .special_tokens(vec![AddedToken::from(BPE_EOT, true)])
            .build();
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        let mut tok = TokenizerBuilder::<
            ModelWrapper,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        >::new()
        .with_model(BPE::default().into())
        .with_normalizer(None)
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true).into()))
        .with_post_processor(Some(ByteLevel::new(false, true, true).into()))
        .with_decoder(Some(ByteLevelDecoder::default().into()))
        .build()
        .map_err(|e| anyhow!("building BPE tokenizer: {e}"))?;
        tok.train(&mut trainer, texts).map_err(|e| anyhow!("training BPE tokenizer: {e}"))?;
        Ok(Self::Hf(Box::new(tokenizers::Tokenizer::from(tok))))
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Byte => 256,
            Tokenizer::Hf(t) => t.get_vocab_size(true),
        }
    }

    /// The id that separates documents, if the tokenizer has one.
    pub fn eot(&self) -> Option<u32> {
        match self {
            Tokenizer::Byte => Some(BYTE_EOT),
            Tokenizer::Hf(t) => ["<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|im_end|>"]
                .iter()
                .find_map(|s| t.token_to_id(s)),
        }
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Byte => Ok(text.bytes().map(u32::from).collect()),
            Tokenizer::Hf(t) => {
                Ok(t.encode_fast(text, false).map_err(|e| anyhow!("tokenizing: {e}"))?.get_ids().to_vec())
            }
        }
    }

    /// Decodes ids to text. Invalid UTF-8 (a byte model can emit any byte) is shown as U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Byte => {
                let bytes: Vec<u8> = ids.iter().map(|&i| i.min(255) as u8).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Tokenizer::Hf(t) => t.decode(ids, false).map_err(|e| anyhow!("decoding: {e}")),
        }
    }

    /// The serialised form saved next to prepared shards and runs (`byte` or JSON).
    pub fn to_json(&self) -> Result<String> {
        match self {
            Tokenizer::Byte => Ok("\"byte\"".into()),
            Tokenizer::Hf(t) => t.to_string(false).map_err(|e| anyhow!("serialising tokenizer: {e}")),
        }
    }

    /// Loads what [`Tokenizer::to_json`] wrote.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read tokenizer {}", path.display()))?;
        if text.trim() == "\"byte\"" {
            return Ok(Tokenizer::Byte);
        }
        Self::from_file(path)
    }

    /// A fingerprint stored in every shard header, so that shards are never read with a
    /// different tokenizer than the one that wrote them.
    pub fn fingerprint(&self) -> Result<u64> {
        Ok(fnv64(self.to_json()?.as_bytes()))
    }
}

/// Incremental decoding for streaming output: returns only the text that became final since
/// the last call (a multi-byte character split across tokens is held back until complete).
pub struct StreamDecoder {
    ids: Vec<u32>,
    printed: usize,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self { ids: Vec::new(), printed: 0 }
    }

    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tokenizer.decode(&self.ids)?;
        let stable = text.trim_end_matches('\u{FFFD}');
        if stable.len() <= self.printed || !stable.is_char_boundary(self.printed) {
            return Ok(String::new());
        }
        let new = stable[self.printed..].to_string();
        self.printed = stable.len();
        Ok(new)
    }
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_round_trip() {
        let t = Tokenizer::Byte;
        let ids = t.encode("héllo").unwrap();
        assert_eq!(ids.len(), 6);
        assert_eq!(t.decode(&ids).unwrap(), "héllo");
    }

    #[test]
    fn stream_decoder_holds_back_split_characters() {
        let t = Tokenizer::Byte;
        let mut s = StreamDecoder::new();
        let mut out = String::new();
        for id in t.encode("a é b").unwrap() {
            out.push_str(&s.push(&t, id).unwrap());
        }
        assert_eq!(out, "a é b");
    }

    #[test]
    fn trained_bpe_round_trips_and_compresses() {
        let texts: Vec<String> =
            (0..200).map(|i| format!("The little fox number {i} found a shiny red kite.")).collect();
        let t = Tokenizer::train_bpe(texts.iter(), 400).unwrap();
        assert!(t.vocab_size() <= 400 && t.vocab_size() > 256);
        let ids = t.encode(&texts[3]).unwrap();
        assert!(ids.len() < texts[3].len() / 2, "{} tokens", ids.len());
        assert_eq!(t.decode(&ids).unwrap(), texts[3]);
        // The reserved end-of-text marker is one token and is what `eot` reports.
        assert_eq!(t.encode(BPE_EOT).unwrap(), vec![t.eot().unwrap()]);
    }

    #[test]
    fn spec_parsing() {
        assert_eq!(TokenizerSpec::parse("byte").unwrap(), TokenizerSpec::Byte);
        assert_eq!(TokenizerSpec::parse("bpe:8192").unwrap(), TokenizerSpec::TrainBpe(8192));
        assert!(TokenizerSpec::parse("bpe:lots").is_err());
        assert!(TokenizerSpec::parse("bpe:10").is_err());
    }
}
