//! The `cairn` binary: parse, set up logging, run, map the outcome to an exit code
//! (0 ok, 1 error, 2 usage, 3 verify found damage, 4 wrong password).

use clap::Parser;

fn main() {
    // Die quietly on a closed pipe (`cairn snapshots --json | head -1`) like other Unix tools,
    // instead of panicking in println!.
    // SAFETY: restoring the default disposition of a signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = cairn::cli::args::Cli::parse();
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let code = match cairn::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            cairn::cli::exit_code(&e)
        }
    };
    std::process::exit(code);
}
