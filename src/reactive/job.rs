//! What a worker does with one job message: pure decisions over plain data.
//!
//! A message passes [`screen`] (parse the body, check the job URL and the labels), then the
//! job's state on GitHub decides ([`decide_on_job`]); after a runner was spawned for it, how
//! the wait for pickup ended settles the message ([`settle_after_wait`]). Nothing here does
//! I/O: the worker loop (`reactive::worker`) performs what these functions decide.

use crate::github::GitHubPath;
use serde::Deserialize;
use url::Url;

/// Handlings of one message before it is dropped (`X-Process-Count` limit of the Python charm).
pub const RETRY_LIMIT: u32 = 5;
/// First requeue backoff, doubled per handling.
pub const BACKOFF_BASE_SECS: u64 = 60;
/// Longest requeue backoff.
pub const BACKOFF_MAX_SECS: u64 = 1800;
/// Labels GitHub gives every self-hosted Linux runner (the router strips them).
pub const DEFAULT_LABELS: [&str; 2] = ["self-hosted", "linux"];
/// Longest body accepted; the router's bodies are a few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A job message that passed [`screen`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobTarget {
    pub owner: String,
    pub repo: String,
    pub job_id: u64,
    /// Lowercased, as the router sends them.
    pub labels: Vec<String>,
}

/// Why a message is dropped (acked without a runner). Also the `reason` of the metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// Not a job body (bad envelope, not JSON, a field missing or of the wrong type).
    Malformed(String),
    /// The URL is not a job of this unit's `path` on the configured GitHub API.
    ForeignUrl(String),
    /// Labels this unit's runners do not have.
    UnsupportedLabels(Vec<String>),
    /// Handled [`RETRY_LIMIT`] times without a runner taking the job.
    RetryLimit,
    /// GitHub does not know the job (404).
    JobNotFound,
    /// Another worker of this unit is handling the same job (a redelivered message).
    Duplicate,
}

impl DropReason {
    /// Short machine-readable name (metrics).
    pub fn name(&self) -> &'static str {
        match self {
            DropReason::Malformed(_) => "malformed",
            DropReason::ForeignUrl(_) => "foreign_url",
            DropReason::UnsupportedLabels(_) => "unsupported_labels",
            DropReason::RetryLimit => "retry_limit",
            DropReason::JobNotFound => "job_not_found",
            DropReason::Duplicate => "duplicate",
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::Malformed(why) => write!(f, "malformed message: {why}"),
            DropReason::ForeignUrl(why) => write!(f, "job URL refused: {why}"),
            DropReason::UnsupportedLabels(l) => {
                write!(f, "labels not served by this unit: {}", l.join(","))
            }
            DropReason::RetryLimit => write!(f, "handled {RETRY_LIMIT} times without pickup"),
            DropReason::JobNotFound => write!(f, "GitHub does not know the job (404)"),
            DropReason::Duplicate => write!(f, "another worker handles the same job"),
        }
    }
}

/// What this unit serves, for [`screen`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitScope {
    /// REST API base: `https://api.github.com` or `<github-url>/api/v3`.
    pub api_base_url: String,
    pub path: GitHubPath,
    /// The labels runners register with (application, image, custom), the architecture
    /// label; the default ones are added by [`UnitScope::supports`].
    pub labels: Vec<String>,
}

impl UnitScope {
    /// Labels of `wanted` none of this unit's runners carry (case-insensitive).
    pub fn unsupported(&self, wanted: &[String]) -> Vec<String> {
        wanted
            .iter()
            .filter(|w| {
                !DEFAULT_LABELS.iter().any(|d| d.eq_ignore_ascii_case(w))
                    && !self.labels.iter().any(|l| l.eq_ignore_ascii_case(w))
            })
            .cloned()
            .collect()
    }
}

#[derive(Deserialize)]
struct Body {
    labels: Vec<String>,
    url: String,
}

/// Parses a job body: a JSON object with `labels` (strings) and `url`; unknown fields are
/// ignored. A JSON string holding that object (kombu's `application/json` of a `str`) is
/// unwrapped once.
pub fn parse_body(body: &[u8]) -> Result<(Vec<String>, String), String> {
    if body.len() > MAX_BODY_BYTES {
        return Err(format!("{} bytes, over {MAX_BODY_BYTES}", body.len()));
    }
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let value = match value {
        serde_json::Value::String(inner) => {
            serde_json::from_str(&inner).map_err(|e| format!("not JSON inside a string: {e}"))?
        }
        other => other,
    };
    let parsed: Body = serde_json::from_value(value).map_err(|e| format!("not a job body: {e}"))?;
    let labels = parsed
        .labels
        .into_iter()
        .map(|l| l.trim().to_ascii_lowercase())
        .collect();
    Ok((labels, parsed.url))
}

/// `(owner, repo, job id)` of a job URL on `scope`'s API under `/repos/<o>/<r>/actions/jobs/<id>`
/// (GitHub Enterprise Server's `/api/v3` prefix is part of the base), for this unit's path.
pub fn parse_job_url(scope: &UnitScope, raw: &str) -> Result<(String, String, u64), String> {
    let base = Url::parse(scope.api_base_url.trim_end_matches('/'))
        .map_err(|e| format!("API base unusable: {e}"))?;
    let url = Url::parse(raw).map_err(|_| "not a URL".to_string())?;
    if url.origin() != base.origin() {
        return Err(format!(
            "not on the configured GitHub API ({})",
            base.origin().ascii_serialization()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err("has a query, fragment or credentials".into());
    }
    let base_path = base.path().trim_end_matches('/');
    let rest = url
        .path()
        .strip_prefix(base_path)
        .filter(|r| r.starts_with('/'))
        .ok_or("not under the API base path")?;
    let segs: Vec<&str> = rest[1..].split('/').collect();
    let (owner, repo, id) = match segs.as_slice() {
        ["repos", owner, repo, "actions", "jobs", id] if !owner.is_empty() && !repo.is_empty() => {
            (*owner, *repo, *id)
        }
        _ => return Err("not of the form /repos/<owner>/<repo>/actions/jobs/<id>".into()),
    };
    let job_id: u64 = id
        .parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or("job id is not a number")?;
    let ours = match &scope.path {
        GitHubPath::Repo { owner: o, repo: r } => {
            o.eq_ignore_ascii_case(owner) && r.eq_ignore_ascii_case(repo)
        }
        GitHubPath::Org(org) => org.eq_ignore_ascii_case(owner),
    };
    if !ours {
        return Err(format!(
            "job of {owner}/{repo}, not of this unit's path {}",
            scope.path.display()
        ));
    }
    Ok((owner.to_string(), repo.to_string(), job_id))
}

/// First look at a leased message, before any GitHub call: drop what can never be served.
/// `process_count` = earlier handlings (`X-Process-Count`).
pub fn screen(
    scope: &UnitScope,
    body: &Result<Vec<u8>, String>,
    process_count: u32,
) -> Result<JobTarget, DropReason> {
    let body = body
        .as_ref()
        .map_err(|e| DropReason::Malformed(e.clone()))?;
    let (labels, url) = parse_body(body).map_err(DropReason::Malformed)?;
    if process_count >= RETRY_LIMIT {
        return Err(DropReason::RetryLimit);
    }
    let (owner, repo, job_id) = parse_job_url(scope, &url).map_err(DropReason::ForeignUrl)?;
    let unsupported = scope.unsupported(&labels);
    if !unsupported.is_empty() {
        return Err(DropReason::UnsupportedLabels(unsupported));
    }
    Ok(JobTarget {
        owner,
        repo,
        job_id,
        labels,
    })
}

/// A job's state as GitHub reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Queued,
    InProgress,
    Completed,
    /// `waiting` (environment approval), `pending`, `requested`, or a status this charm does
    /// not know: no runner can take it now.
    NotReady(String),
}

impl JobState {
    pub fn from_status(status: &str) -> JobState {
        match status {
            "queued" => JobState::Queued,
            "in_progress" => JobState::InProgress,
            "completed" => JobState::Completed,
            other => JobState::NotReady(other.to_string()),
        }
    }

    /// Some runner took the job (or it ended without one).
    pub fn is_picked(&self) -> bool {
        matches!(self, JobState::InProgress | JobState::Completed)
    }
}

/// The answer to `GET` the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobLookup {
    Found(JobState),
    NotFound,
    /// GitHub cannot answer now (unreachable, 5xx, rate limit, rejected token): nothing about
    /// this message is wrong. `until_epoch`: when to try again, if GitHub said.
    Unavailable {
        until_epoch: Option<u64>,
    },
    /// An answer about this job that makes no sense (403 on its repository, bad JSON).
    Refused(String),
    /// 404 on the job and on its repository: the token cannot read the repository (a private
    /// one, a token with the runner permission only), so nothing says the job is gone.
    NoAccess {
        repo: String,
    },
}

/// What to do with a message once the job was looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Ack without a runner, logged and counted as dropped.
    Drop(DropReason),
    /// Ack without a runner: some runner has the job already.
    AckPicked,
    /// Back on the queue with the process count raised, not before the epoch given.
    Requeue { not_before_epoch: u64 },
    /// Back on the queue unchanged (no handling counted); the worker pauses, holding nothing,
    /// until `resume_epoch`.
    ReleaseAndPause { resume_epoch: u64 },
    /// Create one runner and wait for the job to be picked.
    Spawn,
}

/// Pause of a worker after GitHub or LXD failed it, when nothing says how long.
pub const PAUSE_SECS: u64 = 30;
/// How long a job refused for want of room waits before a worker tries it again: room
/// comes back when a runner of the machine ends, which takes minutes.
pub const NO_ROOM_RETRY_SECS: u64 = 30;
/// Longest pause asked by a rate-limit reset.
pub const MAX_PAUSE_SECS: u64 = 3600;

/// Not-before time of a message requeued after its `process_count + 1`-th handling: the
/// next handling waits `60 * 2^(n-1)` s (n = the next handling's number), at most 1800 s.
pub fn requeue_not_before(now_epoch: u64, process_count: u32) -> u64 {
    let next_handling = process_count.saturating_add(2);
    let exp = (next_handling - 1).min(20);
    now_epoch + (BACKOFF_BASE_SECS << exp).min(BACKOFF_MAX_SECS)
}

fn pause(now_epoch: u64, until_epoch: Option<u64>) -> Decision {
    let resume = until_epoch
        .unwrap_or(now_epoch + PAUSE_SECS)
        .clamp(now_epoch + 1, now_epoch + MAX_PAUSE_SECS);
    Decision::ReleaseAndPause {
        resume_epoch: resume,
    }
}

/// Requeue, or drop when this handling was the last one allowed.
fn requeue_or_drop(now_epoch: u64, process_count: u32) -> Decision {
    if process_count + 1 >= RETRY_LIMIT {
        Decision::Drop(DropReason::RetryLimit)
    } else {
        Decision::Requeue {
            not_before_epoch: requeue_not_before(now_epoch, process_count),
        }
    }
}

/// The decision table for a screened message, given GitHub's answer about its job.
pub fn decide_on_job(lookup: &JobLookup, process_count: u32, now_epoch: u64) -> Decision {
    match lookup {
        JobLookup::Found(JobState::Queued) => Decision::Spawn,
        JobLookup::Found(state) if state.is_picked() => Decision::AckPicked,
        JobLookup::Found(_) => requeue_or_drop(now_epoch, process_count),
        JobLookup::NotFound => Decision::Drop(DropReason::JobNotFound),
        JobLookup::Unavailable { until_epoch } => pause(now_epoch, *until_epoch),
        JobLookup::Refused(_) | JobLookup::NoAccess { .. } => {
            requeue_or_drop(now_epoch, process_count)
        }
    }
}

/// How the wait for pickup after spawning a runner ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickupOutcome {
    /// The runner could not be created (LXD, image, GitHub registration).
    SpawnFailed { retry_epoch: Option<u64> },
    /// Admission refused the runner: the machine holds no more now.
    NoRoom,
    /// The job runs (or ran) on this worker's runner.
    PickedByOurs,
    /// Another runner took it; ours is idle.
    PickedByOther,
    /// Still not picked at the bound (`waiting` states included).
    NotPicked,
    /// GitHub no longer knows the job.
    JobGone,
    /// The job is still queued but our runner took another job (GitHub hands a queued job
    /// to any idle runner with matching labels): ours serves that job now.
    CrossedOver,
    /// The job is still queued and our runner is gone (an ephemeral runner ends after the
    /// job it took, whoever's it was; or it crashed): another runner is needed at once.
    RunnerGone,
}

/// What to do with the message and the runner after the wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Ack; the runner runs the job and the worker waits until it is gone.
    AckKeepRunner,
    /// Ack and remove our unused runner.
    AckRemoveRunner,
    /// Requeue (count + 1, not before) and remove the unused runner.
    RequeueRemoveRunner { not_before_epoch: u64 },
    /// Drop (ack, counted) and remove the unused runner.
    DropRemoveRunner(DropReason),
    /// No runner exists; release unchanged and pause the worker.
    ReleaseAndPause { resume_epoch: u64 },
    /// No runner exists (no room on the machine); back on the queue with its count unchanged
    /// (waiting for room is no handling: it is never dropped for it), not before the epoch.
    Defer { not_before_epoch: u64 },
    /// Release unchanged (served next, no handling counted: nothing was wrong with it) and
    /// leave the runner to the job it took; the next handling makes a runner for this job.
    ReleaseKeepRunner,
}

pub fn settle_after_wait(
    outcome: &PickupOutcome,
    process_count: u32,
    now_epoch: u64,
) -> Settlement {
    match outcome {
        PickupOutcome::SpawnFailed { retry_epoch } => match pause(now_epoch, *retry_epoch) {
            Decision::ReleaseAndPause { resume_epoch } => {
                Settlement::ReleaseAndPause { resume_epoch }
            }
            // pause() only makes ReleaseAndPause.
            _ => Settlement::ReleaseAndPause {
                resume_epoch: now_epoch + PAUSE_SECS,
            },
        },
        PickupOutcome::NoRoom => Settlement::Defer {
            not_before_epoch: now_epoch + NO_ROOM_RETRY_SECS,
        },
        PickupOutcome::PickedByOurs => Settlement::AckKeepRunner,
        PickupOutcome::PickedByOther => Settlement::AckRemoveRunner,
        PickupOutcome::NotPicked => match requeue_or_drop(now_epoch, process_count) {
            Decision::Requeue { not_before_epoch } => {
                Settlement::RequeueRemoveRunner { not_before_epoch }
            }
            _ => Settlement::DropRemoveRunner(DropReason::RetryLimit),
        },
        PickupOutcome::JobGone => Settlement::DropRemoveRunner(DropReason::JobNotFound),
        PickupOutcome::CrossedOver => Settlement::ReleaseKeepRunner,
        // Counted (a runner that keeps crashing must not loop forever), without a backoff.
        PickupOutcome::RunnerGone => match requeue_or_drop(now_epoch, process_count) {
            Decision::Requeue { .. } => Settlement::RequeueRemoveRunner {
                not_before_epoch: now_epoch,
            },
            _ => Settlement::DropRemoveRunner(DropReason::RetryLimit),
        },
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
