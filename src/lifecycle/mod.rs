//! Running backups over time: the configuration, schedules, the run history, notifications,
//! status and the runner that ties them together.

pub mod clock;
pub mod config;
pub mod daemon;
pub mod export;
pub mod first_use;
pub mod history;
pub mod job;
pub mod notify;
pub mod password;
pub mod remotes;
pub mod runner;
pub mod schedule;
pub mod status;
