//! The fake service's model: tokens, scale sets, sessions, the message queue of each
//! scale set, jobs and runner registrations. Every change goes through [`Shared::update`],
//! which wakes long polls and test waits.

use base64::Engine;
use github_runner::clock::Clock;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Most job messages in one queue message (as the service).
pub const MAX_JOBS_PER_MESSAGE: usize = 50;
/// Re-assignments of a job no runner took before it stays cancelled.
pub const MAX_ASSIGNMENT_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    RegistrationToken,
    RunnerRegistration,
    GetRunnerGroup,
    GetScaleSetByName,
    GetScaleSet,
    CreateScaleSet,
    UpdateScaleSet,
    DeleteScaleSet,
    CreateSession,
    RefreshSession,
    DeleteSession,
    GetMessage,
    DeleteMessage,
    AcquireJobs,
    GenerateJitConfig,
    GetRunner,
    ListRunners,
    DeleteRunner,
    /// The runner side (`runner_side`): a fake runner in a container.
    RunnerOnline,
    RunnerWaitJob,
    RunnerDone,
    Other,
}

/// A one-shot answer instead of the real one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// JSON `{"typeName", "message"}` with `status`.
    Status {
        status: u16,
        type_name: String,
        message: String,
    },
    /// A text/plain error body.
    Text { status: u16, text: String },
    /// 429 with `Retry-After: secs`.
    TooManyRequests { retry_after_secs: u64 },
    /// 200 with an empty body.
    EmptyOk,
    /// Session create answers without a `messageQueueUrl`.
    EmptyQueueUrl,
}

/// Casing of every key the fake answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCase {
    AsIs,
    /// `MessageId`, `RunnerScaleSet`, ...
    Pascal,
    /// `MESSAGEID`, ...
    Upper,
}

#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub endpoint: Endpoint,
    pub method: String,
    pub path: String,
    pub query: String,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn query_param(&self, name: &str) -> Option<String> {
        super::http::query_pairs(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

#[derive(Debug, Clone)]
pub struct FakeScaleSetRecord {
    pub id: u64,
    pub name: String,
    pub group_id: u64,
    pub labels: Vec<String>,
    /// Messages delivered or ready, not yet deleted (redelivered until they are).
    pub messages: Vec<(i64, Vec<Value>)>,
    /// Job messages not yet in a message.
    pub pending: Vec<Value>,
    /// The last `X-ScaleSetMaxCapacity` a poll sent.
    pub max_capacity: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct FakeSession {
    pub id: String,
    pub scale_set_id: u64,
    pub owner: String,
    pub queue_token: String,
    /// Last create, refresh or poll (clock epoch): a session idle past the stale expiry
    /// yields to a new create.
    pub last_seen: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Queued,
    /// Offered to a scale set as JobAvailable (GHES), waiting for acquisition.
    Available(u64),
    Assigned(u64),
    Running {
        scale_set_id: u64,
        runner_id: u64,
    },
    Completed(String),
}

#[derive(Debug, Clone)]
pub struct FakeJob {
    pub id: String,
    pub runner_request_id: i64,
    pub labels: Vec<String>,
    pub state: JobState,
    pub attempts: u32,
}

#[derive(Debug, Clone)]
pub struct FakeRunner {
    pub id: u64,
    pub name: String,
    pub scale_set_id: u64,
    pub online: bool,
    pub busy: bool,
    /// The fake runner's key in its JIT config (empty: a real-shaped JIT config).
    pub key: String,
}

pub struct State {
    pub base_url: String,
    /// The credential the REST side accepts (`Bearer`).
    pub pat: String,
    pub registration_tokens: Vec<String>,
    /// Admin token -> exp.
    pub admin_tokens: BTreeMap<String, u64>,
    /// Queue token -> (session id, exp).
    pub queue_tokens: BTreeMap<String, (String, u64)>,
    pub admin_token_lifetime: u64,
    pub queue_token_lifetime: u64,
    pub poll_timeout: Duration,
    pub stale_session_after: Option<u64>,
    pub ghes_mode: bool,
    /// JIT configs for the fake runner (`runner_side`) instead of real-shaped ones.
    pub fake_runners: bool,
    pub zero_runner_request_ids: bool,
    pub bom: bool,
    pub key_case: KeyCase,
    pub groups: Vec<(u64, String)>,
    pub scale_sets: BTreeMap<u64, FakeScaleSetRecord>,
    pub sessions: BTreeMap<String, FakeSession>,
    pub jobs: BTreeMap<String, FakeJob>,
    pub runners: BTreeMap<u64, FakeRunner>,
    pub faults: Vec<(Endpoint, Fault)>,
    pub requests: Vec<RecordedRequest>,
    /// When each fake runner first said it is online (runner id, when), in order.
    pub came_online: Vec<(u64, std::time::Instant)>,
    /// Polls holding a connection now.
    pub polls_waiting: u32,
    pub next_id: u64,
    pub next_message_id: i64,
    pub stopping: bool,
    pub clock: Arc<dyn Clock>,
}

impl State {
    pub fn new(clock: Arc<dyn Clock>) -> State {
        State {
            base_url: String::new(),
            pat: String::new(),
            registration_tokens: Vec::new(),
            admin_tokens: BTreeMap::new(),
            queue_tokens: BTreeMap::new(),
            admin_token_lifetime: 3600,
            queue_token_lifetime: 3600,
            poll_timeout: Duration::from_secs(2),
            stale_session_after: None,
            ghes_mode: false,
            fake_runners: false,
            zero_runner_request_ids: false,
            bom: false,
            key_case: KeyCase::AsIs,
            groups: vec![(1, "Default".into())],
            scale_sets: BTreeMap::new(),
            sessions: BTreeMap::new(),
            jobs: BTreeMap::new(),
            runners: BTreeMap::new(),
            faults: Vec::new(),
            requests: Vec::new(),
            came_online: Vec::new(),
            polls_waiting: 0,
            next_id: 1,
            next_message_id: 100_000_170,
            stopping: false,
            clock,
        }
    }

    pub fn now(&self) -> u64 {
        self.clock.now_epoch()
    }

    pub fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// A JWT (unsigned: the fake checks tokens by value) expiring `lifetime` s from now.
    pub fn mint_jwt(&mut self, kind: &str, lifetime: u64) -> (String, u64) {
        let exp = self.now() + lifetime;
        let n = self.next();
        let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let token = format!(
            "{}.{}.fake-signature-{kind}-{n}",
            e(&json!({"alg": "RS256", "typ": "JWT"})),
            e(&json!({"exp": exp, "jti": format!("{kind}-{n}")}))
        );
        (token, exp)
    }

    pub fn take_fault(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let i = self.faults.iter().position(|(e, _)| *e == endpoint)?;
        Some(self.faults.remove(i).1)
    }

    pub fn statistics(&self, scale_set_id: u64) -> Value {
        let jobs = || self.jobs.values();
        let count = |f: &dyn Fn(&JobState) -> bool| jobs().filter(|j| f(&j.state)).count();
        let available = count(&|s| *s == JobState::Available(scale_set_id));
        let running = count(
            &|s| matches!(s, JobState::Running { scale_set_id: id, .. } if *id == scale_set_id),
        );
        let assigned = count(&|s| *s == JobState::Assigned(scale_set_id)) + running;
        let runners: Vec<&FakeRunner> = self
            .runners
            .values()
            .filter(|r| r.scale_set_id == scale_set_id)
            .collect();
        let busy = runners.iter().filter(|r| r.busy).count();
        json!({
            "totalAvailableJobs": available,
            "totalAcquiredJobs": 0,
            "totalAssignedJobs": assigned,
            "totalRunningJobs": running,
            "totalRegisteredRunners": runners.len(),
            "totalBusyRunners": busy,
            "totalIdleRunners": runners.len() - busy,
        })
    }

    pub fn scale_set_json(&self, s: &FakeScaleSetRecord) -> Value {
        let group = self
            .groups
            .iter()
            .find(|(id, _)| *id == s.group_id)
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        json!({
            "id": s.id,
            "name": s.name,
            "runnerGroupId": s.group_id,
            "runnerGroupName": group,
            "labels": s.labels.iter().map(|l| json!({"name": l, "type": "System"})).collect::<Vec<_>>(),
            "RunnerSetting": {"ephemeral": true, "isElastic": false, "disableUpdate": true},
            "statistics": self.statistics(s.id),
            "enabled": true,
        })
    }

    fn live_session(&self, scale_set_id: u64) -> bool {
        self.sessions
            .values()
            .any(|s| s.scale_set_id == scale_set_id)
    }

    fn job_message(&self, kind: &str, job: &FakeJob, extra: Value) -> Value {
        let mut m = json!({
            "messageType": kind,
            "runnerRequestId": job.runner_request_id,
            "jobId": job.id,
            "repositoryName": "hello",
            "ownerName": "octo",
            "jobWorkflowRef": "octo/hello/.github/workflows/ci.yml@refs/heads/main",
            "jobDisplayName": "build",
            "workflowRunId": 4242,
            "eventName": "push",
            "requestLabels": job.labels,
            "queueTime": "2026-01-01T00:00:00Z",
            "scaleSetAssignTime": "0001-01-01T00:00:00Z",
            "runnerAssignTime": "0001-01-01T00:00:00Z",
            "finishTime": "0001-01-01T00:00:00Z",
        });
        if let (Some(m), Value::Object(extra)) = (m.as_object_mut(), extra) {
            m.extend(extra);
        }
        m
    }

    pub fn push(&mut self, scale_set_id: u64, message: Value) {
        if let Some(s) = self.scale_sets.get_mut(&scale_set_id) {
            s.pending.push(message);
        }
    }

    /// Offer or assign queued jobs to matching scale sets with a session, within the
    /// capacity their last poll announced (none before a first poll).
    pub fn assign(&mut self) {
        let queued: Vec<String> = self
            .jobs
            .values()
            .filter(|j| j.state == JobState::Queued)
            .map(|j| j.id.clone())
            .collect();
        for job_id in queued {
            let labels = self.jobs[&job_id].labels.clone();
            let target = self.scale_sets.values().find(|s| {
                self.live_session(s.id)
                    && labels
                        .iter()
                        .all(|l| s.labels.iter().any(|x| x.eq_ignore_ascii_case(l)))
                    && s.max_capacity
                        .is_some_and(|cap| self.in_flight(s.id) < cap as usize)
            });
            let Some(id) = target.map(|s| s.id) else {
                continue;
            };
            let kind = if self.ghes_mode {
                "JobAvailable"
            } else {
                "JobAssigned"
            };
            let job = self.jobs.get_mut(&job_id).expect("listed above");
            job.state = if self.ghes_mode {
                JobState::Available(id)
            } else {
                JobState::Assigned(id)
            };
            let job = job.clone();
            let message = self.job_message(kind, &job, json!({"acquireJobUrl": ""}));
            self.push(id, message);
        }
    }

    fn in_flight(&self, scale_set_id: u64) -> usize {
        self.jobs
            .values()
            .filter(|j| match &j.state {
                JobState::Available(id) | JobState::Assigned(id) => *id == scale_set_id,
                JobState::Running {
                    scale_set_id: id, ..
                } => *id == scale_set_id,
                _ => false,
            })
            .count()
    }

    /// The next message after `last_id`: an undeleted one first (redelivery), else a new
    /// one from up to 50 pending job messages.
    pub fn next_message(&mut self, scale_set_id: u64, last_id: i64) -> Option<(i64, Vec<Value>)> {
        let next_id = self.next_message_id + 1;
        let s = self.scale_sets.get_mut(&scale_set_id)?;
        if let Some(m) = s.messages.iter().find(|(id, _)| *id > last_id) {
            return Some(m.clone());
        }
        if s.pending.is_empty() {
            return None;
        }
        let n = s.pending.len().min(MAX_JOBS_PER_MESSAGE);
        let jobs: Vec<Value> = s.pending.drain(..n).collect();
        s.messages.push((next_id, jobs.clone()));
        self.next_message_id = next_id;
        Some((next_id, jobs))
    }

    pub fn new_job(&mut self, labels: &[&str]) -> String {
        let n = self.next();
        let id = format!("job-{n}");
        let runner_request_id = if self.zero_runner_request_ids {
            0
        } else {
            n as i64
        };
        self.jobs.insert(
            id.clone(),
            FakeJob {
                id: id.clone(),
                runner_request_id,
                labels: labels.iter().map(|l| l.to_string()).collect(),
                state: JobState::Queued,
                attempts: 0,
            },
        );
        self.assign();
        id
    }

    /// Acquire: Available jobs of `scale_set_id` with these request ids become Assigned.
    pub fn acquire(&mut self, scale_set_id: u64, ids: &[i64]) -> Vec<i64> {
        let mut acquired = Vec::new();
        let matching: Vec<String> = self
            .jobs
            .values()
            .filter(|j| {
                j.state == JobState::Available(scale_set_id) && ids.contains(&j.runner_request_id)
            })
            .map(|j| j.id.clone())
            .collect();
        for job_id in matching {
            let job = self.jobs.get_mut(&job_id).expect("listed above");
            job.state = JobState::Assigned(scale_set_id);
            acquired.push(job.runner_request_id);
            let job = job.clone();
            let m = self.job_message("JobAssigned", &job, json!({}));
            self.push(scale_set_id, m);
        }
        acquired
    }

    /// Runner `name` goes online and takes the first job assigned to its scale set.
    pub fn runner_starts_job(&mut self, name: &str) -> Option<String> {
        let runner = self.runners.values_mut().find(|r| r.name == name)?;
        runner.online = true;
        let (runner_id, scale_set_id) = (runner.id, runner.scale_set_id);
        let job_id = self
            .jobs
            .values()
            .find(|j| j.state == JobState::Assigned(scale_set_id))?
            .id
            .clone();
        self.runners.get_mut(&runner_id)?.busy = true;
        let job = self.jobs.get_mut(&job_id)?;
        job.state = JobState::Running {
            scale_set_id,
            runner_id,
        };
        let job = job.clone();
        let m = self.job_message(
            "JobStarted",
            &job,
            json!({"runnerId": runner_id, "runnerName": name}),
        );
        self.push(scale_set_id, m);
        Some(job_id)
    }

    /// The job ends with `result`; its ephemeral runner deregisters itself.
    pub fn complete_job(&mut self, job_id: &str, result: &str) -> bool {
        let Some(JobState::Running {
            scale_set_id,
            runner_id,
        }) = self.jobs.get(job_id).map(|j| j.state.clone())
        else {
            return false;
        };
        let name = self
            .runners
            .remove(&runner_id)
            .map(|r| r.name)
            .unwrap_or_default();
        let job = self.jobs.get_mut(job_id).expect("looked up above");
        job.state = JobState::Completed(result.to_string());
        let job = job.clone();
        let m = self.job_message(
            "JobCompleted",
            &job,
            json!({"result": result, "runnerId": runner_id, "runnerName": name}),
        );
        self.push(scale_set_id, m);
        self.assign();
        true
    }

    /// No runner took the assigned job in time: `JobCompleted` "canceled" without a runner,
    /// and the job queued again (up to 3 attempts).
    pub fn cancel_assignment(&mut self, job_id: &str) -> bool {
        let Some(job) = self.jobs.get_mut(job_id) else {
            return false;
        };
        let JobState::Assigned(scale_set_id) = job.state else {
            return false;
        };
        job.attempts += 1;
        job.state = if job.attempts >= MAX_ASSIGNMENT_ATTEMPTS {
            JobState::Completed("canceled".into())
        } else {
            JobState::Queued
        };
        let job = job.clone();
        let m = self.job_message(
            "JobCompleted",
            &job,
            json!({"result": "canceled", "runnerId": 0, "runnerName": ""}),
        );
        self.push(scale_set_id, m);
        self.assign();
        true
    }
}

/// The model behind the server plumbing's [`super::http::Shared`].
pub type Shared = super::http::Shared<State>;

impl super::http::Stopping for State {
    fn stopping(&self) -> bool {
        self.stopping
    }
}
