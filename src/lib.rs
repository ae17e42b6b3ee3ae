//! cairn: a content-addressed, deduplicating, encrypted backup store for small self-hosted
//! applications (a SQLite or PostgreSQL database, logs, config).
//!
//! Data flows one way: source -> [`chunker`] -> hash ([`crypto::Keys::chunk_id`]) -> [`blob`]
//! (zstd) -> [`crypto`] (seal) -> [`pack`] -> [`index`] -> [`manifest`] (the snapshot, the commit
//! point). Restore, export and verify read the same path backwards. Every on-disk byte is
//! specified in `format-spec/`.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod backup;
pub mod blob;
pub mod cache;
pub mod chunker;
pub mod crypto;
pub mod error;
pub mod id;
pub mod index;
pub mod keyfile;
pub mod lock;
pub mod manifest;
pub mod pack;
pub mod repo;
pub mod repo_config;
pub mod store;
pub mod util;

pub use error::{Error, Result};
pub mod cli;
pub mod config;
pub mod export;
pub mod fuzzing;
pub mod history;
pub mod job;
pub mod keys;
pub mod notify;
pub mod prune;
pub mod remote;
pub mod restore;
pub mod retention;
pub mod runner;
pub mod schedule;
pub mod source;
pub mod status;
pub mod verify;
