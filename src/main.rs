//! The `archlab` binary: flags (`cli`) → one function per command (`commands`) → the library.

mod cli;
mod commands;

use clap::Parser;
use cli::Command;

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
    // A command that computes on its own thread runs on a thread of rayon's pool, the pool the
    // CPU backend's operations split their work over: an operation started there runs its
    // pieces on the calling thread and the other workers, where one started from outside the
    // pool hands every piece over and sleeps until the workers finish and wake it (two thread
    // switches per operation, hundreds per training step). The pool's threads get the main
    // thread's usual stack.
    let in_pool = computes_on_its_own_thread(&cli.command)
        && rayon::ThreadPoolBuilder::new().stack_size(MAIN_STACK_BYTES).build_global().is_ok();
    let result = if in_pool { rayon::scope(|_| commands::run(cli)) } else { commands::run(cli) };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Whether `command` does its computing on the thread that runs it. Those that hand it to
/// threads of their own (`serve`'s model thread, `compare`'s concurrent runs and held-out
/// scoring, data-parallel training's peers) stay off the pool: with one worker
/// (`RAYON_NUM_THREADS=1`, a 1-core machine) their threads would wait on the pool while the
/// command's own thread held its worker, for ever.
fn computes_on_its_own_thread(command: &Command) -> bool {
    match command {
        Command::Train(a) => a.devices <= 1,
        Command::TrainRun(a) => a.devices <= 1,
        Command::Eval(_) | Command::Score(_) | Command::Generate(_) | Command::BenchPoint(_) => true,
        _ => false,
    }
}
