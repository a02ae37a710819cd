//! Whether and how long to wait before retrying one API call: a pure function of what went
//! wrong, how many retries were made, and how much of the hook's sleep budget is spent.
//! The client does the sleeping, through [`crate::clock::Clock`].

use std::time::Duration;

/// Retry limits. One client lives for one hook, so `sleep_budget` bounds the hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (5xx, timeouts, connection errors, secondary limits).
    pub max_retries: u32,
    /// First backoff step; doubles with each retry.
    pub base_delay: Duration,
    /// Largest backoff step.
    pub max_delay: Duration,
    /// Most a hook sleeps inside the client, all calls and threads together.
    pub sleep_budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            sleep_budget: Duration::from_secs(60),
        }
    }
}

/// A failure that may pass if the call is made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retryable {
    /// 5xx, timeout, connection error.
    Transient,
    /// Secondary rate limit; `retry_after` from the `retry-after` header.
    SecondaryLimit { retry_after: Option<Duration> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    RetriesExhausted,
    /// Waiting would take the hook past its sleep budget.
    BudgetExhausted,
    /// A secondary limit without `retry-after` asks for at least a minute: more than a hook
    /// may wait, so report rate-limited and let the next reconcile try.
    NoRetryAfter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    RetryAfter(Duration),
    GiveUp(GiveUp),
}

/// Decide after a failed attempt. `retries_done` counts retries already made for this call;
/// `slept` is what the hook already slept in the client; `jitter` is uniform in `[0, 1)`.
pub fn decide(
    policy: &RetryPolicy,
    failure: Retryable,
    retries_done: u32,
    slept: Duration,
    jitter: f64,
) -> Decision {
    if retries_done >= policy.max_retries {
        return Decision::GiveUp(GiveUp::RetriesExhausted);
    }
    let wait = match failure {
        Retryable::Transient => backoff(policy, retries_done, jitter),
        Retryable::SecondaryLimit {
            retry_after: Some(d),
        } => d,
        Retryable::SecondaryLimit { retry_after: None } => {
            return Decision::GiveUp(GiveUp::NoRetryAfter)
        }
    };
    if slept.saturating_add(wait) > policy.sleep_budget {
        return Decision::GiveUp(GiveUp::BudgetExhausted);
    }
    Decision::RetryAfter(wait)
}

/// Exponential backoff with equal jitter: half of the step is fixed, half random, so
/// parallel workers retrying together spread out but never retry at once.
pub fn backoff(policy: &RetryPolicy, retries_done: u32, jitter: f64) -> Duration {
    let factor = 1u32.checked_shl(retries_done).unwrap_or(u32::MAX);
    let step = policy
        .base_delay
        .saturating_mul(factor)
        .min(policy.max_delay);
    let half = step / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// Uniform in [0, 1) from the OS; 0.5 if it has none to give (jitter is not security).
pub fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::getrandom(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
    }

    #[test]
    fn transient_failures_back_off_exponentially_within_jitter_bounds() {
        let p = policy();
        for (retries, step) in [(0, 1), (1, 2), (2, 4)] {
            let low = decide(&p, Retryable::Transient, retries, S(0), 0.0);
            let high = decide(&p, Retryable::Transient, retries, S(0), 0.999_999);
            assert_eq!(low, Decision::RetryAfter(S(step) / 2), "retry {retries}");
            match high {
                Decision::RetryAfter(d) => {
                    assert!(d < S(step) && d > S(step) / 2, "retry {retries}: {d:?}")
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn backoff_is_capped_and_never_overflows() {
        let p = policy();
        assert_eq!(backoff(&p, 3, 1.0), p.max_delay);
        assert_eq!(backoff(&p, 31, 1.0), p.max_delay);
        assert_eq!(backoff(&p, 200, 1.0), p.max_delay);
        assert_eq!(backoff(&p, 200, 0.0), p.max_delay / 2);
        // Out-of-range jitter is clamped, not trusted.
        assert_eq!(backoff(&p, 0, -3.0), S(1) / 2);
        assert_eq!(backoff(&p, 0, 7.0), S(1));
    }

    #[test]
    fn at_most_three_retries_then_give_up() {
        let p = policy();
        for failure in [
            Retryable::Transient,
            Retryable::SecondaryLimit {
                retry_after: Some(S(1)),
            },
        ] {
            for retries in 0..3 {
                assert!(matches!(
                    decide(&p, failure, retries, S(0), 0.5),
                    Decision::RetryAfter(_)
                ));
            }
            assert_eq!(
                decide(&p, failure, 3, S(0), 0.5),
                Decision::GiveUp(GiveUp::RetriesExhausted)
            );
        }
    }

    #[test]
    fn secondary_limit_waits_retry_after_exactly() {
        let p = policy();
        let f = Retryable::SecondaryLimit {
            retry_after: Some(S(17)),
        };
        assert_eq!(decide(&p, f, 0, S(0), 0.9), Decision::RetryAfter(S(17)));
        assert_eq!(
            decide(
                &p,
                Retryable::SecondaryLimit {
                    retry_after: Some(S(0))
                },
                0,
                S(0),
                0.9
            ),
            Decision::RetryAfter(S(0))
        );
    }

    #[test]
    fn secondary_limit_without_retry_after_is_not_waited_for() {
        let f = Retryable::SecondaryLimit { retry_after: None };
        assert_eq!(
            decide(&policy(), f, 0, S(0), 0.5),
            Decision::GiveUp(GiveUp::NoRetryAfter)
        );
    }

    #[test]
    fn the_hook_sleep_budget_is_never_exceeded() {
        let p = policy();
        let big = Retryable::SecondaryLimit {
            retry_after: Some(S(61)),
        };
        assert_eq!(
            decide(&p, big, 0, S(0), 0.5),
            Decision::GiveUp(GiveUp::BudgetExhausted)
        );
        let f = Retryable::SecondaryLimit {
            retry_after: Some(S(30)),
        };
        assert_eq!(decide(&p, f, 0, S(30), 0.5), Decision::RetryAfter(S(30)));
        assert_eq!(
            decide(&p, f, 0, S(31), 0.5),
            Decision::GiveUp(GiveUp::BudgetExhausted)
        );
        // Backoff too: 59.5 s slept leaves no room for a 1-2 s step.
        assert_eq!(
            decide(
                &p,
                Retryable::Transient,
                1,
                Duration::from_millis(59_500),
                0.5
            ),
            Decision::GiveUp(GiveUp::BudgetExhausted)
        );
        assert_eq!(
            decide(&p, Retryable::Transient, 0, Duration::MAX, 0.0),
            Decision::GiveUp(GiveUp::BudgetExhausted)
        );
    }

    #[test]
    fn the_worst_case_transient_call_sleeps_under_seven_seconds() {
        let p = policy();
        let mut slept = Duration::ZERO;
        let mut retries = 0;
        while let Decision::RetryAfter(d) = decide(&p, Retryable::Transient, retries, slept, 0.999)
        {
            slept += d;
            retries += 1;
        }
        assert_eq!(retries, 3);
        assert!(slept < S(7), "{slept:?}");
    }
}
