//! GitHub API calls counted per endpoint: every request sent (pages and retries included),
//! per client for tests and benchmarks, and for the whole process so a hook can log what it
//! cost ([`log_process_counts`] at the end of each hook).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiCall {
    ListRunners,
    GetRunner,
    DeleteRunner,
    RegistrationToken,
    RemoveToken,
    GenerateJitConfig,
    ListRunnerApplications,
    ListRunnerGroups,
    GetJob,
    ListRunJobs,
    GetRepository,
    InstallationToken,
}

impl ApiCall {
    pub const ALL: [ApiCall; 12] = [
        ApiCall::ListRunners,
        ApiCall::GetRunner,
        ApiCall::DeleteRunner,
        ApiCall::RegistrationToken,
        ApiCall::RemoveToken,
        ApiCall::GenerateJitConfig,
        ApiCall::ListRunnerApplications,
        ApiCall::ListRunnerGroups,
        ApiCall::GetJob,
        ApiCall::ListRunJobs,
        ApiCall::GetRepository,
        ApiCall::InstallationToken,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ApiCall::ListRunners => "list-runners",
            ApiCall::GetRunner => "get-runner",
            ApiCall::DeleteRunner => "delete-runner",
            ApiCall::RegistrationToken => "registration-token",
            ApiCall::RemoveToken => "remove-token",
            ApiCall::GenerateJitConfig => "generate-jitconfig",
            ApiCall::ListRunnerApplications => "list-runner-applications",
            ApiCall::ListRunnerGroups => "list-runner-groups",
            ApiCall::GetJob => "get-job",
            ApiCall::ListRunJobs => "list-run-jobs",
            ApiCall::GetRepository => "get-repository",
            ApiCall::InstallationToken => "installation-token",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ApiCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Lock-free counters, one per endpoint.
#[derive(Debug)]
pub struct CallCounters {
    counts: [AtomicU64; ApiCall::ALL.len()],
}

impl Default for CallCounters {
    fn default() -> Self {
        CallCounters::new()
    }
}

impl CallCounters {
    pub const fn new() -> Self {
        CallCounters {
            counts: [const { AtomicU64::new(0) }; ApiCall::ALL.len()],
        }
    }

    pub fn record(&self, call: ApiCall) {
        self.counts[call.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, call: ApiCall) -> u64 {
        self.counts[call.index()].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        ApiCall::ALL.iter().map(|c| self.get(*c)).sum()
    }

    /// Non-zero counts only.
    pub fn snapshot(&self) -> CallCounts {
        CallCounts(
            ApiCall::ALL
                .iter()
                .map(|c| (*c, self.get(*c)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }
}

/// A copy of the counts, printable as `list-runners=3 delete-runner=1`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallCounts(pub BTreeMap<ApiCall, u64>);

impl CallCounts {
    pub fn get(&self, call: ApiCall) -> u64 {
        self.0.get(&call).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl fmt::Display for CallCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self.0.iter().map(|(c, n)| format!("{c}={n}")).collect();
        f.write_str(&parts.join(" "))
    }
}

static PROCESS: CallCounters = CallCounters::new();

/// Counts of every client in this process (a hook is one process).
pub fn process_counters() -> &'static CallCounters {
    &PROCESS
}

/// Log this process's GitHub API calls at debug level; call at the end of each hook.
pub fn log_process_counts() {
    let counts = PROCESS.snapshot();
    tracing::debug!(
        total = counts.total(),
        calls = %counts,
        "GitHub API calls in this hook"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_endpoint_separately() {
        let c = CallCounters::new();
        c.record(ApiCall::ListRunners);
        c.record(ApiCall::ListRunners);
        c.record(ApiCall::DeleteRunner);
        assert_eq!(c.get(ApiCall::ListRunners), 2);
        assert_eq!(c.get(ApiCall::DeleteRunner), 1);
        assert_eq!(c.get(ApiCall::GetJob), 0);
        assert_eq!(c.total(), 3);
        let snap = c.snapshot();
        assert_eq!(snap.to_string(), "list-runners=2 delete-runner=1");
        assert_eq!(snap.get(ApiCall::GetJob), 0);
        assert_eq!(CallCounts::default().to_string(), "none");
    }

    #[test]
    fn every_call_has_its_own_slot_and_name() {
        let c = CallCounters::new();
        for (i, call) in ApiCall::ALL.iter().enumerate() {
            assert_eq!(call.index(), i);
            c.record(*call);
        }
        assert!(ApiCall::ALL.iter().all(|call| c.get(*call) == 1));
        let names: std::collections::BTreeSet<&str> =
            ApiCall::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), ApiCall::ALL.len());
    }

    #[test]
    fn counting_is_safe_across_threads() {
        let c = std::sync::Arc::new(CallCounters::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..1000).for_each(|_| c.record(ApiCall::GetRunner)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(c.get(ApiCall::GetRunner), 4000);
    }
}
