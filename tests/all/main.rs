//! archlab's integration tests, one module per subject, in one test binary: each binary links
//! burn and its backends once, which costs more than compiling the tests themselves. `gemm.rs`
//! stays a binary of its own because it switches the process-wide matmul strategy.
//!
//! `cargo test` runs them all; `cargo test --test all ssm::` runs one module.

#[path = "../common/mod.rs"]
mod common;

mod bench;
mod cli;
mod compare;
mod cuda;
mod end_to_end;
mod gradients;
mod hf_parity;
mod hybrid;
mod kernels;
mod model;
mod old_files;
mod moe;
mod precision;
mod real_data;
mod ssm;
mod tasks;
mod training;
