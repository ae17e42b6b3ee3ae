//! One module per command, or per small family of commands.

pub(super) mod backup;
pub(super) mod browse;
pub(super) mod config;
pub(super) mod daemon;
pub(super) mod export;
pub(super) mod forget;
pub(super) mod generate;
pub(super) mod init;
pub(super) mod key;
pub(super) mod notify;
pub(super) mod prune;
pub(super) mod repair;
pub(super) mod restore;
pub(super) mod serve;
pub(super) mod snapshot;
pub(super) mod status;
pub(super) mod sync;
pub(super) mod unlock;
pub(super) mod verify;
pub(super) mod wal;
