//! `daemon`: the schedule in the foreground, stopped by SIGTERM or SIGINT.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;

use crate::cli::cmd::backup::{config_or_record, open_or_record, print_report, Lines};
use crate::cli::{Ctx, Finish};
use crate::lifecycle::clock::Clock as _;

/// Set by the signal handler; the daemon loop checks it at least every second.
static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

pub(in crate::cli) fn run(ctx: &Ctx) -> Result<Finish> {
    let clock = crate::lifecycle::clock::SystemClock;
    let cfg = config_or_record(ctx, &clock)?;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
    }
    let state = crate::lifecycle::outside::state_for(cfg);
    let mut repo = open_or_record(ctx, cfg, state.as_ref(), &[], &clock)?;
    let remotes = ctx.remotes()?;
    if !ctx.quiet() {
        println!("cairn daemon: {} types, repository {}", cfg.types.len(), repo.store().root().display());
    }
    let opts = crate::lifecycle::runner::RunOptions {
        retry_base: crate::cli::cmd::backup::retry_base(),
        ..Default::default()
    };
    crate::lifecycle::daemon::run(&mut repo, cfg, &remotes, &opts, &clock, &TERM, &mut Lines(ctx), &mut |report| {
        if let Some(s) = &state {
            if let Err(e) = crate::lifecycle::outside::note_round(s, &report.ran, clock.now()) {
                tracing::warn!("state kept outside the repository: {e}");
            }
        }
        print_report(ctx, report)
    })?;
    if !ctx.quiet() {
        println!("cairn daemon: stopping");
    }
    Ok(Finish::Ok)
}
