//! Real text and a real tokenizer from ../shared/data (skipped, saying so, when absent).

use crate::common::*;
use archlab::config::RunConfig;
use archlab::data::prepare::ensure_prepared;
use archlab::data::tokenizer::Tokenizer;

#[test]
fn gpt_neox_tokenizer_loads_and_round_trips() {
    let Some(path) = shared_data("tokenizers/gpt-neox-20b.tokenizer.json") else { return };
    let tok = Tokenizer::from_file(&path).unwrap();
    // GPT-NeoX-20B: 50,254 BPE entries + added tokens ≈ 50,277 (mamba pads the embedding to 50,280).
    assert!((50_250..=50_300).contains(&tok.vocab_size()), "vocab {}", tok.vocab_size());
    let text = "Once upon a time, in a harbour far away, Mara found a silver key.";
    let ids = tok.encode(text).unwrap();
    assert!(ids.len() < 25, "{} tokens", ids.len());
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert_eq!(tok.eot(), Some(0), "<|endoftext|> is id 0 in GPT-NeoX");
}

#[test]
fn pg19_books_prepare_with_the_neox_tokenizer() {
    let (Some(books), Some(tok)) =
        (shared_data("pg19-sample"), shared_data("tokenizers/gpt-neox-20b.tokenizer.json"))
    else {
        return;
    };
    // Two small books, copied so the test does not tokenize all 6.9 MB.
    let dir = temp_dir("pg19");
    let corpus = dir.join("books");
    std::fs::create_dir_all(&corpus).unwrap();
    for id in ["43692", "40744"] {
        std::fs::copy(books.join(format!("{id}.txt")), corpus.join(format!("{id}.txt"))).unwrap();
    }
    let mut cfg = RunConfig::resolve("tiny", None, &[]).unwrap();
    cfg.data.source = corpus.display().to_string();
    cfg.data.tokenizer = tok.display().to_string();
    cfg.data.cache_dir = dir.join("cache").display().to_string();
    let data = ensure_prepared(&cfg.data).unwrap();
    assert_eq!(data.meta.documents, 2);
    assert!(data.meta.val_tokens > 0 && data.meta.train_tokens > 10 * data.meta.val_tokens);
    assert_eq!(data.train.header().token_bytes, 2, "50k vocab fits u16");
    // English prose under the NeoX BPE: about 4 bytes per token.
    let bpt = data.train.bytes_per_token();
    assert!((3.0..5.5).contains(&bpt), "{bpt} bytes/token");
    // A second call finds the cache.
    let again = ensure_prepared(&cfg.data).unwrap();
    assert_eq!(again.dir, data.dir);
}
