//! The `archlab` binary: flags (`cli`) → one function per command (`commands`) → the library.

mod cli;
mod commands;

use clap::Parser;

fn main() {
    // Past a file-size limit (`ulimit -f`, a quota) a write would kill the process with SIGXFSZ,
    // mid-file and without a word; ignored, the write fails with EFBIG, and archlab names the
    // file, removes its temporary and says how to fix it, as on a full disk.
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to "ignore" installs no handler code.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
    let cli = cli::Cli::parse();
    #[cfg(feature = "cube-kernels")]
    archlab::device::enable_kernel_cache();
    if let Err(e) = commands::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
