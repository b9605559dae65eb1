//! text → tokens → shards: turns a corpus source into a prepared dataset folder
//!
//! ```text
//! <dir>/meta.json        what was prepared from what (source, tokenizer, counts)
//! <dir>/tokenizer.json   the tokenizer (or "byte")
//! <dir>/train.bin        token shards (see `shards`)
//! <dir>/val.bin
//! ```
//!
//! Validation documents are chosen by a hash of the document index (so the split does not
//! depend on the order in which a corpus grows); a corpus of fewer than 20 documents (say a
//! handful of books) is instead split by holding out the last `val_fraction` of its tokens.
//! Prepared folders are cached by a key of everything that determines their content, and are
//! built in a temporary folder that is renamed into place, so an interrupted prepare never
//! leaves a half-written dataset behind.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::shards::{TokenShard, write_shard};
use super::sources::Source;
use super::tokenizer::{Tokenizer, TokenizerSpec};
use crate::config::DataConfig;
use crate::util::{atomic, hash::Fnv64};

/// Bump when the prepared layout or splitting rule changes, so old caches are not reused.
const PREPARE_VERSION: u32 = 1;
/// Below this many documents the split is by token position instead of by document.
const MIN_DOCS_FOR_DOC_SPLIT: usize = 20;
/// Text used to train a BPE is capped, to bound memory and time on large corpora.
const BPE_TRAIN_BYTES: usize = 200_000_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatasetMeta {
    pub source: String,
    pub tokenizer: String,
    pub vocab_size: usize,
    pub documents: usize,
    pub train_tokens: usize,
    pub val_tokens: usize,
    pub train_text_bytes: u64,
    pub val_text_bytes: u64,
}

/// A prepared dataset, opened.
pub struct Dataset {
    pub dir: PathBuf,
    pub meta: DatasetMeta,
    pub tokenizer: Tokenizer,
    pub train: TokenShard,
    pub val: TokenShard,
}

impl Dataset {
    /// Opens a prepared folder and checks that its shards belong to its tokenizer.
    pub fn open(dir: &Path) -> Result<Self> {
        let meta_path = dir.join("meta.json");
        let meta: DatasetMeta = serde_json::from_str(
            &std::fs::read_to_string(&meta_path)
                .with_context(|| format!("cannot read {}", meta_path.display()))?,
        )
        .with_context(|| format!("malformed {}", meta_path.display()))?;
        let tokenizer = Tokenizer::from_json_file(&dir.join("tokenizer.json"))?;
        let train = TokenShard::open(&dir.join("train.bin"))?;
        let val = TokenShard::open(&dir.join("val.bin"))?;
        let fingerprint = tokenizer.fingerprint()?;
        for shard in [&train, &val] {
            check_shard_matches(shard, &tokenizer, fingerprint)?;
        }
        Ok(Self { dir: dir.to_path_buf(), meta, tokenizer, train, val })
    }
}

fn check_shard_matches(shard: &TokenShard, tokenizer: &Tokenizer, fingerprint: u64) -> Result<()> {
    let h = shard.header();
    if h.vocab_size as usize != tokenizer.vocab_size() || h.tokenizer_fingerprint != fingerprint {
        bail!(
            "vocabulary mismatch: {} was written by a tokenizer with {} entries (fingerprint {:016x}) \
             but the tokenizer here has {} entries (fingerprint {fingerprint:016x}); prepare the \
             data again with this tokenizer (`archlab data prepare`)",
            shard.path().display(),
            h.vocab_size,
            h.tokenizer_fingerprint,
            tokenizer.vocab_size()
        );
    }
    Ok(())
}

/// Returns the prepared dataset for `cfg`, preparing (and caching) it if needed.
pub fn ensure_prepared(cfg: &DataConfig) -> Result<Dataset> {
    let spec = TokenizerSpec::parse(&cfg.tokenizer)?;
    let as_path = Path::new(&cfg.source);
    if as_path.join("meta.json").exists() {
        // An already prepared folder: its own tokenizer must be the one asked for.
        let data = Dataset::open(as_path)?;
        check_requested_tokenizer(&spec, &data)?;
        return Ok(data);
    }
    let source = Source::resolve(&cfg.source, cfg.builtin_bytes, cfg.corpus_seed)?;
    let key = cache_key(cfg, &source, &spec)?;
    let dir = Path::new(&cfg.cache_dir).join(format!("{}-{key:016x}", slug(&cfg.source)));
    if dir.join("meta.json").exists() {
        return Dataset::open(&dir);
    }
    prepare(cfg, &source, &spec, &dir, false)?;
    Dataset::open(&dir)
}

fn check_requested_tokenizer(spec: &TokenizerSpec, data: &Dataset) -> Result<()> {
    let mismatch = match spec {
        TokenizerSpec::Byte => !matches!(data.tokenizer, Tokenizer::Byte),
        TokenizerSpec::TrainBpe(v) => data.tokenizer.vocab_size() != *v,
        TokenizerSpec::File(path) => {
            let wanted = Tokenizer::from_file(path)?;
            wanted.fingerprint()? != data.tokenizer.fingerprint()?
        }
    };
    if mismatch {
        bail!(
            "vocabulary mismatch: the prepared data in {} was tokenized with `{}` ({} entries), \
             not with data.tokenizer; set data.tokenizer = \"{}\" or prepare the data again",
            data.dir.display(),
            data.meta.tokenizer,
            data.meta.vocab_size,
            data.dir.join("tokenizer.json").display()
        );
    }
    Ok(())
}

/// Tokenizes `source` into the folder `out`. An existing `out` is replaced if `replace`, and
/// otherwise kept (a cache entry that appeared meanwhile).
pub fn prepare(
    cfg: &DataConfig,
    source: &Source,
    spec: &TokenizerSpec,
    out: &Path,
    replace: bool,
) -> Result<()> {
    let bar = ProgressBar::new(source.approx_bytes());
    bar.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .expect("static template")
            .progress_chars("=> "),
    );

    // Read the documents once; they are needed twice when a BPE is trained on them.
    bar.set_message("reading");
    let mut docs = Vec::new();
    source.for_each_doc(&cfg.text_field, |d| {
        bar.inc(d.len() as u64);
        docs.push(d);
        Ok(())
    })?;
    if docs.is_empty() {
        bail!("the corpus {} is empty: no documents with text were found", cfg.source);
    }
    let doc_split = docs.len() >= MIN_DOCS_FOR_DOC_SPLIT;
    let is_val = |i: usize| {
        let mut h = Fnv64::default();
        h.update(&(i as u64).to_le_bytes());
        h.update(&cfg.corpus_seed.to_le_bytes());
        (h.finish() % 1_000_000) as f64 / 1e6 < cfg.val_fraction
    };

    let tokenizer = match spec {
        TokenizerSpec::Byte => Tokenizer::Byte,
        TokenizerSpec::File(path) => Tokenizer::from_file(path)?,
        TokenizerSpec::TrainBpe(vocab) => {
            bar.set_message("BPE");
            let mut budget = BPE_TRAIN_BYTES;
            let train_docs = docs
                .iter()
                .enumerate()
                .filter(|(i, _)| !(doc_split && is_val(*i)))
                .map(|(_, d)| d)
                .take_while(|d| {
                    let keep = budget > 0;
                    budget = budget.saturating_sub(d.len());
                    keep
                });
            Tokenizer::train_bpe(train_docs, *vocab)?
        }
    };
    let eot = tokenizer.eot();

    bar.set_message("tokenizing");
    bar.set_position(0);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    let (mut train_bytes, mut val_bytes) = (0u64, 0u64);
    for (i, doc) in docs.iter().enumerate() {
        let ids = tokenizer.encode(doc)?;
        let (tokens, bytes) =
            if doc_split && is_val(i) { (&mut val, &mut val_bytes) } else { (&mut train, &mut train_bytes) };
        tokens.extend_from_slice(&ids);
        tokens.extend(eot);
        *bytes += doc.len() as u64 + u64::from(eot.is_some());
        bar.inc(doc.len() as u64);
    }
    if !doc_split || val.is_empty() {
        // Too few documents to hold whole ones out: hold out the tail of the token stream.
        let cut =
            train.len().saturating_sub(((train.len() as f64 * cfg.val_fraction).ceil() as usize).max(1));
        let ratio = train_bytes as f64 / train.len().max(1) as f64;
        val = train.split_off(cut);
        val_bytes = (val.len() as f64 * ratio).round() as u64;
        train_bytes -= val_bytes.min(train_bytes);
    }
    if train.is_empty() {
        bail!("the corpus {} produced no training tokens", cfg.source);
    }
    bar.finish_and_clear();

    // A unique scratch folder: concurrent prepares of the same cache entry must not collide.
    static SCRATCH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = SCRATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = out.with_extension(format!("partial-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let fingerprint = tokenizer.fingerprint()?;
    let vocab = tokenizer.vocab_size();
    // A failed write (a full disk) leaves no partial folder behind.
    let written = (|| -> Result<()> {
        write_shard(&tmp.join("train.bin"), &train, vocab, fingerprint, train_bytes)?;
        write_shard(&tmp.join("val.bin"), &val, vocab, fingerprint, val_bytes)?;
        atomic::write(&tmp.join("tokenizer.json"), tokenizer.to_json()?.as_bytes())?;
        let meta = DatasetMeta {
            source: cfg.source.clone(),
            tokenizer: cfg.tokenizer.clone(),
            vocab_size: vocab,
            documents: docs.len(),
            train_tokens: train.len(),
            val_tokens: val.len(),
            train_text_bytes: train_bytes,
            val_text_bytes: val_bytes,
        };
        atomic::write_json(&tmp.join("meta.json"), &meta)?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if out.join("meta.json").exists() && !replace {
        // Another process prepared the same cache entry meanwhile; its result is identical.
        std::fs::remove_dir_all(&tmp)?;
        return Ok(());
    }
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::rename(&tmp, out).with_context(|| format!("moving {} into place", out.display()))?;
    Ok(())
}

/// Everything that determines a prepared folder's content.
fn cache_key(cfg: &DataConfig, source: &Source, spec: &TokenizerSpec) -> Result<u64> {
    let mut h = Fnv64::default();
    h.update(&PREPARE_VERSION.to_le_bytes());
    h.update(cfg.source.as_bytes());
    h.update(cfg.text_field.as_bytes());
    h.update(&cfg.val_fraction.to_le_bytes());
    h.update(&cfg.corpus_seed.to_le_bytes());
    match source {
        Source::Stories { bytes, seed } => {
            h.update(&super::stories::GRAMMAR_VERSION.to_le_bytes());
            h.update(&(*bytes as u64).to_le_bytes());
            h.update(&seed.to_le_bytes());
        }
        Source::Files(files) => {
            for f in files {
                let m = f.metadata().with_context(|| format!("reading {}", f.display()))?;
                h.update(f.to_string_lossy().as_bytes());
                h.update(&m.len().to_le_bytes());
                if let Ok(t) = m.modified() {
                    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
                    h.update(&secs.to_le_bytes());
                }
            }
        }
    }
    match spec {
        TokenizerSpec::Byte => h.update(b"byte"),
        TokenizerSpec::TrainBpe(v) => h.update(format!("bpe:{v}").as_bytes()),
        TokenizerSpec::File(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read tokenizer {}", p.display()))?;
            h.update(&bytes);
        }
    }
    Ok(h.finish())
}

/// A readable folder-name prefix for a source.
fn slug(source: &str) -> String {
    let tail = source.trim_end_matches('/').rsplit(['/', ':']).next().unwrap_or("data");
    let s: String =
        tail.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    s.chars().take(40).collect()
}
