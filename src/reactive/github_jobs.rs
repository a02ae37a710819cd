//! [`JobSource`] over the GitHub client: a job's state by owner, repository and id, telling a
//! job GitHub does not know from a repository the token cannot read (GitHub answers both with
//! 404), and the rate-limit budget the process's last answer reported (for the pickup pace).

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use super::job::{JobLookup, JobState, JobTarget};
use super::worker::JobSource;
use crate::github::outcomes::{process_outcomes, RateLimit};
use crate::github::{GitHub, GitHubError, JobRef};

/// Never the message's URL as given: the token goes only to the configured API.
pub struct GitHubJobs<'a> {
    github: &'a dyn GitHub,
    /// Repositories the token was seen to read (one `GET /repos/{owner}/{repo}` each per
    /// worker): a 404 on their jobs means the job is gone. A repository found unreadable is
    /// asked again at its next 404, so a permission granted later is seen without a restart.
    readable: Mutex<BTreeSet<(String, String)>>,
}

impl<'a> GitHubJobs<'a> {
    pub fn new(github: &'a dyn GitHub) -> Self {
        GitHubJobs {
            github,
            readable: Mutex::new(BTreeSet::new()),
        }
    }

    /// The job answered 404: gone, or in a repository the token cannot read.
    fn not_found(&self, job: &JobTarget) -> JobLookup {
        let key = (job.owner.clone(), job.repo.clone());
        let known = self
            .readable
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&key);
        if known {
            return JobLookup::NotFound;
        }
        match self.github.repository_visible(&job.owner, &job.repo) {
            Ok(true) => {
                self.readable
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(key);
                JobLookup::NotFound
            }
            Ok(false) => JobLookup::NoAccess {
                repo: format!("{}/{}", job.owner, job.repo),
            },
            Err(e) => lookup_error(&e),
        }
    }
}

impl JobSource for GitHubJobs<'_> {
    fn lookup(&self, job: &JobTarget) -> (JobLookup, Option<String>) {
        let job_ref = JobRef::Id {
            owner: job.owner.clone(),
            repo: job.repo.clone(),
            job_id: job.job_id,
        };
        match self.github.get_job(&job_ref) {
            Ok(j) => (
                JobLookup::Found(JobState::from_status(&j.status)),
                j.runner_name,
            ),
            Err(GitHubError::NotFound { .. }) => (self.not_found(job), None),
            Err(e) => (lookup_error(&e), None),
        }
    }

    fn budget(&self) -> Option<RateLimit> {
        process_outcomes().rate_limit()
    }
}

/// A failed job lookup in the decision table's terms.
pub fn lookup_error(e: &GitHubError) -> JobLookup {
    match e {
        GitHubError::NotFound { .. } => JobLookup::NotFound,
        GitHubError::RateLimited { reset_epoch, .. } => JobLookup::Unavailable {
            until_epoch: Some(*reset_epoch),
        },
        GitHubError::Transport { .. }
        | GitHubError::Server { .. }
        | GitHubError::Unauthorized { .. }
        | GitHubError::Credential { .. } => JobLookup::Unavailable { until_epoch: None },
        other => JobLookup::Refused(other.to_string()),
    }
}
