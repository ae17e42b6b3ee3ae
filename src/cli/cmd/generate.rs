//! `completions SHELL` and `man`: generated from the argument definitions, so they never drift.

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::args::Cli;
use crate::cli::Finish;

pub(in crate::cli) fn completions(shell: clap_complete::Shell) -> Result<Finish> {
    clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut std::io::stdout());
    Ok(Finish::Ok)
}

pub(in crate::cli) fn man() -> Result<Finish> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(Finish::Ok)
}
