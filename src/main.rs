//! The `archlab` binary: flags (`cli`) → one function per command (`commands`) → the library.

mod cli;
mod commands;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    #[cfg(feature = "cube-kernels")]
    archlab::device::enable_kernel_cache();
    if let Err(e) = commands::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
