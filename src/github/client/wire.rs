//! The JSON shapes GitHub answers with: tolerant of unknown fields and of null or missing
//! optional ones.

use crate::github::{GitHubRunner, RunnerOnline, WorkflowJob};
use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct LabelJson {
    pub(super) name: String,
}

#[derive(Deserialize)]
pub(super) struct RunnerJson {
    pub(super) id: u64,
    pub(super) name: String,
    #[serde(default)]
    pub(super) status: Option<String>,
    #[serde(default)]
    pub(super) busy: Option<bool>,
    #[serde(default)]
    pub(super) labels: Option<Vec<LabelJson>>,
}

impl From<RunnerJson> for GitHubRunner {
    fn from(r: RunnerJson) -> Self {
        GitHubRunner {
            id: r.id,
            name: r.name,
            status: if r.status.as_deref() == Some("online") {
                RunnerOnline::Online
            } else {
                RunnerOnline::Offline
            },
            busy: r.busy.unwrap_or(false),
            labels: r
                .labels
                .unwrap_or_default()
                .into_iter()
                .map(|l| l.name)
                .collect(),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct RunnerList {
    /// Registrations in the whole scope at the time of this page.
    #[serde(default)]
    pub(super) total_count: Option<u64>,
    pub(super) runners: Vec<RunnerJson>,
}

#[derive(Deserialize)]
pub(super) struct GroupJson {
    pub(super) id: u64,
    pub(super) name: String,
}

#[derive(Deserialize)]
pub(super) struct GroupList {
    pub(super) runner_groups: Vec<GroupJson>,
}

#[derive(Deserialize)]
pub(super) struct TokenJson {
    pub(super) token: String,
}

#[derive(Deserialize)]
pub(super) struct JitJson {
    pub(super) runner: RunnerJson,
    pub(super) encoded_jit_config: String,
}

#[derive(Deserialize)]
pub(super) struct AppJson {
    pub(super) os: String,
    pub(super) architecture: String,
    pub(super) download_url: String,
    pub(super) filename: String,
    #[serde(default)]
    pub(super) sha256_checksum: Option<String>,
    #[serde(default)]
    pub(super) temp_download_token: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct JobList {
    pub(super) jobs: Vec<JobJson>,
}

impl From<JobJson> for WorkflowJob {
    fn from(j: JobJson) -> Self {
        WorkflowJob {
            id: j.id,
            run_id: j.run_id,
            status: j.status,
            conclusion: j.conclusion,
            runner_name: j.runner_name,
            labels: j.labels,
            created_at: j.created_at,
            started_at: j.started_at,
            completed_at: j.completed_at,
            workflow_name: j.workflow_name,
        }
    }
}

#[derive(Deserialize)]
pub(super) struct JobJson {
    pub(super) id: u64,
    pub(super) run_id: u64,
    pub(super) status: String,
    #[serde(default)]
    pub(super) conclusion: Option<String>,
    #[serde(default)]
    pub(super) runner_name: Option<String>,
    #[serde(default)]
    pub(super) labels: Vec<String>,
    #[serde(default)]
    pub(super) created_at: Option<String>,
    #[serde(default)]
    pub(super) started_at: Option<String>,
    #[serde(default)]
    pub(super) completed_at: Option<String>,
    #[serde(default)]
    pub(super) workflow_name: Option<String>,
}
