//! `daemon`: run the schedule in the foreground until asked to stop.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Result;
use crate::lifecycle::clock::Clock;
use crate::lifecycle::config::Config;
use crate::lifecycle::history::{History, Outcome};
use crate::lifecycle::runner::{next_round, run_backups_to, BackupReport, DaemonTiming, RunOptions};
use crate::lifecycle::sink::{sync_each, RunSink};
use crate::ops::snapshot_set::SnapshotSet;
use crate::repo::Repo;
use crate::store::rclone::RcloneStore as Rclone;

/// Runs backup rounds until `stop` is set: each round runs what is due, syncs `remotes` after a
/// success and hands every round that ran something to `on_round`; a failed round is logged and
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
    while !stop.load(Ordering::SeqCst) {
        match run_backups_to(repo, cfg, opts, &mut set, clock, sink) {
            Ok(mut report) => {
                if report.ran.iter().any(|r| r.result == Outcome::Success) {
                    report.sync = sync_each(Some(cfg), repo, remotes, &mut set, clock, sink);
                }
                if !report.ran.is_empty() {
                    on_round(&report);
                }
            }
            Err(e) => tracing::error!("backup round failed: {e}"),
        }
        // Sleep until the next due time, in short steps: wall-clock jumps and suspend are noticed
        // within a minute, and a signal within a second.
        let history = History::open(repo.store().root())?;
        set.refresh(repo)?;
        let next = next_round(cfg, &history, set.all(), &clock.now(), DaemonTiming::default())?;
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
