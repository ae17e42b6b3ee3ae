//! What a snapshot reads: the file-tree walk, and sources that need more than reading files (a
//! consistent SQLite copy, a `pg_dump` stream, a command's output), each yielding something the
//! walk can read, plus facts to record.

pub mod pg_base;
pub mod pg_snapshot;
pub mod pgconn;
pub mod pgdump;
pub mod postgres;
pub mod process;
pub mod sqlite;
pub mod walk;

pub use process::ChildReader;
