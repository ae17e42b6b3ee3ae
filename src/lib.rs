//! cairn is a content-addressed, deduplicating, encrypted backup store for small self-hosted
//! applications (a SQLite or PostgreSQL database, logs, config): this library, and a thin binary
//! that calls [`run`]. Every on-disk byte is specified in `format-spec/`; its codecs are the
//! public [`format`](mod@format) module.
//!
//! The code is cut into layers, one folder each, and a folder uses only those below it:
//! `cli -> lifecycle -> ops -> {source, repo} -> store -> format -> id/error` (`repo` and `source`
//! do not use each other; `tests/integration/layers.rs` enforces it). `cli` parses and renders,
//! `lifecycle` runs backups over time ([`Config`], [`run_backups`]), `ops` holds one operation
//! each ([`snapshot()`], [`restore()`], [`verify()`], [`prune()`]), `repo` is an open [`Repo`],
//! `store` the [`Store`] seam. Outside code reaches them through the `pub use` list below.
//!
//! Backing up, a [`Source`] yields files or a stream; the [`chunker`](format::chunker) cuts it,
//! each chunk is named by keyed BLAKE3 ([`Keys::chunk_id`](format::crypto::Keys::chunk_id)) and
//! skipped if the index [`Cache`] knows it; a new chunk is compressed ([`blob`](format::blob)),
//! sealed ([`crypto`](format::crypto)) and packed ([`pack`](format::pack)), the pack published
//! through the [`Store`] and listed in an [`index`](format::index) file; the snapshot
//! ([`manifest`](format::manifest)) is written last, as the commit point. Restore, export and
//! verify walk back: snapshot, tree stream, chunk ids, index cache, [`Store::get_range`], open the
//! seal, decompress, re-hash against the id.

// Public as a whole: the on-disk types (other programs and the golden vectors read these
// bytes), the ids and the error type, and the fuzz target bodies.
pub mod error;
pub mod format;
pub mod fuzzing;
pub mod id;

// Reached from outside only through the `pub use` list below.
pub(crate) mod cli;
pub(crate) mod lifecycle;
pub(crate) mod ops;
pub(crate) mod repo;
pub(crate) mod source;
pub(crate) mod span;
pub(crate) mod store;
pub(crate) mod util;

pub use error::{Error, Result};

// cli: the binary's whole body; returns the process exit code.
pub use cli::main as run;

// lifecycle: configuration, schedules, the backup runner, run history, status, time.
pub use lifecycle::clock::{Clock, ManualClock, SystemClock};
pub use lifecycle::config::Config;
pub use lifecycle::history::History;
pub use lifecycle::runner::{next_round, run_backups, DaemonTiming, RunOptions};
pub use lifecycle::schedule::{due, Due, Schedule};
pub use lifecycle::status::{render as render_status, status, write_metrics, Status};

// ops: one operation each, options in, report out.
pub use ops::export::export;
pub use ops::prune::{forget, prune, PruneOptions, PruneReport};
pub use ops::restore::{restore, RestoreOptions, RestoreReport};
pub use ops::retention::{apply as apply_retention, Decision, Retention};
pub use ops::snapshot::{snapshot, SnapshotOptions, SnapshotOutcome};
pub use ops::snapshot_set::SnapshotSet;
pub use ops::verify::{verify, VerifyOptions, VerifyReport};

// repo and source: an open repository, its index cache and pack files; what a snapshot reads.
pub use repo::cache::{read_index_file, Cache, Location};
pub use repo::pack::{read_trailer, PackWriter};
pub use repo::{init, read_config, unlock, InitOptions, PasswordFn, Repo};
pub use source::pgconn::PgConn;
pub use source::walk::Source;
pub use span::Span;

// store: the storage seam.
pub use store::{FileKind, Handle, LocalStore, Store, StoreExt};
