//! A minimal [`GitHub`] over the fake GitHub's REST API: only what runner creation and
//! removal call (generate-jitconfig, delete runner). Stands in until the real
//! `github::GitHubClient` lands on this branch; the fake is the real HTTP server either way.

use github_runner::github::{
    Arch, DeleteOutcome, GitHub, GitHubError, GitHubRunner, JitConfig, JobRef, RunnerApplication,
    RunnerOnline, WorkflowJob,
};
use github_runner::secret::Secret;
use std::time::Duration;

pub struct ShimGitHub {
    /// `<api base>/repos/<owner>/<repo>`.
    pub base: String,
    pub token: Secret,
    agent: ureq::Agent,
}

impl ShimGitHub {
    pub fn new(api_base: &str, repo_path: &str, token: &str) -> Self {
        ShimGitHub {
            base: format!("{api_base}/repos/{repo_path}"),
            token: Secret::new(token),
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(30))
                .build(),
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<ureq::Response, (u16, String)> {
        let req = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set("User-Agent", "github-runner-tests")
            .set("Authorization", &format!("Bearer {}", self.token.expose()));
        let res = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match res {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, r)) => Err((code, r.into_string().unwrap_or_default())),
            Err(e) => Err((0, e.to_string())),
        }
    }
}

fn err(method: &str, path: &str, (status, message): (u16, String)) -> GitHubError {
    let (method, path) = (method.to_string(), path.to_string());
    match status {
        404 => GitHubError::NotFound { method, path },
        409 => GitHubError::Conflict {
            method,
            path,
            message,
        },
        422 => GitHubError::Unprocessable {
            method,
            path,
            message,
        },
        0 => GitHubError::Transport {
            method,
            path,
            reason: message,
        },
        s => GitHubError::Server {
            method,
            path,
            status: s,
        },
    }
}

fn unsupported(what: &str) -> GitHubError {
    GitHubError::Protocol {
        method: "-".into(),
        path: what.into(),
        reason: "not needed by the LXD tests".into(),
    }
}

impl GitHub for ShimGitHub {
    fn list_runners(&self) -> Result<Vec<GitHubRunner>, GitHubError> {
        Err(unsupported("list_runners"))
    }
    fn get_runner(&self, _id: u64) -> Result<Option<GitHubRunner>, GitHubError> {
        Err(unsupported("get_runner"))
    }
    fn delete_runner(&self, id: u64) -> Result<DeleteOutcome, GitHubError> {
        let path = format!("/actions/runners/{id}");
        match self.call("DELETE", &path, None) {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err((404, _)) => Ok(DeleteOutcome::AlreadyGone),
            Err((422, _)) => Ok(DeleteOutcome::Busy),
            Err(e) => Err(err("DELETE", &path, e)),
        }
    }
    fn registration_token(&self) -> Result<Secret, GitHubError> {
        Err(unsupported("registration_token"))
    }
    fn remove_token(&self) -> Result<Secret, GitHubError> {
        Err(unsupported("remove_token"))
    }
    fn generate_jit_config(&self, name: &str, labels: &[String]) -> Result<JitConfig, GitHubError> {
        let path = "/actions/runners/generate-jitconfig";
        let body = serde_json::json!({"name": name, "runner_group_id": 1, "labels": labels});
        let res = self
            .call("POST", path, Some(body))
            .map_err(|e| err("POST", path, e))?;
        let v: serde_json::Value = res.into_json().map_err(|e| GitHubError::Protocol {
            method: "POST".into(),
            path: path.into(),
            reason: e.to_string(),
        })?;
        let runner = &v["runner"];
        Ok(JitConfig {
            runner: GitHubRunner {
                id: runner["id"].as_u64().unwrap_or_default(),
                name: runner["name"].as_str().unwrap_or_default().to_string(),
                status: RunnerOnline::Offline,
                busy: false,
                labels: labels.to_vec(),
            },
            encoded_jit_config: Secret::new(v["encoded_jit_config"].as_str().unwrap_or_default()),
        })
    }
    fn runner_application(&self, _arch: Arch) -> Result<RunnerApplication, GitHubError> {
        Err(unsupported("runner_application"))
    }
    fn get_job(&self, _job: &JobRef) -> Result<WorkflowJob, GitHubError> {
        Err(unsupported("get_job"))
    }
}
