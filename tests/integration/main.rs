//! One integration test binary (one link step); each module covers one area.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

mod util;

mod bad_input;
mod batched_reads;
mod capacity;
mod cli;
mod clock;
mod corruption;
mod crash;
mod damage;
mod dated;
mod deltas;
mod encryption;
mod error_causes;
mod export;
mod format_vectors;
mod fuzz_corpus;
mod hung_remote;
mod kinds;
mod layers;
mod lifecycle;
mod live_files;
mod notify;
mod output;
mod outside;
mod pending;
mod pg_restore_one;
mod pg_verify;
mod pitr;
mod remote;
mod restore_fast;
mod restore_safety;
mod robustness;
mod roundtrip;
mod serve;
mod sources;
mod sqlite_stream;
mod status_codes;
mod trouble;
mod verify_runs;
