//! Data: text → tokens → batches.
//!
//! `sources` reads documents (built-in stories, txt, jsonl, parquet, hub), `tokenizer` turns
//! them into ids, `prepare` writes them as memory-mapped `shards` with a train/val split, and
//! `batcher` cuts the shards into deterministic training and validation batches. `tasks`
//! generates synthetic long-range tasks (MQAR, copying, selective copying, passkey) instead.

pub mod batcher;
pub mod mad;
pub mod prepare;
pub mod shards;
pub mod sources;
pub mod state_tracking;
pub mod stories;
pub mod stream;
pub mod tasks;
pub mod tokenizer;
