//! How often a worker waiting for pickup looks its job up: pure, over GitHub's rate-limit
//! budget as its last answer reported it (`x-ratelimit-remaining`, `x-ratelimit-reset`).
//!
//! Every waiting worker of every unit sharing the token spends the same hourly budget (5000
//! for a PAT). A look-up only tells the worker when to ack and whether its runner stays:
//! the job's own start never waits on it. So looks are spaced so that the waiting workers
//! together keep a reserve for the hooks (registrations, reconciles), and none happens while
//! the job cannot have been picked by the fresh runner yet.

use std::time::Duration;

use crate::github::outcomes::RateLimit;

/// Look-ups a waiting worker makes when the budget is plentiful (the old fixed poll).
pub const BASE_INTERVAL: Duration = Duration::from_secs(3);
/// Longest gap between two looks (the lease is renewed at each, well inside its length).
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// A runner started this recently cannot be online with a job yet (the runner application
/// connects, then GitHub assigns): the first look waits this long after creation.
pub const RUNNER_WARMUP: Duration = Duration::from_secs(10);
/// Share of the window's budget kept for everything but job look-ups, when GitHub sent the
/// limit; 500 requests when it did not.
const RESERVE_PERCENT: u64 = 10;
const RESERVE_WITHOUT_LIMIT: u64 = 500;

/// What the pace depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaceInput {
    /// The budget GitHub last reported to this process; None before any answer.
    pub budget: Option<RateLimit>,
    pub now_epoch: u64,
    /// Jobs the unit's workers are handling now (each may be looking its job up).
    pub waiters: u64,
    /// Since this worker's runner was created.
    pub since_spawn: Duration,
}

/// The wait before the next look at the job.
pub fn next_lookup_in(p: &PaceInput) -> Duration {
    if p.since_spawn < RUNNER_WARMUP {
        return RUNNER_WARMUP - p.since_spawn;
    }
    let Some(budget) = p.budget else {
        return BASE_INTERVAL;
    };
    let window = budget.reset_epoch.saturating_sub(p.now_epoch);
    if window == 0 {
        // A new window has opened (or is about to): the reported budget is stale.
        return BASE_INTERVAL;
    }
    let reserve = budget
        .limit
        .map_or(RESERVE_WITHOUT_LIMIT, |l| l * RESERVE_PERCENT / 100);
    let spendable = budget.remaining.saturating_sub(reserve);
    if spendable == 0 {
        // Only the reserve is left: look again when the window resets, at the latest.
        return Duration::from_secs(window + 1).clamp(BASE_INTERVAL, MAX_INTERVAL);
    }
    // Each waiter may spend its share of what is left until the reset, evenly spread.
    let secs_per_lookup = window.saturating_mul(p.waiters.max(1)) as f64 / spendable as f64;
    Duration::from_secs_f64(secs_per_lookup).clamp(BASE_INTERVAL, MAX_INTERVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn input(remaining: u64, reset_in: u64, waiters: u64) -> PaceInput {
        PaceInput {
            budget: Some(RateLimit {
                remaining,
                limit: Some(5000),
                reset_epoch: NOW + reset_in,
            }),
            now_epoch: NOW,
            waiters,
            since_spawn: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_fresh_runner_is_not_looked_at_before_it_can_be_online() {
        for since in [0, 4, 9] {
            let p = PaceInput {
                since_spawn: Duration::from_secs(since),
                ..input(5000, 3600, 1)
            };
            assert_eq!(
                next_lookup_in(&p),
                RUNNER_WARMUP - Duration::from_secs(since)
            );
        }
        let p = PaceInput {
            since_spawn: RUNNER_WARMUP,
            ..input(5000, 3600, 1)
        };
        assert_eq!(next_lookup_in(&p), BASE_INTERVAL);
    }

    #[test]
    fn a_plentiful_or_unknown_budget_keeps_the_base_interval() {
        assert_eq!(next_lookup_in(&input(5000, 3600, 1)), BASE_INTERVAL);
        assert_eq!(next_lookup_in(&input(4999, 10, 50)), BASE_INTERVAL);
        let unknown = PaceInput {
            budget: None,
            ..input(0, 0, 100)
        };
        assert_eq!(next_lookup_in(&unknown), BASE_INTERVAL);
        // The window already reset: the numbers are stale.
        assert_eq!(next_lookup_in(&input(0, 0, 100)), BASE_INTERVAL);
    }

    #[test]
    fn the_interval_spreads_what_is_left_over_the_window_and_the_waiters() {
        // 4500 spendable over 3600 s for 10 waiters: one look per 8 s each.
        assert_eq!(
            next_lookup_in(&input(5000, 3600, 10)),
            Duration::from_secs(8)
        );
        // Half the budget gone, 10 waiters: 2000 spendable, 18 s.
        assert_eq!(
            next_lookup_in(&input(2500, 3600, 10)),
            Duration::from_secs(18)
        );
        // Fewer left means longer gaps, never beyond the cap.
        let mut last = Duration::ZERO;
        for remaining in (501..=5000).rev().step_by(250) {
            let d = next_lookup_in(&input(remaining, 3600, 10));
            assert!(d >= last, "{remaining}: {d:?} < {last:?}");
            assert!(d <= MAX_INTERVAL);
            last = d;
        }
        assert_eq!(next_lookup_in(&input(600, 3600, 100)), MAX_INTERVAL);
    }

    #[test]
    fn within_the_reserve_a_worker_looks_at_the_reset_or_the_cap() {
        assert_eq!(next_lookup_in(&input(500, 3600, 1)), MAX_INTERVAL);
        assert_eq!(
            next_lookup_in(&input(0, 20, 1)),
            Duration::from_secs(21),
            "just after the reset"
        );
        assert_eq!(next_lookup_in(&input(3, 1, 1)), BASE_INTERVAL);
        let no_limit = PaceInput {
            budget: Some(RateLimit {
                remaining: 400,
                limit: None,
                reset_epoch: NOW + 3600,
            }),
            ..input(0, 0, 1)
        };
        assert_eq!(next_lookup_in(&no_limit), MAX_INTERVAL);
    }

    /// The property the pace exists for: waiters that all follow it spend at most what is
    /// above the reserve before the reset.
    #[test]
    fn waiters_following_the_pace_never_spend_the_reserve() {
        for (remaining, waiters) in [(5000u64, 1u64), (5000, 40), (1500, 200), (800, 3)] {
            let d = next_lookup_in(&input(remaining, 3600, waiters));
            let spent = waiters * (3600 / d.as_secs().max(1));
            let cap_bound = waiters * 3600 / MAX_INTERVAL.as_secs();
            assert!(
                spent <= remaining - 500 || spent <= cap_bound,
                "{remaining} left, {waiters} waiters: {spent} looks"
            );
        }
    }
}
