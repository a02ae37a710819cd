//! The effects reconcile and flush need, as one small trait the charm implements over the
//! real runner functions (src/runner, taking `&dyn Lxd` and `&dyn GitHub`).

use std::fmt;

use crate::github::{GitHubError, GitHubRunner};
use crate::identity::RunnerName;
use crate::lxd::{Instance, LxdError};
use crate::manager::planner::{Health, RemovalTarget};

/// What an operation failure means for the operator, so status can say Blocked or
/// Maintenance without parsing messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Worth retrying on the next reconcile (5xx, timeout, LXD hiccup).
    Transient,
    /// Will fail until the operator changes something (token, permissions, path, LXD).
    NeedsOperator,
    /// GitHub's rate limit; retry after the reset time (epoch seconds).
    RateLimited { reset_epoch: u64 },
    /// Admission refused a launch: the machine holds no more runners now (other units'
    /// runners, leftovers). Retried once something on the machine goes.
    NoRoom,
}

/// Why an operation failed. The message is operator-facing and never holds a secret
/// (the errors it is built from carry none).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct OpError {
    pub kind: FailureKind,
    pub message: String,
}

impl OpError {
    pub fn transient(message: impl Into<String>) -> Self {
        OpError {
            kind: FailureKind::Transient,
            message: message.into(),
        }
    }

    pub fn needs_operator(message: impl Into<String>) -> Self {
        OpError {
            kind: FailureKind::NeedsOperator,
            message: message.into(),
        }
    }
}

impl From<GitHubError> for OpError {
    fn from(err: GitHubError) -> Self {
        let kind = match &err {
            GitHubError::Unauthorized { .. }
            | GitHubError::Forbidden { .. }
            | GitHubError::NotFound { .. }
            | GitHubError::GroupNotFound { .. }
            | GitHubError::Credential { .. } => FailureKind::NeedsOperator,
            GitHubError::RateLimited { reset_epoch, .. } => FailureKind::RateLimited {
                reset_epoch: *reset_epoch,
            },
            GitHubError::Conflict { .. }
            | GitHubError::Unprocessable { .. }
            | GitHubError::Server { .. }
            | GitHubError::Transport { .. }
            | GitHubError::Protocol { .. } => FailureKind::Transient,
        };
        OpError {
            kind,
            message: err.to_string(),
        }
    }
}

impl From<LxdError> for OpError {
    fn from(err: LxdError) -> Self {
        let kind = match &err {
            LxdError::LxcMissing => FailureKind::NeedsOperator,
            _ => FailureKind::Transient,
        };
        OpError {
            kind,
            message: err.to_string(),
        }
    }
}

/// This unit's runners as both sides list them. GitHub's side may fail on its own: a flush
/// with revoked credentials must still remove the instances.
#[derive(Debug, Clone)]
pub struct Observation {
    pub instances: Vec<Instance>,
    pub github: Result<Vec<GitHubRunner>, OpError>,
}

/// What happened to a removal that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// Everything the target named is gone (some of it may have been gone already).
    Removed,
    /// GitHub refused to delete the registration (422): the runner took a job after it was
    /// listed. Nothing was deleted. Only without `force`.
    KeptBusy,
    /// With `force`: the instance is gone but its registration could not be deleted (GitHub
    /// still sees it busy, or the old credentials no longer work). The next reconcile deletes
    /// it as an orphan; GitHub also expires offline ephemeral registrations itself.
    RegistrationLeft { reason: String },
}

impl fmt::Display for RemoveOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoveOutcome::Removed => f.write_str("removed"),
            RemoveOutcome::KeptBusy => f.write_str("kept: it is busy"),
            RemoveOutcome::RegistrationLeft { reason } => {
                write!(f, "instance removed, registration left: {reason}")
            }
        }
    }
}

/// The runner effects. `Sync`: the executor calls it from several threads at once, so an
/// implementation must tolerate concurrent calls on different runners.
pub trait RunnerOps: Sync {
    /// List this unit's instances (by owner key) and registrations (by name). `Err` when LXD
    /// cannot be listed; a GitHub failure goes in [`Observation::github`].
    fn observe(&self) -> Result<Observation, OpError>;

    /// Create one runner: a fresh name, its JIT registration, then its instance launched with
    /// the owner key and [`crate::manager::planner::RUNNER_ID_CONFIG_KEY`] set, started with
    /// the JIT config. Returns once the instance is started; does not wait for it to come
    /// online. On failure it deletes what it made (registration and instance) before
    /// returning `Err`, so a failed creation leaves nothing behind (what a crash leaves, the
    /// next reconcile removes).
    fn create(&self) -> Result<RunnerName, OpError>;

    /// Remove what `target` names.
    /// - Without `force`: delete the registration first (when `github_id` is set); on 422
    ///   return [`RemoveOutcome::KeptBusy`] and leave the instance alone. A 404 counts as
    ///   deleted. Then delete the instance (when `has_instance`; a missing one is fine).
    /// - With `force`: delete the instance first (ending any job), then the registration; if
    ///   that fails, return [`RemoveOutcome::RegistrationLeft`].
    ///
    /// `Err` only when something that was to be deleted may still be there.
    fn remove(&self, target: &RemovalTarget, force: bool) -> Result<RemoveOutcome, OpError>;

    /// The registration with this id, read on its own (`GET …/runners/{id}`): `Ok(None)`
    /// when GitHub answers 404. A paginated listing can miss a live registration (one
    /// deleted between pages shifts the next page), so a runner missing from a listing is
    /// confirmed gone here before its instance is removed.
    fn registration(&self, id: u64) -> Result<Option<GitHubRunner>, OpError>;

    /// Whether the runner listener runs in `instance`. Bounded in time; any failure to tell
    /// is [`Health::Unknown`].
    fn health(&self, instance: &str) -> Health;

    /// When (epoch seconds) the job now running in the runner's instance started, as the
    /// instance shows it (the runner's work directory appears when a job starts). `Ok(None)`:
    /// no job has started in it yet. `Err`: it could not be checked.
    fn job_started_at(&self, name: &RunnerName) -> Result<Option<u64>, OpError>;

    /// Mark the busy runner `name` to be replaced once its job ends: its instance gets
    /// [`crate::manager::replacement::REPLACE_CONFIG_KEY`] = `scope`.
    fn mark_for_replacement(&self, name: &RunnerName, scope: &str) -> Result<(), OpError>;

    /// The machine for admission: the host's CPUs, memory and free pool disk (a fact that
    /// cannot be read is None and limits nothing) and every instance on it; asked only in a
    /// round that creates runners. None: the machine could not be listed (the round counts
    /// this unit's runners alone; each launch checks again and refuses without a listing).
    fn machine(&self) -> Option<crate::manager::admission::Machine> {
        Some(crate::manager::admission::Machine::default())
    }
}
