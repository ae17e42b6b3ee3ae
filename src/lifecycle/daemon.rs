//! `daemon`: run the schedule in the foreground until asked to stop.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Result;
use crate::lifecycle::config::Config;
use crate::lifecycle::history::{History, Outcome};
use crate::lifecycle::remotes::sync_all;
use crate::lifecycle::runner::{due_now, last_success, run_backups, BackupReport, RunOptions};
use crate::store::rclone::RcloneStore as Rclone;
use crate::repo::Repo;

/// Runs backup rounds until `stop` is set: each round runs what is due, syncs `remotes` after a
/// success and hands every round that ran something to `on_round`; a failed round is logged and
/// the loop goes on.
pub fn run(
    repo: &mut Repo,
    cfg: &Config,
    remotes: &[Rclone],
    stop: &AtomicBool,
    on_round: &mut dyn FnMut(&BackupReport),
) -> Result<()> {
    tracing::info!("daemon started for {} types", cfg.types.len());
    while !stop.load(Ordering::SeqCst) {
        match run_backups(repo, cfg, &RunOptions::default()) {
            Ok(mut report) => {
                if report.ran.iter().any(|r| r.result == Outcome::Success) {
                    report.sync = sync_all(Some(cfg), repo, remotes, false);
                }
                if !report.ran.is_empty() {
                    on_round(&report);
                }
            }
            Err(e) => tracing::error!("backup round failed: {e}"),
        }
        // Sleep until the next due time, in short steps: wall-clock jumps and suspend are noticed
        // within a minute, and a signal within a second.
        let history = History::open(repo.store.root())?;
        let (snaps, _) = repo.snapshots()?;
        let mut next = chrono::Local::now().fixed_offset() + chrono::Duration::minutes(60);
        for (name, t) in &cfg.types {
            if t.schedule.as_deref() == Some("on-change") {
                next = next.min(chrono::Local::now().fixed_offset() + chrono::Duration::minutes(5));
                continue;
            }
            let d = due_now(t, last_success(&history, &snaps, name)?);
            // A type still due after this round failed: try again in five minutes, not at once.
            next = next.min(if d.due {
                chrono::Local::now().fixed_offset() + chrono::Duration::minutes(5)
            } else {
                d.next
            });
        }
        tracing::info!("next run due at {next}");
        let started = std::time::Instant::now();
        let wall_start = chrono::Local::now().fixed_offset();
        while !stop.load(Ordering::SeqCst) {
            let now = chrono::Local::now().fixed_offset();
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
