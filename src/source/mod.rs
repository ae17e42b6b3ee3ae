//! Sources that need more than reading files: a consistent SQLite copy, a `pg_dump` stream, a
//! command's output. Each yields something `backup::snapshot` can read, plus facts to record.

pub mod process;
pub mod sqlite;

pub use process::ChildReader;
