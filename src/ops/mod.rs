//! Operations on an open repository: snapshot, restore, export, verify, repair, forget and
//! prune, keys. No clap, no printing: each takes options and returns a report.

pub mod clone;
pub mod export;
pub mod keys;
pub mod kinds;
pub mod pages;
pub mod pgrestore;
pub mod prune;
pub mod repair;
pub mod repair_snapshots;
pub mod restore;
pub mod restore_test;
pub mod retention;
pub mod snapshot;
pub mod snapshot_set;
pub mod sync;
pub mod verify;
pub mod wal;
