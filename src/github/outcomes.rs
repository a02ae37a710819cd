//! What GitHub answered, for the metrics exporter: calls per endpoint and HTTP status (or
//! `transport-error`), and the rate-limit budget the last answer reported. Process-wide, like
//! [`super::calls::process_counters`]: a hook is one process, and the charm folds these into
//! the exporter's state file after a reconcile (`crate::observability::state`).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::calls::ApiCall;

/// Status label of a call that got no HTTP answer.
pub const TRANSPORT_ERROR: &str = "transport-error";

/// The `x-ratelimit-*` headers of the latest answer that had them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub remaining: u64,
    /// None when GitHub did not send `x-ratelimit-limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    pub reset_epoch: u64,
}

impl RateLimit {
    /// From the raw header values; None unless remaining and reset both parse.
    pub fn from_headers(
        remaining: Option<&str>,
        limit: Option<&str>,
        reset: Option<&str>,
    ) -> Option<RateLimit> {
        let num = |v: Option<&str>| v.and_then(|s| s.trim().parse::<u64>().ok());
        Some(RateLimit {
            remaining: num(remaining)?,
            limit: num(limit),
            reset_epoch: num(reset)?,
        })
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_status: BTreeMap<(ApiCall, String), u64>,
    rate_limit: Option<RateLimit>,
}

/// Calls per (endpoint, status) and the latest rate limit.
#[derive(Debug, Default)]
pub struct CallOutcomes {
    inner: Mutex<Inner>,
}

impl CallOutcomes {
    pub const fn new() -> Self {
        CallOutcomes {
            inner: Mutex::new(Inner {
                by_status: BTreeMap::new(),
                rate_limit: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One attempt (retries count each): `status` None when no answer came.
    pub fn record(&self, call: ApiCall, status: Option<u16>) {
        let label = status.map_or_else(|| TRANSPORT_ERROR.to_string(), |s| s.to_string());
        *self.lock().by_status.entry((call, label)).or_insert(0) += 1;
    }

    pub fn observe_rate_limit(&self, rate: Option<RateLimit>) {
        if let Some(rate) = rate {
            self.lock().rate_limit = Some(rate);
        }
    }

    /// `(endpoint, status) -> count`, non-zero only.
    pub fn counts(&self) -> BTreeMap<(ApiCall, String), u64> {
        self.lock().by_status.clone()
    }

    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.lock().rate_limit
    }
}

static PROCESS: CallOutcomes = CallOutcomes::new();

/// Outcomes of every client in this process.
pub fn process_outcomes() -> &'static CallOutcomes {
    &PROCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_endpoint_and_status_and_keeps_the_latest_rate_limit() {
        let o = CallOutcomes::new();
        o.record(ApiCall::ListRunners, Some(200));
        o.record(ApiCall::ListRunners, Some(200));
        o.record(ApiCall::ListRunners, Some(502));
        o.record(ApiCall::DeleteRunner, None);
        let counts = o.counts();
        assert_eq!(counts[&(ApiCall::ListRunners, "200".to_string())], 2);
        assert_eq!(counts[&(ApiCall::ListRunners, "502".to_string())], 1);
        assert_eq!(
            counts[&(ApiCall::DeleteRunner, TRANSPORT_ERROR.to_string())],
            1
        );
        assert_eq!(o.rate_limit(), None);
        o.observe_rate_limit(RateLimit::from_headers(
            Some("4990"),
            Some("5000"),
            Some("17"),
        ));
        o.observe_rate_limit(None);
        assert_eq!(
            o.rate_limit(),
            Some(RateLimit {
                remaining: 4990,
                limit: Some(5000),
                reset_epoch: 17
            })
        );
    }

    #[test]
    fn rate_limit_needs_remaining_and_reset() {
        assert_eq!(RateLimit::from_headers(None, Some("5000"), Some("1")), None);
        assert_eq!(RateLimit::from_headers(Some("x"), None, Some("1")), None);
        assert_eq!(
            RateLimit::from_headers(Some(" 3 "), None, Some("9")),
            Some(RateLimit {
                remaining: 3,
                limit: None,
                reset_epoch: 9
            })
        );
    }
}
