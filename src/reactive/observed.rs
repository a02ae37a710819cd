//! A worker's edges that record how its calls fare in its slot file (`reactive::health`):
//! GitHub through [`ObservedGitHub`] (a 401 is a rejected token, a refused registration,
//! GitHub down), runner creation through [`ReportingRunners`] (LXD). A failure is recorded
//! when a call fails and cleared when the same kind of call succeeds, so what the slot file
//! says still holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::health::{FailureKind, WorkerFailure};
use super::run::LxdRunners;
use super::worker::{JobRunners, RunnerRemoval, SpawnFailure};
use super::workers::{SlotHold, SlotStatus};
use crate::github::{
    Arch, DeleteOutcome, GitHub, GitHubError, GitHubRunner, JitConfig, JobRef, RunnerApplication,
    WorkflowJob,
};
use crate::secret::Secret;

/// The worker's slot file, shared by its report and the edges that record failures.
#[derive(Debug, Clone)]
pub struct SharedSlot {
    hold: Arc<Mutex<SlotHold>>,
    /// Failures recorded so far (a caller tells whether a call recorded one).
    recorded: Arc<AtomicU64>,
}

impl SharedSlot {
    pub fn new(hold: SlotHold) -> Self {
        SharedSlot {
            hold: Arc::new(Mutex::new(hold)),
            recorded: Arc::new(AtomicU64::new(0)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, SlotHold> {
        // A panic while holding it leaves a status that is still whole: keep using it.
        self.hold.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the status and rewrites the file when `change` says it changed something.
    pub fn update(&self, change: impl FnOnce(&mut SlotStatus) -> bool) {
        let mut hold = self.lock();
        if change(&mut hold.status) {
            if let Err(e) = hold.publish() {
                tracing::warn!("cannot write the worker's slot file: {e}");
            }
        }
    }

    pub fn status(&self) -> SlotStatus {
        self.lock().status.clone()
    }

    /// Records `kind` (the same failure again keeps the time it started).
    pub fn fail(&self, kind: FailureKind, detail: &str) {
        self.recorded.fetch_add(1, Ordering::SeqCst);
        let failure = WorkerFailure::new(kind, detail, crate::reactive::workers::now_ms() / 1000);
        self.update(|s| {
            if s.failure
                .as_ref()
                .is_some_and(|f| f.kind == kind && f.detail == failure.detail)
            {
                return false;
            }
            tracing::warn!(kind = kind.name(), "{}", failure.detail);
            s.failure = Some(failure);
            true
        });
    }

    /// Clears the last failure if it is one of `kinds` (the call it was about succeeded).
    pub fn clear(&self, kinds: &[FailureKind]) {
        self.update(|s| {
            if s.failure.as_ref().is_some_and(|f| kinds.contains(&f.kind)) {
                s.failure = None;
                return true;
            }
            false
        });
    }

    fn recorded(&self) -> u64 {
        self.recorded.load(Ordering::SeqCst)
    }
}

/// The failure kind of a GitHub error any call can meet (None: an answer about the thing
/// asked for, such as a job that does not exist).
pub fn github_failure_kind(e: &GitHubError) -> Option<FailureKind> {
    match e {
        GitHubError::Unauthorized { .. } | GitHubError::Credential { .. } => {
            Some(FailureKind::TokenRejected)
        }
        GitHubError::Server { .. }
        | GitHubError::Transport { .. }
        | GitHubError::RateLimited { .. } => Some(FailureKind::GitHubUnavailable),
        _ => None,
    }
}

/// The failure kind of a refused registration (403, 404, 409, 422, a missing group).
fn registration_failure_kind(e: &GitHubError) -> Option<FailureKind> {
    github_failure_kind(e).or(match e {
        GitHubError::Forbidden { .. }
        | GitHubError::NotFound { .. }
        | GitHubError::Conflict { .. }
        | GitHubError::Unprocessable { .. }
        | GitHubError::GroupNotFound { .. } => Some(FailureKind::RegistrationRefused),
        _ => None,
    })
}

/// [`GitHub`] recording in the slot what its calls meet.
pub struct ObservedGitHub {
    pub inner: Arc<dyn GitHub>,
    pub slot: SharedSlot,
}

impl ObservedGitHub {
    fn seen<T>(
        &self,
        r: Result<T, GitHubError>,
        kind_of: fn(&GitHubError) -> Option<FailureKind>,
        cleared: &[FailureKind],
    ) -> Result<T, GitHubError> {
        match &r {
            Ok(_) => self.slot.clear(cleared),
            Err(e) => {
                if let Some(kind) = kind_of(e) {
                    self.slot.fail(kind, &e.to_string());
                }
            }
        }
        r
    }

    fn call<T>(&self, r: Result<T, GitHubError>) -> Result<T, GitHubError> {
        use FailureKind::*;
        self.seen(r, github_failure_kind, &[TokenRejected, GitHubUnavailable])
    }
}

impl GitHub for ObservedGitHub {
    fn list_runners(&self) -> Result<Vec<GitHubRunner>, GitHubError> {
        self.call(self.inner.list_runners())
    }
    fn get_runner(&self, id: u64) -> Result<Option<GitHubRunner>, GitHubError> {
        self.call(self.inner.get_runner(id))
    }
    fn delete_runner(&self, id: u64) -> Result<DeleteOutcome, GitHubError> {
        self.call(self.inner.delete_runner(id))
    }
    fn registration_token(&self) -> Result<Secret, GitHubError> {
        self.call(self.inner.registration_token())
    }
    fn remove_token(&self) -> Result<Secret, GitHubError> {
        self.call(self.inner.remove_token())
    }
    fn generate_jit_config(&self, name: &str, labels: &[String]) -> Result<JitConfig, GitHubError> {
        use FailureKind::*;
        self.seen(
            self.inner.generate_jit_config(name, labels),
            registration_failure_kind,
            &[TokenRejected, GitHubUnavailable, RegistrationRefused],
        )
    }
    fn runner_application(&self, arch: Arch) -> Result<RunnerApplication, GitHubError> {
        self.call(self.inner.runner_application(arch))
    }
    fn get_job(&self, job: &JobRef) -> Result<WorkflowJob, GitHubError> {
        self.call(self.inner.get_job(job))
    }
    fn list_run_jobs(&self, repo: &str, run_id: u64) -> Result<Vec<WorkflowJob>, GitHubError> {
        self.call(self.inner.list_run_jobs(repo, run_id))
    }
    fn repository_visible(&self, owner: &str, repo: &str) -> Result<bool, GitHubError> {
        self.call(self.inner.repository_visible(owner, repo))
    }
}

/// [`JobRunners`] recording a failed creation (unless GitHub's side already recorded why)
/// and clearing it after one that worked.
pub struct ReportingRunners<'a> {
    pub inner: LxdRunners<'a>,
    pub slot: SharedSlot,
}

impl JobRunners for ReportingRunners<'_> {
    fn new_name(&self) -> Result<String, String> {
        self.inner.new_name()
    }

    fn create(&self, name: &str) -> Result<(), SpawnFailure> {
        let before = self.slot.recorded();
        let r = self.inner.create(name);
        match &r {
            Ok(()) => self.slot.clear(&[
                FailureKind::RunnerCreation,
                FailureKind::RegistrationRefused,
            ]),
            Err(f) if self.slot.recorded() == before => {
                self.slot.fail(FailureKind::RunnerCreation, &f.message)
            }
            Err(_) => {}
        }
        r
    }

    fn remove_if_idle(&self, name: &str) -> Result<RunnerRemoval, String> {
        self.inner.remove_if_idle(name)
    }

    fn exists(&self, name: &str) -> Result<bool, String> {
        self.inner.exists(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactive::workers::UnitDirs;
    use std::time::Duration;

    #[test]
    fn a_failure_is_recorded_once_with_its_start_and_cleared_by_a_success_of_its_kind() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = UnitDirs::new(tmp.path().join("s"), tmp.path().join("l"));
        dirs.create().unwrap();
        let hold = SlotHold::acquire(&dirs, 0, Duration::ZERO)
            .unwrap()
            .unwrap();
        let slot = SharedSlot::new(hold);
        slot.fail(FailureKind::TokenRejected, "401");
        let first = slot.status().failure.unwrap();
        slot.fail(FailureKind::TokenRejected, "401");
        assert_eq!(slot.status().failure.unwrap(), first);
        slot.clear(&[FailureKind::RunnerCreation]);
        assert!(slot.status().failure.is_some(), "another kind stays");
        slot.clear(&[FailureKind::TokenRejected]);
        assert_eq!(slot.status().failure, None);
        let unauthorized = GitHubError::Unauthorized {
            method: "GET".into(),
            path: "/x".into(),
        };
        assert_eq!(
            github_failure_kind(&unauthorized),
            Some(FailureKind::TokenRejected)
        );
        let not_found = GitHubError::NotFound {
            method: "GET".into(),
            path: "/x".into(),
        };
        assert_eq!(github_failure_kind(&not_found), None, "a job that is gone");
        assert_eq!(
            registration_failure_kind(&not_found),
            Some(FailureKind::RegistrationRefused)
        );
    }
}
