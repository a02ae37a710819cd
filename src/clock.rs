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

/// A clock that only moves when told to, or when something sleeps on it: lets tests of waits
/// and grace periods run instantly and deterministically.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: std::sync::atomic::AtomicU64,
    slept: std::sync::Mutex<Vec<Duration>>,
}

impl ManualClock {
    pub fn at(epoch: u64) -> Self {
        ManualClock {
            now: epoch.into(),
            slept: Default::default(),
        }
    }

    pub fn advance(&self, d: Duration) {
        self.now
            .fetch_add(d.as_secs(), std::sync::atomic::Ordering::SeqCst);
    }

    /// Every sleep requested so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.slept.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Clock for ManualClock {
    fn now_epoch(&self) -> u64 {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Returns at once, moving the clock forward by `d`.
    fn sleep(&self, d: Duration) {
        if let Ok(mut slept) = self.slept.lock() {
            slept.push(d);
        }
        self.advance(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_or_slept_on() {
        let clock = ManualClock::at(100);
        assert_eq!(clock.now_epoch(), 100);
        clock.sleep(Duration::from_secs(30));
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.now_epoch(), 135);
        assert_eq!(clock.sleeps(), vec![Duration::from_secs(30)]);
    }
}
