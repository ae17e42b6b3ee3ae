//! `completions SHELL` and `man`: generated from the argument definitions, so they never drift.

use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::args::Cli;
use crate::cli::Finish;

pub(in crate::cli) fn completions(shell: clap_complete::Shell) -> Result<Finish> {
    clap_complete::generate(shell, &mut Cli::command(), "cairn", &mut std::io::stdout());
    Ok(Finish::Ok)
}

/// The top page on stdout; with `dir`, the top page and one per command, written there.
pub(in crate::cli) fn man(dir: Option<&Path>) -> Result<Finish> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            clap_mangen::generate_to(Cli::command(), d)
                .with_context(|| format!("writing man pages to {}", d.display()))?
        }
        None => clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?,
    }
    Ok(Finish::Ok)
}
