//! Time as a trait, so decisions about grace periods and waits are testable without sleeping.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync {
    /// Seconds since the epoch.
    fn now_epoch(&self) -> u64;
    fn sleep(&self, d: Duration);
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_epoch(&self) -> u64 {
        // A clock before 1970 is not a state this charm can act on; 0 keeps arithmetic sane.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}
