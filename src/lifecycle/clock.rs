//! Where the lifecycle reads the time. The runner, the daemon, status and retention take a
//! [`Clock`] instead of calling `Local::now()`, so schedule, catch-up and dead-man behaviour can
//! be checked at fixed instants without waiting for the wall clock.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Local};

/// A source of "now", in the local time zone (schedules are local wall-clock times).
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Local>;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Local> {
        Local::now()
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Local>>);

impl ManualClock {
    /// Stopped at `t`.
    pub fn at(t: DateTime<Local>) -> ManualClock {
        ManualClock(Mutex::new(t))
    }

    /// Moves to `t`.
    pub fn set(&self, t: DateTime<Local>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// Moves forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Local> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
