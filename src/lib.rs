//! archlab: train, evaluate and compare small language-model architectures side by side.
//!
//! Modules in data-flow order: `config` → `data` (text → tokens → batches) → `model`
//! (tokens → logits) → `train` (loss → gradients → optimizer step → checkpoints, metrics) →
//! `eval` (validation metrics, generation). `device` picks the backend. The binary's surface
//! (`src/main.rs` with `cli.rs` and `commands.rs`) parses flags into the request types of
//! `compare` and `bench` and calls the library; the library knows nothing of clap.

pub mod bench;
pub mod compare;
pub mod config;
pub mod data;
pub mod device;
pub mod eval;
pub mod hf;
pub mod kernels;
pub mod model;
mod registry;
pub mod report;
pub mod rng;
pub mod serve;
pub mod train;
pub mod util;
