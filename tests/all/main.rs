//! archlab's integration tests, one module per subject, in one test binary: each binary links
//! burn and its backends once, which costs more than compiling the tests themselves. `gemm.rs`
//! stays a binary of its own because it switches the process-wide matmul strategy.
//!
//! `cargo test` runs them all; `cargo test --test all ssm::` runs one module.

#[path = "../common/mod.rs"]
mod common;

mod bad_inputs;
mod bench;
mod cli;
mod cluster;
mod compare;
mod cuda;
mod data_parallel;
mod end_to_end;
mod gradients;
mod hf_export;
mod hf_parity;
mod hybrid;
mod kernels;
mod model;
mod moe;
mod old_files;
mod precision;
mod real_data;
mod recompute;
mod serve;
mod ssm;
mod tasks;
mod training;

/// Where CUDA is required, the CUDA tests are compiled in: without the feature they would not
/// exist, and so could not fail.
#[test]
fn cuda_tests_exist_where_cuda_is_required() {
    if std::env::var_os("ARCHLAB_REQUIRE_CUDA").is_some() {
        assert!(common::cuda_usable(), "unreachable: cuda_usable fails where CUDA is required");
    }
}
