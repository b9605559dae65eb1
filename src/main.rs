use clap::Parser;

fn main() {
    let cli = archlab::cli::Cli::parse();
    if let Err(e) = archlab::commands::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
