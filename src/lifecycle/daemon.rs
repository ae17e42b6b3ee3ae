//! `daemon`: run the schedule in the foreground until asked to stop.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Result;
use crate::lifecycle::clock::Clock;
use crate::lifecycle::config::Config;
use crate::lifecycle::history::History;
use crate::lifecycle::pending::{sync_owed, Backoff, PendingOptions};
use crate::lifecycle::runner::{next_round, run_backups_to, BackupReport, DaemonTiming, RunOptions};
use crate::lifecycle::sink::RunSink;
use crate::ops::snapshot_set::SnapshotSet;
use crate::repo::Repo;
use crate::store::rclone::RcloneStore as Rclone;

/// Runs backup rounds until `stop` is set: each round runs what is due, syncs each of `remotes`
/// with pending files or a failed last sync (a failing one at the pace of its backoff) and hands
/// every round that ran or synced something to `on_round`; a failed round is logged and
/// the loop goes on. Time comes from `clock`; `opts` carries the retry pacing. `sink` hears of
/// each type and remote as it finishes.
#[allow(clippy::too_many_arguments, reason = "the daemon's inputs; each is used once")]
pub fn run(
    repo: &mut Repo,
    cfg: &Config,
    remotes: &[Rclone],
    opts: &RunOptions,
    clock: &dyn Clock,
    stop: &AtomicBool,
    sink: &mut dyn RunSink,
    on_round: &mut dyn FnMut(&BackupReport),
) -> Result<()> {
    tracing::info!("daemon started for {} types", cfg.types.len());
    // Kept across rounds: each round reads only the snapshot files it has not seen.
    let mut set = SnapshotSet::new();
    let mut backoff = Backoff::new(DaemonTiming::default());
    while !stop.load(Ordering::SeqCst) {
        // A round whose backups could not run at all still uploads what is pending, verifies
        // when due and checks the room left: those do not depend on this round's backups.
        let mut report = run_backups_to(repo, cfg, opts, &mut set, clock, sink).unwrap_or_else(|e| {
            tracing::error!("backup round failed: {e}");
            BackupReport::default()
        });
        let now = clock.now().fixed_offset();
        let po = PendingOptions { upload: true, retry_base: opts.retry_base };
        let may_try = |r: &str| backoff.may_try(r, now);
        let owed = sync_owed(cfg, repo, remotes, &mut set, clock, &po, &may_try, sink);
        backoff.record(&owed.sync, clock.now().fixed_offset());
        report.sync = owed.sync;
        report.notify_errors.extend(owed.notify_errors);
        report.verify = crate::lifecycle::verify_runs::run_if_due(repo, cfg, clock);
        crate::lifecycle::capacity::note(&mut report, cfg, repo, set.all(), &clock.now());
        let low = report.capacity.as_ref().is_some_and(|c| c.low);
        if !report.ran.is_empty()
            || !report.sync.is_empty()
            || report.verify.is_some()
            || !report.notify_errors.is_empty()
            || low
        {
            on_round(&report);
        }
        // Sleep until the next due time, in short steps: wall-clock jumps and suspend are noticed
        // within a minute, and a signal within a second.
        let history = History::open(repo.store().root())?;
        set.refresh(repo)?;
        let timing = DaemonTiming::default();
        let now = clock.now().fixed_offset();
        let mut next = next_round(cfg, &history, set.all(), &clock.now(), timing)?;
        // A retry time already past belongs to a remote no longer owed a sync (fixed from
        // outside meanwhile): it must not end every wait at once.
        if let Some(b) = backoff.next_attempt().filter(|b| *b > now) {
            next = next.min(b);
        }
        match crate::lifecycle::verify_runs::due(cfg, &history, &clock.now()) {
            // Still due after this round: it could not finish; tried again after the recheck
            // wait, never at once (a held lock would make the loop spin).
            Ok(Some(v)) if v.due => next = next.min(now + timing.recheck),
            Ok(Some(v)) => next = next.min(v.next),
            Ok(None) => {}
            Err(e) => tracing::warn!("when the next verify is due: {e}"),
        }
        tracing::info!("next run due at {next}");
        let started = std::time::Instant::now();
        let wall_start = clock.now().fixed_offset();
        while !stop.load(Ordering::SeqCst) {
            let now = clock.now().fixed_offset();
            if now >= next {
                break;
            }
            let drift = (now - wall_start).num_seconds() - started.elapsed().as_secs() as i64;
            if drift.abs() > 60 || started.elapsed().as_secs() >= 60 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }
    Ok(())
}
