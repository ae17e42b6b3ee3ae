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
        match run_backups_to(repo, cfg, opts, &mut set, clock, sink) {
            Ok(mut report) => {
                let now = clock.now().fixed_offset();
                let po = PendingOptions { upload: true, retry_base: opts.retry_base };
                let may_try = |r: &str| backoff.may_try(r, now);
                let owed = sync_owed(cfg, repo, remotes, &mut set, clock, &po, &may_try, sink);
                backoff.record(&owed.sync, clock.now().fixed_offset());
                report.sync = owed.sync;
                report.notify_errors.extend(owed.notify_errors);
                report.verify = crate::lifecycle::verify_runs::run_if_due(repo, cfg, clock);
                crate::lifecycle::capacity::note(&mut report, cfg, repo, set.all(), &clock.now());
                if !report.ran.is_empty() || !report.sync.is_empty() || report.verify.is_some() {
                    on_round(&report);
                }
            }
            Err(e) => tracing::error!("backup round failed: {e}"),
        }
        // Sleep until the next due time, in short steps: wall-clock jumps and suspend are noticed
        // within a minute, and a signal within a second.
        let history = History::open(repo.store().root())?;
        set.refresh(repo)?;
        let mut next = next_round(cfg, &history, set.all(), &clock.now(), DaemonTiming::default())?;
        next = backoff.next_attempt().map_or(next, |b| b.min(next));
        if let Some(v) = crate::lifecycle::verify_runs::due(cfg, &history, &clock.now())? {
            next = next.min(v.next);
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
