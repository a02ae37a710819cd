//! How the unit's workers fare, from their slot files: each worker's last failure that still
//! holds, and slots whose workers keep dying. Pure; `reactive::mode` turns the worst into
//! the unit's status and check-runners lists them all.
//!
//! A worker records a failure when a call fails ([`FailureKind`]) and clears it when the
//! same kind of call succeeds again, so a failure in a slot file is one that still holds as
//! far as that worker knows. A worker that dies without being asked to (a crash, a failed
//! start) leaves its slot file unlocked and not marked stopped; the next worker in the slot
//! counts it ([`crashes_before`]).

use serde::{Deserialize, Serialize};

use super::workers::SlotStatus;

/// A worker that lived at least this long before it died was not crash-looping: the count of
/// crashes in a row starts again.
pub const HEALTHY_UPTIME_MS: u64 = 10 * 60 * 1000;
/// Crashes in a row (each within [`HEALTHY_UPTIME_MS`] of its start) that make a slot
/// crash-looping.
pub const CRASH_LOOP: u32 = 3;
/// Longest failure detail kept in a slot file and shown in the status.
pub const MAX_DETAIL_CHARS: usize = 160;

/// What failed, worst first (the order the status picks by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// GitHub answered 401: the token is invalid, expired or revoked (Blocked).
    TokenRejected,
    /// The worker could not start (settings, configuration, runtime).
    StartFailed,
    /// GitHub refused a runner's registration (403, 404, 409, 422: permissions, group).
    RegistrationRefused,
    /// A runner could not be created (LXD).
    RunnerCreation,
    /// GitHub could not be reached or failed (5xx, rate limit, transport).
    GitHubUnavailable,
}

impl FailureKind {
    pub fn name(self) -> &'static str {
        match self {
            FailureKind::TokenRejected => "token-rejected",
            FailureKind::StartFailed => "start-failed",
            FailureKind::RegistrationRefused => "registration-refused",
            FailureKind::RunnerCreation => "runner-creation",
            FailureKind::GitHubUnavailable => "github-unavailable",
        }
    }
}

/// A worker's last failure: operator-facing, never a secret (the errors it comes from carry
/// none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerFailure {
    pub kind: FailureKind,
    pub detail: String,
    pub at_epoch: u64,
}

impl WorkerFailure {
    pub fn new(kind: FailureKind, detail: &str, at_epoch: u64) -> Self {
        let detail = match detail.char_indices().nth(MAX_DETAIL_CHARS) {
            Some((cut, _)) => format!("{}…", &detail[..cut]),
            None => detail.to_string(),
        };
        WorkerFailure {
            kind,
            detail,
            at_epoch,
        }
    }
}

/// The crashes in a row the previous occupant of a slot ends: its own count plus one when it
/// died without being asked to within [`HEALTHY_UPTIME_MS`] of its start, 1 when it had
/// lived longer, 0 when it stopped on request (or the slot was never used).
pub fn crashes_before(previous: &SlotStatus) -> u32 {
    if previous.pid == 0 || previous.stopped {
        return 0;
    }
    let lived = previous.updated_ms.saturating_sub(previous.started_ms);
    if lived < HEALTHY_UPTIME_MS {
        previous.crashes.saturating_add(1)
    } else {
        1
    }
}

/// A slot's health as the charm reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotHealth {
    pub slot: u32,
    /// A worker holds the slot now.
    pub live: bool,
    pub status: SlotStatus,
}

impl SlotHealth {
    /// Crashes in a row counting this slot's state: a dead worker that was not stopped is
    /// one more.
    pub fn crashes_in_a_row(&self) -> u32 {
        if self.live {
            let lived = self
                .status
                .updated_ms
                .saturating_sub(self.status.started_ms);
            if lived < HEALTHY_UPTIME_MS {
                self.status.crashes
            } else {
                0
            }
        } else {
            crashes_before(&self.status)
        }
    }

    pub fn crash_looping(&self) -> bool {
        self.crashes_in_a_row() >= CRASH_LOOP
    }

    /// The failure that still holds: a live worker's, or the one a dead worker died with.
    pub fn failure(&self) -> Option<&WorkerFailure> {
        if self.live || !self.status.stopped {
            self.status.failure.as_ref()
        } else {
            None
        }
    }
}

/// The worst thing the unit's workers report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorstProblem<'a> {
    /// GitHub rejects the token: nothing works until the operator sets a new one.
    TokenRejected(&'a WorkerFailure),
    /// A slot's workers keep dying.
    CrashLoop {
        slot: u32,
        crashes: u32,
        failure: Option<&'a WorkerFailure>,
    },
    /// Another failure, with how many slots report it.
    Failing {
        failure: &'a WorkerFailure,
        slots: usize,
    },
}

/// The worst problem among `slots`: a rejected token, then a crash loop, then the worst
/// other failure kind (the most recent of that kind).
pub fn worst_problem(slots: &[SlotHealth]) -> Option<WorstProblem<'_>> {
    let failures: Vec<&WorkerFailure> = slots.iter().filter_map(SlotHealth::failure).collect();
    if let Some(f) = failures
        .iter()
        .find(|f| f.kind == FailureKind::TokenRejected)
    {
        return Some(WorstProblem::TokenRejected(f));
    }
    if let Some(s) = slots.iter().find(|s| s.crash_looping()) {
        return Some(WorstProblem::CrashLoop {
            slot: s.slot,
            crashes: s.crashes_in_a_row(),
            failure: s.failure(),
        });
    }
    let kind = failures.iter().map(|f| f.kind).min()?;
    let of_kind: Vec<&&WorkerFailure> = failures.iter().filter(|f| f.kind == kind).collect();
    let latest = of_kind.iter().max_by_key(|f| f.at_epoch)?;
    Some(WorstProblem::Failing {
        failure: latest,
        slots: of_kind.len(),
    })
}

/// check-runners' `worker-failures`: one line per slot with a failure or a crash count.
pub fn failure_lines(slots: &[SlotHealth]) -> Vec<String> {
    slots
        .iter()
        .filter_map(|s| {
            let crashes = s.crashes_in_a_row();
            let failure = s.failure();
            if failure.is_none() && crashes == 0 {
                return None;
            }
            Some(crate::messages::worker_failure_line(
                s.slot,
                s.live,
                crashes,
                failure.map(|f| (f.kind.name(), f.detail.as_str(), f.at_epoch)),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(started: u64, updated: u64, crashes: u32, stopped: bool) -> SlotStatus {
        SlotStatus {
            pid: 7,
            started_ms: started,
            updated_ms: updated,
            crashes,
            stopped,
            ..SlotStatus::default()
        }
    }

    fn failure(kind: FailureKind, at: u64) -> Option<WorkerFailure> {
        Some(WorkerFailure::new(kind, kind.name(), at))
    }

    fn slot(n: u32, live: bool, f: Option<WorkerFailure>, crashes: u32) -> SlotHealth {
        SlotHealth {
            slot: n,
            live,
            status: SlotStatus {
                failure: f,
                ..status(0, 1000, crashes, false)
            },
        }
    }

    #[test]
    fn crashes_count_in_a_row_only_for_short_lives_and_never_for_a_requested_stop() {
        assert_eq!(crashes_before(&SlotStatus::default()), 0, "unused slot");
        assert_eq!(crashes_before(&status(0, 5_000, 0, true)), 0, "stopped");
        assert_eq!(crashes_before(&status(0, 5_000, 0, false)), 1);
        assert_eq!(crashes_before(&status(0, 5_000, 2, false)), 3);
        let long = HEALTHY_UPTIME_MS + 1;
        assert_eq!(crashes_before(&status(0, long, 5, false)), 1, "lived long");
    }

    #[test]
    fn the_worst_problem_is_a_rejected_token_then_a_crash_loop_then_the_worst_kind() {
        use FailureKind::*;
        assert_eq!(worst_problem(&[slot(0, true, None, 0)]), None);
        let looping = slot(1, false, failure(StartFailed, 5), 2);
        let lxd_old = slot(2, true, failure(RunnerCreation, 1), 0);
        let lxd_new = slot(3, true, failure(RunnerCreation, 9), 0);
        let gh = slot(4, true, failure(GitHubUnavailable, 9), 0);
        let token = slot(5, true, failure(TokenRejected, 2), 0);
        let all = [
            looping.clone(),
            lxd_old.clone(),
            lxd_new.clone(),
            gh.clone(),
            token.clone(),
        ];
        assert!(matches!(
            worst_problem(&all),
            Some(WorstProblem::TokenRejected(f)) if f.kind == TokenRejected
        ));
        assert!(matches!(
            worst_problem(&all[..4]),
            Some(WorstProblem::CrashLoop {
                slot: 1,
                crashes: 3,
                failure: Some(_)
            })
        ));
        match worst_problem(&all[1..4]) {
            Some(WorstProblem::Failing { failure, slots }) => {
                assert_eq!(
                    (failure.kind, failure.at_epoch, slots),
                    (RunnerCreation, 9, 2)
                );
            }
            other => panic!("{other:?}"),
        }
        // A worker that was asked to stop leaves no failure behind.
        let stopped = SlotHealth {
            slot: 6,
            live: false,
            status: SlotStatus {
                stopped: true,
                failure: failure(RunnerCreation, 3),
                ..SlotStatus::default()
            },
        };
        assert_eq!(worst_problem(std::slice::from_ref(&stopped)), None);
        assert!(failure_lines(&[stopped]).is_empty());
        assert_eq!(failure_lines(&all).len(), 5);
    }

    #[test]
    fn a_long_detail_is_cut() {
        let f = WorkerFailure::new(FailureKind::RunnerCreation, &"é".repeat(500), 0);
        assert_eq!(f.detail.chars().count(), MAX_DETAIL_CHARS + 1);
    }
}
