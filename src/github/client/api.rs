//! The [`GitHub`] trait over the transport: runners, tokens, JIT configurations, the runner
//! application, jobs.

use super::wire::{
    AppJson, GroupList, JitJson, JobJson, JobList, RunnerJson, RunnerList, TokenJson,
};
use super::{GitHubClient, MAX_LISTINGS, PER_PAGE};
use crate::github::calls::ApiCall;
use crate::github::{
    Arch, DeleteOutcome, GitHub, GitHubError, GitHubPath, GitHubRunner, JitConfig, JobRef,
    RunnerApplication, WorkflowJob,
};
use crate::secret::Secret;
use serde_json::json;
use std::sync::PoisonError;
use url::Url;

impl GitHubClient {
    /// The org's runner group id for the `group` option (cached); 1 for repos.
    fn runner_group_id(&self) -> Result<u64, GitHubError> {
        let org = match &self.settings.path {
            GitHubPath::Repo { .. } => return Ok(1),
            GitHubPath::Org(org) => org,
        };
        let mut cached = self.group_id.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = *cached {
            return Ok(id);
        }
        let mut url = self.scope_url(&["actions", "runner-groups"]);
        url.query_pairs_mut().append_pair("per_page", PER_PAGE);
        let groups = self.get_all_pages(ApiCall::ListRunnerGroups, url, |p: GroupList| {
            p.runner_groups
        })?;
        let wanted = self.settings.group.trim();
        let id = groups
            .iter()
            .find(|g| g.name.eq_ignore_ascii_case(wanted))
            .map(|g| g.id)
            .ok_or_else(|| GitHubError::GroupNotFound {
                org: org.clone(),
                group: wanted.to_string(),
            })?;
        *cached = Some(id);
        Ok(id)
    }

    /// The API URL of a job, rebuilt from its parts: a URL from a webhook or a queue must
    /// not make the client send the token to another server.
    fn job_url(&self, job: &JobRef) -> Result<Url, GitHubError> {
        match job {
            JobRef::Id {
                owner,
                repo,
                job_id,
            } => Ok(self.api_url(&["repos", owner, repo, "actions", "jobs", &job_id.to_string()])),
            JobRef::ApiUrl(raw) => {
                let reject = |reason: &str| GitHubError::Protocol {
                    method: "GET".into(),
                    path: Url::parse(raw)
                        .map(|u| u.path().to_string())
                        .unwrap_or_else(|_| "<unparsable job URL>".into()),
                    reason: reason.to_string(),
                };
                let url = Url::parse(raw).map_err(|_| reject("job URL is not a URL"))?;
                if url.origin() != self.base.origin() {
                    return Err(reject("job URL is not on this GitHub's API server"));
                }
                let base_path = self.base.path().trim_end_matches('/');
                let rest = url
                    .path()
                    .strip_prefix(base_path)
                    .ok_or_else(|| reject("job URL is not under the API base"))?;
                let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
                match segs.as_slice() {
                    ["repos", owner, repo, "actions", "jobs", id]
                        if !owner.is_empty() && !repo.is_empty() && id.parse::<u64>().is_ok() =>
                    {
                        Ok(self.api_url(&["repos", owner, repo, "actions", "jobs", id]))
                    }
                    _ => Err(reject(
                        "job URL is not of the form <api>/repos/{owner}/{repo}/actions/jobs/{id}",
                    )),
                }
            }
        }
    }
}

impl GitHubClient {
    /// The registrations whose name `keep` accepts ([`GitHub::list_runners`]).
    fn list_named(&self, keep: impl Fn(&str) -> bool) -> Result<Vec<GitHubRunner>, GitHubError> {
        let mut url = self.scope_url(&["actions", "runners"]);
        url.query_pairs_mut().append_pair("per_page", PER_PAGE);
        let mut by_id = std::collections::BTreeMap::new();
        for attempt in 1..=MAX_LISTINGS {
            let mut totals = Vec::new();
            let runners =
                self.get_all_pages(ApiCall::ListRunners, url.clone(), |page: RunnerList| {
                    totals.push(page.total_count);
                    page.runners
                })?;
            let settled = totals.windows(2).all(|w| w[0] == w[1]);
            if settled {
                // Only this read: an earlier one may hold registrations deleted since.
                by_id.clear();
            }
            // An insertion between pages shifts entries forward: the same id twice. A later
            // read of a runner replaces an earlier one.
            for r in runners.into_iter().filter(|r| keep(&r.name)) {
                by_id.insert(r.id, r);
            }
            if settled {
                break;
            }
            tracing::debug!(
                attempt,
                ?totals,
                "runner count changed during the listing; listing again"
            );
        }
        Ok(by_id.into_values().map(GitHubRunner::from).collect())
    }
}

impl GitHub for GitHubClient {
    /// Every page, re-read from the start when `total_count` moved between pages: a
    /// registration deleted (anyone's, in the whole scope) while the listing is between
    /// pages shifts every later entry one place back, so the first entry of the next page
    /// was on the page already read and is skipped. The first settled read is the answer;
    /// after [`MAX_LISTINGS`] unsettled reads the union of them is returned: listing a gone runner costs a round, missing a live one
    /// could kill its job. A deletion and an addition between the same two pages keep the
    /// count and still shift; the manager confirms any runner a listing lacks with
    /// [`GitHub::get_runner`] before removing it.
    fn list_runners(&self) -> Result<Vec<GitHubRunner>, GitHubError> {
        let identity = &self.settings.identity;
        self.list_named(|name| identity.owns_name(name))
    }

    fn list_old_runners(&self) -> Result<Vec<GitHubRunner>, GitHubError> {
        let identity = &self.settings.identity;
        self.list_named(|name| crate::legacy::is_old_runner_name(identity, name))
    }

    fn get_runner(&self, id: u64) -> Result<Option<GitHubRunner>, GitHubError> {
        let url = self.scope_url(&["actions", "runners", &id.to_string()]);
        match self.send(ApiCall::GetRunner, "GET", &url, None) {
            Ok(reply) => Ok(Some(self.parse::<RunnerJson>(&reply, "GET", &url)?.into())),
            Err(GitHubError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn delete_runner(&self, id: u64) -> Result<DeleteOutcome, GitHubError> {
        let url = self.scope_url(&["actions", "runners", &id.to_string()]);
        match self.send(ApiCall::DeleteRunner, "DELETE", &url, None) {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(GitHubError::NotFound { .. }) => Ok(DeleteOutcome::AlreadyGone),
            Err(GitHubError::Unprocessable { .. }) => Ok(DeleteOutcome::Busy),
            Err(e) => Err(e),
        }
    }

    fn registration_token(&self) -> Result<Secret, GitHubError> {
        let url = self.scope_url(&["actions", "runners", "registration-token"]);
        let reply = self.send(ApiCall::RegistrationToken, "POST", &url, None)?;
        Ok(Secret::new(
            self.parse::<TokenJson>(&reply, "POST", &url)?.token,
        ))
    }

    fn remove_token(&self) -> Result<Secret, GitHubError> {
        let url = self.scope_url(&["actions", "runners", "remove-token"]);
        let reply = self.send(ApiCall::RemoveToken, "POST", &url, None)?;
        Ok(Secret::new(
            self.parse::<TokenJson>(&reply, "POST", &url)?.token,
        ))
    }

    /// A retry after a timeout may find the first attempt registered the name: that answers
    /// 409 (Conflict) and the registration is an offline orphan the manager deletes.
    fn generate_jit_config(&self, name: &str, labels: &[String]) -> Result<JitConfig, GitHubError> {
        let group_id = self.runner_group_id()?;
        let url = self.scope_url(&["actions", "runners", "generate-jitconfig"]);
        let body = json!({
            "name": name,
            "runner_group_id": group_id,
            "labels": labels,
            "work_folder": "_work",
        });
        let reply = self.send(ApiCall::GenerateJitConfig, "POST", &url, Some(&body))?;
        let jit: JitJson = self.parse(&reply, "POST", &url)?;
        Ok(JitConfig {
            runner: jit.runner.into(),
            encoded_jit_config: Secret::new(jit.encoded_jit_config),
        })
    }

    fn runner_application(&self, arch: Arch) -> Result<RunnerApplication, GitHubError> {
        let url = self.scope_url(&["actions", "runners", "downloads"]);
        let reply = self.send(ApiCall::ListRunnerApplications, "GET", &url, None)?;
        let apps: Vec<AppJson> = self.parse(&reply, "GET", &url)?;
        apps.into_iter()
            .find(|a| a.os == "linux" && a.architecture == arch.github_name())
            .map(|a| RunnerApplication {
                os: a.os,
                architecture: a.architecture,
                download_url: a.download_url,
                filename: a.filename,
                sha256_checksum: a.sha256_checksum.filter(|c| !c.trim().is_empty()),
                temp_download_token: a
                    .temp_download_token
                    .filter(|t| !t.is_empty())
                    .map(Secret::new),
            })
            .ok_or_else(|| GitHubError::Protocol {
                method: "GET".into(),
                path: url.path().to_string(),
                reason: format!(
                    "the downloads list has no linux {} runner",
                    arch.github_name()
                ),
            })
    }

    fn get_job(&self, job: &JobRef) -> Result<WorkflowJob, GitHubError> {
        let url = self.job_url(job)?;
        let reply = self.send(ApiCall::GetJob, "GET", &url, None)?;
        Ok(self.parse::<JobJson>(&reply, "GET", &url)?.into())
    }

    fn repository_visible(&self, owner: &str, repo: &str) -> Result<bool, GitHubError> {
        let url = self.api_url(&["repos", owner, repo]);
        match self.send(ApiCall::GetRepository, "GET", &url, None) {
            Ok(_) => Ok(true),
            Err(GitHubError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn list_run_jobs(&self, repo: &str, run_id: u64) -> Result<Vec<WorkflowJob>, GitHubError> {
        // The repository comes from inside a runner (its job's GITHUB_REPOSITORY): only a
        // plain owner/repo pair may become part of a URL that carries the token.
        let (owner, name) = plain_repo(repo).ok_or_else(|| GitHubError::Protocol {
            method: "GET".into(),
            path: "/repos/<owner>/<repo>/actions/runs/<id>/jobs".into(),
            reason: format!("{repo:?} is not an owner/repo name"),
        })?;
        let run = run_id.to_string();
        let mut url = self.api_url(&["repos", owner, name, "actions", "runs", &run, "jobs"]);
        url.query_pairs_mut().append_pair("per_page", PER_PAGE);
        self.get_all_pages(ApiCall::ListRunJobs, url, |page: JobList| {
            page.jobs.into_iter().map(WorkflowJob::from).collect()
        })
    }
}

/// `owner/repo` split in two, when both are GitHub names (letters, digits, `-`, `_`, `.`).
fn plain_repo(repo: &str) -> Option<(&str, &str)> {
    let (owner, name) = repo.split_once('/')?;
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (plain(owner) && plain(name)).then_some((owner, name))
}
