//! cairn: a content-addressed, deduplicating, encrypted backup store for small self-hosted
//! applications (a SQLite or PostgreSQL database, logs, config).
//!
//! Data flows one way: source -> [`chunker`] -> hash ([`crypto::Keys::chunk_id`]) -> [`blob`]
//! (zstd) -> [`crypto`] (seal) -> [`pack`] -> [`index`] -> [`manifest`] (the snapshot, the commit
//! point). Restore, export and verify read the same path backwards. Every on-disk byte is
//! specified in `format-spec/`.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod cli;
pub mod error;
pub mod format;
pub mod fuzzing;
pub mod id;
pub mod lifecycle;
pub mod ops;
pub mod repo;
pub mod source;
pub mod span;
pub mod store;
pub mod util;

pub use error::{Error, Result};
