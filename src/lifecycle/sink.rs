//! Results as each part of a backup round finishes. A round runs several types and then syncs
//! each remote; a log (or a person watching) should see a type's line when that type ends, not
//! after the slowest type and every upload, so a round that hangs shows how far it got.

use crate::lifecycle::clock::Clock;
use crate::lifecycle::config::Config;
use crate::lifecycle::remotes::sync_all;
use crate::lifecycle::runner::{SyncOutcome, TypeResult};
use crate::ops::snapshot_set::SnapshotSet;
use crate::repo::Repo;
use crate::store::rclone::RcloneStore as Rclone;

/// Told of each type and each remote the moment it is done (the round's report still holds
/// them all at the end).
pub trait RunSink {
    /// One type ran (or failed after its retries).
    fn type_done(&mut self, _result: &TypeResult) {}
    /// One remote's sync ended.
    fn sync_done(&mut self, _outcome: &SyncOutcome) {}
}

/// Tells nothing (the library's callers that only want the report).
impl RunSink for () {}

/// [`sync_all`], one remote at a time, telling `sink` as each one ends.
pub fn sync_each(
    cfg: Option<&Config>,
    repo: &Repo,
    remotes: &[Rclone],
    set: &mut SnapshotSet,
    clock: &dyn Clock,
    sink: &mut dyn RunSink,
) -> Vec<SyncOutcome> {
    let mut out = Vec::new();
    for remote in remotes {
        for o in sync_all(cfg, repo, std::slice::from_ref(remote), false, set, clock) {
            sink.sync_done(&o);
            out.push(o);
        }
    }
    out
}
