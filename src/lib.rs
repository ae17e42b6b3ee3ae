//! cairn: a content-addressed, deduplicating, encrypted backup store for small self-hosted
//! applications (a SQLite or PostgreSQL database, logs, config).
//!
//! Data flows one way: source -> [`chunker`](format::chunker) -> hash
//! ([`Keys::chunk_id`](format::crypto::Keys::chunk_id)) -> [`blob`](format::blob) (zstd) ->
//! [`crypto`](format::crypto) (seal) -> [`pack`](format::pack) -> [`index`](format::index) ->
//! [`manifest`](format::manifest) (the snapshot, the commit point). Restore, export and verify read the same path backwards. Every on-disk byte is
//! specified in `format-spec/`.

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
