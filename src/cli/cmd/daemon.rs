//! `daemon`: the schedule in the foreground, stopped by SIGTERM or SIGINT.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;

use crate::cli::cmd::backup::{open_or_create, print_report};
use crate::cli::{Ctx, Finish};

/// Set by the signal handler; the daemon loop checks it at least every second.
static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

pub(in crate::cli) fn run(ctx: &Ctx) -> Result<Finish> {
    let cfg = ctx.require_config()?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
    }
    let mut repo = open_or_create(ctx, cfg)?;
    let remotes = ctx.remotes()?;
    if !ctx.quiet() {
        println!("cairn daemon: {} types, repository {}", cfg.types.len(), repo.store().root().display());
    }
    let opts = crate::lifecycle::runner::RunOptions {
        retry_base: crate::cli::cmd::backup::retry_base(),
        ..Default::default()
    };
    let clock = crate::lifecycle::clock::SystemClock;
    crate::lifecycle::daemon::run(&mut repo, cfg, &remotes, &opts, &clock, &TERM, &mut |report| {
        print_report(ctx, report)
    })?;
    if !ctx.quiet() {
        println!("cairn daemon: stopping");
    }
    Ok(Finish::Ok)
}
