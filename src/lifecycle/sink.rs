//! Results as each part of a backup round finishes. A round runs several types and then syncs
//! each remote; a log (or a person watching) should see a type's line when that type ends, not
//! after the slowest type and every upload, so a round that hangs shows how far it got.

use crate::lifecycle::runner::{SyncOutcome, TypeResult};

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
