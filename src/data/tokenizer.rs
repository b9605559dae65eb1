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
        // The byte tokenizer as `export` writes it is the byte tokenizer again (its separator
        // then stands for no text, as it should).
        if tok.to_string(false).ok() == Some(byte_tokenizer_json()?) {
            return Ok(Self::Byte);
        }
        Ok(Self::Hf(Box::new(tok)))
    }

    /// A Hugging Face `tokenizer.json` that `tokenizers` and `transformers` load and that
    /// encodes every text to the same ids as this tokenizer (`archlab export`).
    pub fn to_hf_json(&self) -> Result<String> {
        match self {
            Tokenizer::Byte => byte_tokenizer_json(),
            Tokenizer::Hf(_) => self.to_json(),
        }
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

    /// The bytes of source text each token id stands for, indexed by id: what bits per byte
    /// divides by ([`crate::eval::bits_per_byte`]). Special tokens (the end-of-text separator
    /// and other added tokens) stand for no text: 0. A byte-level BPE token stands for one
    /// byte per symbol of its byte alphabet; a SentencePiece token (Metaspace, byte fallback)
    /// for its UTF-8 length with `▁` as a space and `<0xNN>` as one byte. Over a text these
    /// add up to the text's UTF-8 length (tests hold them to it).
    pub fn token_bytes(&self) -> Vec<u32> {
        match self {
            Tokenizer::Byte => (0..256u32).map(|id| u32::from(id != BYTE_EOT)).collect(),
            Tokenizer::Hf(t) => {
                let special = t.get_added_tokens_decoder();
                let byte_level = matches!(t.get_decoder(), Some(DecoderWrapper::ByteLevel(_)));
                (0..t.get_vocab_size(true) as u32)
                    .map(|id| {
                        if special.contains_key(&id) {
                            return 0;
                        }
                        let Some(token) = t.id_to_token(id) else { return 0 };
                        if byte_level {
                            token.chars().count() as u32
                        } else if token.len() == 6 && token.starts_with("<0x") && token.ends_with('>') {
                            1
                        } else {
                            token.replace('\u{2581}', " ").len() as u32
                        }
                    })
                    .collect()
            }
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

/// GPT-2's table of a printable character for each byte (the byte-level alphabet): bytes that
/// are printable Latin-1 stand for themselves, the others for U+0100 onwards, in byte order.
fn byte_chars() -> Vec<char> {
    let printable =
        |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut next = 0x100;
    (0..256u32)
        .map(|b| {
            let c = if printable(b) {
                b
            } else {
                next += 1;
                next - 1
            };
            char::from_u32(c).expect("below U+0200")
        })
        .collect()
}

/// The byte tokenizer in Hugging Face form: a byte-level BPE whose 256 tokens are the bytes,
/// id = byte value, with no merges and no regex split (the whole text is one word of bytes),
/// so that it encodes exactly as [`Tokenizer::Byte`] does.
fn byte_tokenizer_json() -> Result<String> {
    let vocab: serde_json::Map<String, serde_json::Value> =
        byte_chars().into_iter().enumerate().map(|(id, c)| (c.to_string(), id.into())).collect();
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false
    });
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [],
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": []
        }
    });
    // Through the `tokenizers` crate, so that the form is the one it writes (and reads back).
    let tok: tokenizers::Tokenizer =
        json.to_string().parse().map_err(|e| anyhow!("building the byte tokenizer's tokenizer.json: {e}"))?;
    tok.to_string(false).map_err(|e| anyhow!("serialising the byte tokenizer: {e}"))
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
    fn the_byte_tokenizer_in_hugging_face_form_encodes_to_the_same_ids() {
        let json = Tokenizer::Byte.to_hf_json().unwrap();
        let hf: tokenizers::Tokenizer = json.parse().unwrap();
        assert_eq!(hf.get_vocab_size(true), 256);
        let all_bytes: String = (0..=127u8).map(char::from).collect();
        let texts =
            [MIXED.as_slice(), &["\u{3}end of text\u{3}", "  leading spaces", "", all_bytes.as_str()]]
                .concat();
        for text in texts {
            let ids = hf.encode(text, false).unwrap().get_ids().to_vec();
            assert_eq!(ids, Tokenizer::Byte.encode(text).unwrap(), "{text:?}");
            assert_eq!(hf.decode(&ids, false).unwrap(), text);
        }
        // And it loads back as the byte tokenizer.
        let path = std::env::temp_dir().join(format!("archlab-byte-tokenizer-{}.json", std::process::id()));
        std::fs::write(&path, &json).unwrap();
        let loaded = Tokenizer::from_file(&path);
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(loaded.unwrap(), Tokenizer::Byte));
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

    /// Over any text, the bytes the tokens stand for add up to the text's UTF-8 length.
    fn assert_token_bytes_cover(t: &Tokenizer, texts: &[&str]) {
        let bytes = t.token_bytes();
        assert_eq!(bytes.len(), t.vocab_size());
        for text in texts {
            let ids = t.encode(text).unwrap();
            let sum: u32 = ids.iter().map(|&id| bytes[id as usize]).sum();
            assert_eq!(sum as usize, text.len(), "{text:?} as {ids:?}");
        }
    }

    const MIXED: [&str; 4] =
        ["plain words", "héllo wörld, naïve café", "日本語のテキスト and 🦀 crabs", " two  spaces\n"];

    #[test]
    fn byte_tokens_stand_for_one_byte_and_the_separator_for_none() {
        assert_token_bytes_cover(&Tokenizer::Byte, &MIXED);
        assert_eq!(Tokenizer::Byte.token_bytes()[BYTE_EOT as usize], 0);
    }

    #[test]
    fn byte_level_bpe_tokens_stand_for_their_bytes() {
        let texts: Vec<String> = (0..200).map(|i| format!("Ünïcode {i}: café, 日本語, the fox.")).collect();
        let t = Tokenizer::train_bpe(texts.iter(), 400).unwrap();
        assert_token_bytes_cover(&t, &MIXED);
        assert_token_bytes_cover(&t, &[texts[7].as_str()]);
        let eot = t.eot().unwrap();
        assert_eq!(t.token_bytes()[eot as usize], 0);
        // Merged tokens are longer than one byte, multi-byte characters count every byte.
        let ids = t.encode("café").unwrap();
        assert!(ids.len() < 5, "{ids:?}");
    }

    /// A SentencePiece-style BPE (Metaspace `▁`, byte fallback for characters not in the
    /// vocabulary), written as a tokenizer.json.
    #[test]
    fn sentencepiece_tokens_stand_for_their_bytes() {
        let mut vocab = serde_json::Map::new();
        for (i, t) in ["<unk>", "<s>", "</s>"].iter().enumerate() {
            vocab.insert(t.to_string(), i.into());
        }
        for b in 0..256 {
            vocab.insert(format!("<0x{b:02X}>"), (3 + b).into());
        }
        for (i, t) in ["\u{2581}", "a", "b", "\u{2581}a", "é", "ab"].iter().enumerate() {
            vocab.insert(t.to_string(), (259 + i).into());
        }
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": 2, "content": "</s>", "single_word": false, "lstrip": false,
                              "rstrip": false, "normalized": false, "special": true}],
            "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
            "pre_tokenizer": null, "post_processor": null,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]},
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>",
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": true, "byte_fallback": true, "vocab": vocab,
                      "merges": ["\u{2581} a", "a b"]}
        });
        let dir = std::env::temp_dir().join(format!("archlab-sp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        std::fs::write(&path, json.to_string()).unwrap();
        let t = Tokenizer::from_file(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // "日" is not in the vocabulary: three byte tokens.
        let ids = t.encode("a ab é 日").unwrap();
        assert!(ids.iter().filter(|&&id| (3..259).contains(&id)).count() == 3, "{ids:?}");
        assert_token_bytes_cover(&t, &["a ab é 日", "ab ab"]);
        assert_eq!(t.token_bytes()[2], 0, "</s> stands for no text");
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
