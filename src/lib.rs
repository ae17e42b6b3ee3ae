//! cairn: a content-addressed, deduplicating, encrypted backup store for small self-hosted
//! applications (a SQLite or PostgreSQL database, logs, config).
//!
//! Data flows one way: source -> [`chunker`] -> hash ([`crypto::Keys::chunk_id`]) -> [`blob`]
//! (zstd) -> [`crypto`] (seal) -> [`pack`] -> [`index`] -> [`manifest`] (the snapshot, the commit
//! point). Restore, export and verify read the same path backwards. Every on-disk byte is
//! specified in `format-spec/`.

pub mod cli;
pub mod error;
pub mod format;
pub mod fuzzing;
pub mod id;
pub mod lifecycle;
pub mod ops;
pub mod remote;
pub mod repo;
pub mod source;
pub mod store;
pub mod util;

pub use error::{Error, Result};
