//! A fake of GitHub's runner scale set service for tests: a real HTTP server on
//! `127.0.0.1:<random port>` (the fake GitHub's server plumbing), with the model, fault
//! injection and a request log.
//!
//! ```ignore
//! #[path = "support/fake_scaleset/mod.rs"]
//! mod fake_scaleset;
//! let fake = fake_scaleset::FakeScaleSetService::start(clock.clone());
//! // config URL: fake.config_url("octo/hello") -> http://127.0.0.1:<port>/octo/hello
//! // REST credential: fake.pat()
//! ```
//!
//! What it does, as the service does (facts taken from GitHub's Go client `actions/scaleset`,
//! ARC and GARM; the service itself is undocumented):
//! - REST, with or without the GHES `/api/v3` prefix: `POST …/{repos/o/r|orgs/o|enterprises/e}
//!   /actions/runners/registration-token` (`Bearer <pat>`, 201 `{token, expires_at}`);
//!   `POST /actions/runner-registration` (`RemoteAuth <registration token>`, body
//!   `{url, runner_event: "register"}`, 201 `{url: <base>/tenant/123/, token: <admin JWT>}`).
//! - Every `{svc}` call needs `Bearer <admin JWT>` still before its `exp` (else 401) and
//!   `api-version=6.0-preview` (else 400). Time is the injected clock's.
//! - Runner groups (`?groupName=`, 1 = Default); scale sets: create (200, 400 on a name taken
//!   in the group), get by id (404 `RunnerScaleSetNotFoundException`), by `runnerGroupId` +
//!   `name` (`{count, value}`), PATCH, DELETE (204; 400 while a runner is busy; assigned jobs
//!   queued again).
//! - Sessions, one per scale set: create (200 with `messageQueueUrl` on another path,
//!   `/_broker/scalesets/<id>/message?sessionId=…`, a queue JWT and statistics; 409
//!   `RunnerScaleSetSessionConflictException` while another lives, unless idle past
//!   [`FakeScaleSetService::set_stale_session_after`]); PATCH refresh (new queue token; 404
//!   when unknown); DELETE (204; 400 `RunnerScaleSetSessionExpiredException` when unknown).
//! - Queue: `GET {mq}[&lastMessageId=N]` with `Bearer <queue JWT>` (401 when expired or
//!   unknown, 404 when the session is gone) holds the request until a message after N is
//!   there or the poll timeout passes (202). A message is `{messageId, messageType:
//!   "RunnerScaleSetJobMessages", body: <JSON string of ≤ 50 job messages>, statistics}`;
//!   ids increase; a message not deleted is delivered again to a poll whose
//!   `lastMessageId` is below it. `X-ScaleSetMaxCapacity` is recorded and no more jobs than
//!   it allows are in flight on the scale set. `DELETE {mq path}/<id>` -> 204.
//! - Jobs, driven by the test: queued with labels, matched to a scale set with a session
//!   whose labels hold them all (case-insensitive); then `JobAssigned`, or in GHES mode
//!   `JobAvailable` and `JobAssigned` only after `POST …/acquirejobs` (queue token, array of
//!   `runnerRequestId`s, answer `{count, value}`). [`FakeScaleSetService::runner_starts_job`]
//!   -> `JobStarted` (runner busy); [`FakeScaleSetService::complete_job`] -> `JobCompleted`
//!   and the ephemeral runner gone; [`FakeScaleSetService::cancel_assignment`] -> `JobCompleted`
//!   "canceled" with no runner, the job queued again (3 attempts at most).
//! - JIT: `POST …/generatejitconfig` `{name, workFolder}` registers an offline runner,
//!   answers `{runner: {id, name, runnerScaleSetId}, encodedJITConfig}` (base64 of a JSON
//!   object of strings); a taken name -> 409 `AgentExistsException`. Runners under
//!   `_apis/distributedtask/pools/0/agents`: by id (404 `AgentNotFoundException`), by
//!   `agentName`, all; DELETE 204 (also when missing), 400 `JobStillRunningException` busy.
//! - Runners in containers ([`FakeScaleSetService::serve_fake_runners`], `runner_side`):
//!   JIT configs the fake runner reads, and its protocol (online, take a job: `JobStarted`,
//!   done: `JobCompleted`).
//! - Faults: one-shot [`Fault`]s per endpoint (status + typeName, text/plain, 429 with
//!   `Retry-After`, empty 200, empty `messageQueueUrl`); a BOM before every JSON body; keys
//!   in another case (inside message bodies too); scale set or session vanishing.
//!
//! Determinism: no sleeps; polls and [`FakeScaleSetService::wait_until`] wait on a condition
//! variable with a deadline; dropping the handle stops the server and wakes every waiter.

#![allow(dead_code)]

#[path = "../fake_github/http.rs"]
mod http;
mod queue;
mod routes;
mod runner_side;
mod state;

pub use state::{
    Endpoint, FakeJob, FakeRunner, FakeScaleSetRecord, FakeSession, Fault, JobState, KeyCase,
    RecordedRequest, State,
};

use github_runner::clock::Clock;
use github_runner::github::{ClientSettings, GitHubClient, GitHubPath};
use github_runner::identity::UnitIdentity;
use github_runner::scaleset::{ConfigUrl, ScaleSetClient, ScaleSetSettings};
use github_runner::secret::Secret;
use http::HttpServer;
use state::Shared;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub struct FakeScaleSetService {
    shared: Arc<Shared>,
    url: String,
    server: Option<HttpServer>,
}

impl Drop for FakeScaleSetService {
    fn drop(&mut self) {
        self.shared.update(|st| st.stopping = true);
        self.server.take();
    }
}

impl FakeScaleSetService {
    /// Serve on 127.0.0.1:<random port>; token lifetimes run on `clock`.
    pub fn start(clock: Arc<dyn Clock>) -> FakeScaleSetService {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(clock)),
            changed: Condvar::new(),
        });
        let handler = shared.clone();
        let server = HttpServer::start(Arc::new(move |req| routes::handle(&handler, req)))
            .expect("bind 127.0.0.1:0 for the fake scale set service");
        let url = format!("http://127.0.0.1:{}", server.addr().port());
        shared.update(|st| {
            st.base_url = url.clone();
            st.pat = format!("ghp_FAKEscaleset{}abcdefghij", server.addr().port());
        });
        FakeScaleSetService {
            shared,
            url,
            server: Some(server),
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// `<url>/<path>`: the scale set's registration scope (`org` or `owner/repo`).
    pub fn config_url(&self, path: &str) -> String {
        format!("{}/{path}", self.url)
    }

    /// `<url>/api/v3`: the REST base (the GHES layout, as for any non-GitHub.com host).
    pub fn api_base(&self) -> String {
        format!("{}/api/v3", self.url)
    }

    /// The credential the REST side accepts.
    pub fn pat(&self) -> String {
        self.shared.lock().pat.clone()
    }

    /// Look at (or change) the model directly.
    pub fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        self.shared.update(f)
    }

    /// Wait until `f` holds (or `timeout`): true when it did.
    pub fn wait_until(&self, timeout: Duration, mut f: impl FnMut(&State) -> bool) -> bool {
        let st = self.shared.lock();
        self.shared.wait_for(st, timeout, |st| f(st)).1
    }

    pub fn set_admin_token_lifetime(&self, secs: u64) {
        self.shared.update(|st| st.admin_token_lifetime = secs);
    }

    pub fn set_queue_token_lifetime(&self, secs: u64) {
        self.shared.update(|st| st.queue_token_lifetime = secs);
    }

    /// How long an idle poll is held before its 202.
    pub fn set_poll_timeout(&self, d: Duration) {
        self.shared.update(|st| st.poll_timeout = d);
    }

    /// A session idle this long (clock seconds) yields to a new create.
    pub fn set_stale_session_after(&self, secs: Option<u64>) {
        self.shared.update(|st| st.stale_session_after = secs);
    }

    /// GHES's flow: JobAvailable, then JobAssigned only after acquisition.
    pub fn set_ghes_mode(&self, on: bool) {
        self.shared.update(|st| st.ghes_mode = on);
    }

    /// JIT configs the fake runner in a container understands (base64 of `<url> <key>`),
    /// and the runner side it speaks (`runner_side`): online, take a job, finish it.
    pub fn serve_fake_runners(&self) {
        self.shared.update(|st| st.fake_runners = true);
    }

    pub fn set_zero_runner_request_ids(&self, on: bool) {
        self.shared.update(|st| st.zero_runner_request_ids = on);
    }

    pub fn set_bom(&self, on: bool) {
        self.shared.update(|st| st.bom = on);
    }

    pub fn set_key_case(&self, case: KeyCase) {
        self.shared.update(|st| st.key_case = case);
    }

    /// Answer the next `times` calls of `endpoint` with `fault`.
    pub fn inject(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        self.shared.update(|st| {
            st.faults
                .extend(std::iter::repeat_n((endpoint, fault), times))
        });
    }

    /// Add runner group `name`; returns its id.
    pub fn add_runner_group(&self, name: &str) -> u64 {
        self.shared.update(|st| {
            let id = st.next();
            st.groups.push((id, name.to_string()));
            id
        })
    }

    /// Queue a job needing `labels`; returns its `jobId`.
    pub fn enqueue_job(&self, labels: &[&str]) -> String {
        self.shared.update(|st| st.new_job(labels))
    }

    /// Runner `name` connects and takes an assigned job: `JobStarted`. The job's id.
    pub fn runner_starts_job(&self, name: &str) -> Option<String> {
        self.shared.update(|st| st.runner_starts_job(name))
    }

    pub fn complete_job(&self, job_id: &str, result: &str) -> bool {
        self.shared.update(|st| st.complete_job(job_id, result))
    }

    pub fn cancel_assignment(&self, job_id: &str) -> bool {
        self.shared.update(|st| st.cancel_assignment(job_id))
    }

    /// GitHub deletes the scale set (dormancy, an incident): 404 from now on.
    pub fn vanish_scale_set(&self, id: u64) {
        self.shared.update(|st| {
            st.scale_sets.remove(&id);
            st.sessions.retain(|_, s| s.scale_set_id != id);
        });
    }

    /// The service forgets the session (refresh 404, polls 404).
    pub fn evict_sessions(&self, scale_set_id: u64) {
        self.shared
            .update(|st| st.sessions.retain(|_, s| s.scale_set_id != scale_set_id));
    }

    pub fn job(&self, id: &str) -> Option<FakeJob> {
        self.shared.lock().jobs.get(id).cloned()
    }

    pub fn runners(&self) -> Vec<FakeRunner> {
        self.shared.lock().runners.values().cloned().collect()
    }

    pub fn sessions(&self) -> Vec<FakeSession> {
        self.shared.lock().sessions.values().cloned().collect()
    }

    pub fn scale_set(&self, id: u64) -> Option<FakeScaleSetRecord> {
        self.shared.lock().scale_sets.get(&id).cloned()
    }

    /// Ids of the scale set's messages not yet deleted.
    pub fn unacked(&self, scale_set_id: u64) -> Vec<i64> {
        self.scale_set(scale_set_id)
            .map(|s| s.messages.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// The real client for scope `path` (`org` or `owner/repo`) of this fake: the REST
    /// credential, the config URL, polls of at most 20 s, token lifetimes on `clock`.
    pub fn client(&self, path: &str, clock: Arc<dyn Clock>) -> ScaleSetClient {
        let github_path = match path.split_once('/') {
            Some((owner, repo)) => GitHubPath::Repo {
                owner: owner.into(),
                repo: repo.into(),
            },
            None => GitHubPath::Org(path.into()),
        };
        let identity = UnitIdentity::parse("github-runner/0", "model-uuid").expect("a unit name");
        let rest = GitHubClient::new(ClientSettings::new(
            self.api_base(),
            github_path,
            Secret::new(self.pat()),
            "default",
            identity,
        ))
        .expect("a REST client for the fake");
        let config = ConfigUrl::parse(&self.config_url(path)).expect("the fake's config URL");
        let mut settings = ScaleSetSettings::new(config);
        settings.poll_timeout = Duration::from_secs(20);
        ScaleSetClient::with_clock(settings, Arc::new(rest), clock)
    }

    pub fn requests_to(&self, endpoint: Endpoint) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.endpoint == endpoint)
            .collect()
    }
}
