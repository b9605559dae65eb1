use clap::Parser;

fn main() {
    let cli = archlab::cli::Cli::parse();
    #[cfg(feature = "cube-kernels")]
    archlab::device::enable_kernel_cache();
    if let Err(e) = archlab::commands::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
