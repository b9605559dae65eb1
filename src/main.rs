//! The `archlab` binary: flags (`cli`) → one function per command (`commands`) → the library.

mod cli;
mod commands;

use clap::Parser;

/// Linux's default stack for a process's main thread (`ulimit -s`).
const MAIN_STACK_BYTES: usize = 8 << 20;

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
    // The command runs on a thread of rayon's pool, the pool the CPU backend's operations split
    // their work over: an operation started there runs its pieces on the calling thread and the
    // other workers, where one started from outside the pool hands every piece over and sleeps
    // until the workers finish and wake it (two thread switches per operation, hundreds per
    // training step). The pool's threads get the main thread's usual stack.
    let pool = rayon::ThreadPoolBuilder::new().stack_size(MAIN_STACK_BYTES).build_global();
    let result = match pool {
        Ok(()) => rayon::scope(|_| commands::run(cli)),
        Err(_) => commands::run(cli),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
