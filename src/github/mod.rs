//! What the runner manager needs from GitHub, as a trait, plus the shared types.
//!
//! The ureq implementation lives in `client`; tests run it against the fake in
//! `tests/support/fake_github`. Around it: `classify` (what an answer means), `retry` (pure
//! retry decisions), `calls` (per-endpoint counters), `proxy` (JUJU_CHARM_* proxies),
//! `download` (the verified runner tarball) and `status` (errors -> unit status).

use crate::secret::Secret;

pub mod calls;
pub mod classify;
pub mod client;
pub mod download;
pub mod outcomes;
pub mod proxy;
pub mod retry;
pub mod status;

pub use client::{ClientSettings, ClientSetupError, GitHubClient};

/// Where runners are registered: a repository (`owner/repo`) or an organisation (`org`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitHubPath {
    Repo { owner: String, repo: String },
    Org(String),
}

impl GitHubPath {
    /// `owner/repo` or `org`, as in the `path` config option.
    pub fn display(&self) -> String {
        match self {
            GitHubPath::Repo { owner, repo } => format!("{owner}/{repo}"),
            GitHubPath::Org(org) => org.clone(),
        }
    }

    /// Whether `full_name` (`owner/repo`, as a runner reports it) is this repository or a
    /// repository of this organisation. A runner's report is the job's to write: anything
    /// else (another owner, extra path segments, `..`, odd characters) must never reach a
    /// GitHub request made with the charm's token. GitHub names compare case-insensitively.
    pub fn contains_repository(&self, full_name: &str) -> bool {
        let Some((owner, repo)) = full_name.split_once('/') else {
            return false;
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        if !name_ok(owner) || !name_ok(repo) {
            return false;
        }
        match self {
            GitHubPath::Repo { owner: o, repo: r } => {
                o.eq_ignore_ascii_case(owner) && r.eq_ignore_ascii_case(repo)
            }
            GitHubPath::Org(org) => org.eq_ignore_ascii_case(owner),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerOnline {
    Online,
    Offline,
}

/// A self-hosted runner as GitHub lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitHubRunner {
    pub id: u64,
    pub name: String,
    pub status: RunnerOnline,
    pub busy: bool,
    pub labels: Vec<String>,
}

/// Answer of generate-jitconfig: the registration made and the config `run.sh --jitconfig` takes.
#[derive(Debug, Clone)]
pub struct JitConfig {
    pub runner: GitHubRunner,
    pub encoded_jit_config: Secret,
}

/// Result of deleting a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    /// 404: someone (GitHub, for an ephemeral runner that finished) removed it already.
    AlreadyGone,
    /// 422: the runner is running a job; retry later.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X64,
    Arm64,
}

impl Arch {
    /// The host's architecture, or None on one GitHub ships no runner for.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X64),
            "aarch64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The name GitHub's downloads API uses.
    pub fn github_name(self) -> &'static str {
        match self {
            Arch::X64 => "x64",
            Arch::Arm64 => "arm64",
        }
    }
}

/// One entry of the runner downloads list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerApplication {
    pub os: String,
    pub architecture: String,
    pub download_url: String,
    pub filename: String,
    pub sha256_checksum: Option<String>,
    /// A short-lived bearer token the download needs (GitHub Enterprise Server hosting the
    /// runner itself); none for the public release URLs.
    pub temp_download_token: Option<Secret>,
}

/// A workflow job, by id or by its API URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobRef {
    Id {
        owner: String,
        repo: String,
        job_id: u64,
    },
    ApiUrl(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowJob {
    pub id: u64,
    pub run_id: u64,
    pub status: String,
    pub conclusion: Option<String>,
    pub runner_name: Option<String>,
    pub labels: Vec<String>,
    pub created_at: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub workflow_name: Option<String>,
}

/// Errors an operator can act on. Messages carry method, path and status, never a token.
#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("GitHub rejected the token (401 on {method} {path}): it is invalid or expired; set a new one with `juju config <app> token=<token>`")]
    Unauthorized { method: String, path: String },
    #[error("GitHub denied {method} {path} (403): the token lacks permission; {needed}")]
    Forbidden {
        method: String,
        path: String,
        needed: String,
    },
    #[error("{}", crate::messages::rate_limited_on(method, path, *reset_epoch))]
    RateLimited {
        method: String,
        path: String,
        reset_epoch: u64,
    },
    #[error(
        "GitHub answered 404 for {method} {path}: the path is wrong or not visible to the token"
    )]
    NotFound { method: String, path: String },
    #[error("GitHub answered 409 (conflict) for {method} {path}: {message}")]
    Conflict {
        method: String,
        path: String,
        message: String,
    },
    #[error("GitHub answered 422 for {method} {path}: {message}")]
    Unprocessable {
        method: String,
        path: String,
        message: String,
    },
    #[error("GitHub server error {status} on {method} {path}")]
    Server {
        method: String,
        path: String,
        status: u16,
    },
    #[error("could not reach GitHub for {method} {path}: {reason}")]
    Transport {
        method: String,
        path: String,
        reason: String,
    },
    #[error("runner group {group:?} does not exist in organisation {org}; set `group` to an existing group")]
    GroupNotFound { org: String, group: String },
    /// The credential itself is unusable (a GitHub App whose key or installation GitHub
    /// refuses, a key that does not parse, an unreadable credential file).
    #[error("{message}")]
    Credential { message: String },
    #[error("unexpected answer from GitHub for {method} {path}: {reason}")]
    Protocol {
        method: String,
        path: String,
        reason: String,
    },
}

/// What the runner manager needs from GitHub. `Sync` so the executor can share one client
/// across its worker threads.
pub trait GitHub: Send + Sync {
    /// All of this unit's runners (every page), filtered by [`crate::identity::UnitIdentity::owns_name`].
    fn list_runners(&self) -> Result<Vec<GitHubRunner>, GitHubError>;
    /// The registrations named as the Python charm named this unit's runners
    /// ([`crate::legacy::is_old_runner_name`]). A client that cannot tell answers an error, so
    /// no running old runner is ever taken for idle.
    fn list_old_runners(&self) -> Result<Vec<GitHubRunner>, GitHubError> {
        Err(GitHubError::Protocol {
            method: "GET".into(),
            path: "actions/runners".into(),
            reason: "this client does not list the Python charm's runners".into(),
        })
    }
    fn get_runner(&self, id: u64) -> Result<Option<GitHubRunner>, GitHubError>;
    fn delete_runner(&self, id: u64) -> Result<DeleteOutcome, GitHubError>;
    fn registration_token(&self) -> Result<Secret, GitHubError>;
    fn remove_token(&self) -> Result<Secret, GitHubError>;
    /// Register `name` with exactly `labels` and return the JIT config to start it with.
    fn generate_jit_config(&self, name: &str, labels: &[String]) -> Result<JitConfig, GitHubError>;
    /// The linux runner application for `arch`.
    fn runner_application(&self, arch: Arch) -> Result<RunnerApplication, GitHubError>;
    fn get_job(&self, job: &JobRef) -> Result<WorkflowJob, GitHubError>;
    /// Whether the token can see repository `owner/repo` (`GET /repos/{owner}/{repo}`: 200
    /// true, 404 false). Tells a job GitHub does not know from a repository the token cannot
    /// read, which GitHub answers with the same 404.
    fn repository_visible(&self, owner: &str, repo: &str) -> Result<bool, GitHubError>;
    /// The jobs of the latest attempt of workflow run `run_id` in `repo` (`owner/repo`),
    /// every page.
    fn list_run_jobs(&self, repo: &str, run_id: u64) -> Result<Vec<WorkflowJob>, GitHubError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_repository_must_lie_inside_the_configured_path() {
        let org = GitHubPath::Org("Octo".into());
        let repo = GitHubPath::Repo {
            owner: "octo".into(),
            repo: "hello".into(),
        };
        for inside in ["octo/hello", "OCTO/Hello", "octo/a.b-c_d"] {
            assert!(org.contains_repository(inside), "{inside}");
        }
        assert!(repo.contains_repository("Octo/HELLO"));
        for outside in [
            "octo/other",
            "evil/hello",
            "octox/hello",
            "octo/hello/../../evil/x",
            "octo/..",
            "octo/",
            "octo",
            "",
            "octo/he llo",
            "octo/hello?x=1",
        ] {
            assert!(!repo.contains_repository(outside), "{outside}");
        }
        for outside in ["evil/x", "octo/../evil", "octo/x/y", "octo/%2e%2e"] {
            assert!(!org.contains_repository(outside), "{outside}");
        }
    }
}
