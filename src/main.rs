//! The `trawl` binary: parse the command line, set up logging, dispatch, map errors to exit
//! codes (0 ok, 1 failure, 2 usage error).

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() {
    // Output piped into `head` that closes early ends the process quietly, as it does
    // `cat`, instead of a panic on the next write ("Broken pipe").
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = trawl::cli::Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(cli.default_log_filter()));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, never in a log file or a pipe.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    trawl::install_tls_provider();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match runtime.block_on(trawl::cli::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("trawl: error: {}", trawl::redact::text(&format!("{err:#}")));
            if err.downcast_ref::<trawl::cli::Usage>().is_some() {
                2
            } else {
                1
            }
        }
    };
    std::process::exit(code);
}
