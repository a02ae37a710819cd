//! The [`GitHub`] trait over GitHub's REST API with ureq: every page of every list, typed
//! errors carrying method + path + status (never the token), retries bounded per hook, and
//! per-endpoint call counts.

use super::calls::{process_counters, ApiCall, CallCounters};
use super::classify::{classify, next_link, permission_needed, Class, ResponseFacts};
use super::outcomes::{process_outcomes, RateLimit};
use super::proxy::{build_agent, is_loopback_host, ProxyError, ProxySettings, Timeouts};
use super::retry::{decide, Decision, RetryPolicy, Retryable};
use super::{
    Arch, DeleteOutcome, GitHub, GitHubError, GitHubPath, GitHubRunner, JitConfig, JobRef,
    RunnerApplication, RunnerOnline, WorkflowJob,
};
use crate::clock::{Clock, SystemClock};
use crate::config::CharmConfig;
use crate::identity::UnitIdentity;
use crate::secret::Secret;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::fmt;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use url::Url;

pub const ACCEPT: &str = "application/vnd.github+json";
pub const API_VERSION: &str = "2022-11-28";
/// GitHub's page size maximum: 250 runners cost 3 requests.
const PER_PAGE: &str = "100";
/// A listing longer than this many pages is a server bug, not a fleet.
const MAX_PAGES: usize = 200;
/// Listings of the runners, at most, when their count keeps moving between pages.
const MAX_LISTINGS: usize = 3;
/// Largest answer body read into memory.
const MAX_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// Longest GitHub error message quoted in an error.
const MAX_MESSAGE_CHARS: usize = 300;

/// Everything the client needs; `Debug` is safe (the token is a [`Secret`]).
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// REST API base: `https://api.github.com` or `<github-url>/api/v3`.
    pub api_base_url: String,
    pub path: GitHubPath,
    pub token: Secret,
    /// Runner group name (org paths only), matched case-insensitively as GitHub does.
    pub group: String,
    /// Only runners this unit owns are listed.
    pub identity: UnitIdentity,
    pub connect_timeout: Duration,
    /// Whole request, body included.
    pub call_timeout: Duration,
    /// `User-Agent: github-runner-charm/<version>`.
    pub user_agent_version: String,
    pub proxy: ProxySettings,
    pub retry: RetryPolicy,
}

impl ClientSettings {
    /// Defaults: 10 s connect, 30 s per call, the crate version, no proxy (callers set
    /// the model's: [`ClientSettings::from_config`]), 3 retries within a 60 s sleep budget.
    pub fn new(
        api_base_url: impl Into<String>,
        path: GitHubPath,
        token: Secret,
        group: impl Into<String>,
        identity: UnitIdentity,
    ) -> Self {
        ClientSettings {
            api_base_url: api_base_url.into(),
            path,
            token,
            group: group.into(),
            identity,
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            user_agent_version: env!("CARGO_PKG_VERSION").to_string(),
            proxy: ProxySettings::default(),
            retry: RetryPolicy::default(),
        }
    }

    /// The client for `config`'s scope, through the model's proxies.
    pub fn from_config(config: &CharmConfig, identity: UnitIdentity, proxy: ProxySettings) -> Self {
        ClientSettings {
            proxy,
            ..ClientSettings::new(
                config.api_base_url.clone(),
                config.path.clone(),
                config.token.clone(),
                config.group.clone(),
                identity,
            )
        }
    }

    pub fn user_agent(&self) -> String {
        format!("github-runner-charm/{}", self.user_agent_version)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("GitHub API URL {url:?} is not usable: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("refusing plain http:// GitHub API URL {url:?}: only loopback hosts (test-mode) may use http")]
    InsecureUrl { url: String },
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

pub struct GitHubClient {
    settings: ClientSettings,
    base: Url,
    agent: ureq::Agent,
    clock: Arc<dyn Clock>,
    calls: CallCounters,
    /// Slept so far by this client (one hook), for the sleep budget.
    slept: Mutex<Duration>,
    /// Resolved org runner group id: one groups listing per hook at most.
    group_id: Mutex<Option<u64>>,
}

impl fmt::Debug for GitHubClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubClient")
            .field("base", &self.base.as_str())
            .field("path", &self.settings.path)
            .finish_non_exhaustive()
    }
}

/// An answer worth reading: 2xx, or a 404/409/422 the caller interprets.
struct Reply {
    link: Option<String>,
    body: String,
}

impl GitHubClient {
    pub fn new(settings: ClientSettings) -> Result<GitHubClient, ClientSetupError> {
        let raw = settings.api_base_url.trim_end_matches('/');
        let bad = |reason: &str| ClientSetupError::BadUrl {
            url: raw.to_string(),
            reason: reason.to_string(),
        };
        let base = Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        let host = base.host_str().ok_or_else(|| bad("no host"))?.to_string();
        if !base.username().is_empty() || base.password().is_some() {
            return Err(bad("credentials in the URL; use the `token` option"));
        }
        match base.scheme() {
            "https" => {}
            "http" if is_loopback_host(&host) => {}
            "http" => {
                return Err(ClientSetupError::InsecureUrl {
                    url: raw.to_string(),
                })
            }
            _ => return Err(bad("scheme must be https")),
        }
        let timeouts = Timeouts {
            connect: settings.connect_timeout,
            total: settings.call_timeout,
        };
        let agent = build_agent(
            &settings.proxy,
            base.scheme(),
            &host,
            timeouts,
            &settings.user_agent(),
        )?;
        Ok(GitHubClient {
            settings,
            base,
            agent,
            clock: Arc::new(SystemClock),
            calls: CallCounters::new(),
            slept: Mutex::new(Duration::ZERO),
            group_id: Mutex::new(None),
        })
    }

    /// Sleep and read time through `clock` (tests use a fake one).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Requests this client sent, per endpoint.
    pub fn calls(&self) -> &CallCounters {
        &self.calls
    }

    /// What this client slept in retries so far.
    pub fn slept(&self) -> Duration {
        *self.slept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// `<base>/repos/{owner}/{repo}/<rest>` or `<base>/orgs/{org}/<rest>`.
    fn scope_url(&self, rest: &[&str]) -> Url {
        let mut segments: Vec<&str> = Vec::new();
        match &self.settings.path {
            GitHubPath::Repo { owner, repo } => segments.extend(["repos", owner, repo]),
            GitHubPath::Org(org) => segments.extend(["orgs", org]),
        }
        segments.extend_from_slice(rest);
        self.api_url(&segments)
    }

    fn api_url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // The base was checked to have a host, so it can hold a path.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Replace the token wherever a server might have echoed it.
    fn scrub(&self, text: &str) -> String {
        let token = self.settings.token.expose();
        let text: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
        if token.len() >= 4 {
            text.replace(token, "[redacted]")
        } else {
            text
        }
    }

    /// One call with its retries: 2xx is `Ok`; anything else is the typed error an operator
    /// can act on (callers turn the 404s and 422s that mean an outcome into that outcome).
    fn send(
        &self,
        call: ApiCall,
        method: &str,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<Reply, GitHubError> {
        let path = url.path().to_string();
        let mut retries = 0;
        loop {
            self.calls.record(call);
            process_counters().record(call);
            let (retryable, error) = match self.attempt(method, url, body) {
                Attempt::Answer { facts, link, body } => {
                    process_outcomes().record(call, Some(facts.status));
                    tracing::debug!(method, path = %path, status = facts.status, retries, "GitHub API call");
                    match self.interpret(method, &path, facts, link, body) {
                        Interpreted::Done(result) => return result,
                        Interpreted::Retry(retryable, error) => (retryable, error),
                    }
                }
                Attempt::Transport(reason) => {
                    process_outcomes().record(call, None);
                    tracing::debug!(method, path = %path, retries, reason = %reason, "GitHub API call failed");
                    let error = GitHubError::Transport {
                        method: method.to_string(),
                        path: path.clone(),
                        reason,
                    };
                    (Retryable::Transient, error)
                }
            };
            let wait = {
                let mut slept = self.slept.lock().unwrap_or_else(PoisonError::into_inner);
                match decide(&self.settings.retry, retryable, retries, *slept, jitter()) {
                    Decision::RetryAfter(d) => {
                        *slept += d;
                        d
                    }
                    Decision::GiveUp(why) => {
                        tracing::debug!(method, path = %path, ?why, "giving up on GitHub API call");
                        return Err(error);
                    }
                }
            };
            tracing::debug!(method, path = %path, wait_ms = wait.as_millis() as u64, "retrying GitHub API call");
            self.clock.sleep(wait);
            retries += 1;
        }
    }

    fn attempt(&self, method: &str, url: &Url, body: Option<&Value>) -> Attempt {
        let request = self
            .agent
            .request_url(method, url)
            .set("Accept", ACCEPT)
            .set("X-GitHub-Api-Version", API_VERSION)
            .set("User-Agent", &self.settings.user_agent())
            .set(
                "Authorization",
                &format!("Bearer {}", self.settings.token.expose()),
            );
        let result = match body {
            Some(b) => request.send_json(b),
            None => request.call(),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                let reason = match t.message() {
                    Some(m) => format!("{}: {m}", t.kind()),
                    None => t.kind().to_string(),
                };
                return Attempt::Transport(self.scrub(&reason));
            }
        };
        let header = |n: &str| response.header(n).map(str::to_string);
        let mut facts = ResponseFacts {
            status: response.status(),
            ratelimit_remaining: header("x-ratelimit-remaining"),
            ratelimit_reset: header("x-ratelimit-reset"),
            retry_after: header("retry-after"),
            accepted_permissions: header("x-accepted-github-permissions"),
            message: String::new(),
        };
        process_outcomes().observe_rate_limit(RateLimit::from_headers(
            facts.ratelimit_remaining.as_deref(),
            response.header("x-ratelimit-limit"),
            facts.ratelimit_reset.as_deref(),
        ));
        let link = header("link");
        let mut body = String::new();
        if let Err(e) = response
            .into_reader()
            .take(MAX_BODY_BYTES)
            .read_to_string(&mut body)
        {
            return Attempt::Transport(format!("reading the answer: {}", e.kind()));
        }
        if facts.status >= 400 {
            facts.message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(String::from))
                .unwrap_or_default();
        }
        Attempt::Answer { facts, link, body }
    }

    fn interpret(
        &self,
        method: &str,
        path: &str,
        facts: ResponseFacts,
        link: Option<String>,
        body: String,
    ) -> Interpreted {
        let m = method.to_string();
        let p = path.to_string();
        let now = self.clock.now_epoch();
        let message = self.scrub(&facts.message);
        let done = |e: GitHubError| Interpreted::Done(Err(e));
        match classify(&facts) {
            Class::Success => Interpreted::Done(Ok(Reply { link, body })),
            Class::ServerError => Interpreted::Retry(
                Retryable::Transient,
                GitHubError::Server {
                    method: m,
                    path: p,
                    status: facts.status,
                },
            ),
            Class::SecondaryLimit {
                retry_after,
                reset_epoch,
            } => {
                let reset = reset_epoch
                    .or(retry_after.map(|s| now.saturating_add(s)))
                    .unwrap_or(now + 60);
                Interpreted::Retry(
                    Retryable::SecondaryLimit {
                        retry_after: retry_after.map(Duration::from_secs),
                    },
                    GitHubError::RateLimited {
                        method: m,
                        path: p,
                        reset_epoch: reset,
                    },
                )
            }
            Class::PrimaryLimit { reset_epoch } => done(GitHubError::RateLimited {
                method: m,
                path: p,
                reset_epoch: reset_epoch.unwrap_or(now + 60),
            }),
            Class::Unauthorized => done(GitHubError::Unauthorized { method: m, path: p }),
            Class::Forbidden {
                accepted_permissions,
            } => done(GitHubError::Forbidden {
                method: m,
                path: p,
                needed: permission_needed(&self.settings.path, accepted_permissions.as_deref()),
            }),
            Class::NotFound => done(GitHubError::NotFound { method: m, path: p }),
            Class::Conflict => done(GitHubError::Conflict {
                method: m,
                path: p,
                message,
            }),
            Class::Unprocessable => done(GitHubError::Unprocessable {
                method: m,
                path: p,
                message,
            }),
            Class::OtherClientError => done(GitHubError::Protocol {
                method: m,
                path: p,
                reason: format!("status {}: {message}", facts.status),
            }),
        }
    }

    fn parse<T: DeserializeOwned>(
        &self,
        reply: &Reply,
        method: &str,
        url: &Url,
    ) -> Result<T, GitHubError> {
        serde_json::from_str(&reply.body).map_err(|e| GitHubError::Protocol {
            method: method.to_string(),
            path: url.path().to_string(),
            reason: format!("unexpected JSON: {e}"),
        })
    }

    /// Follow `rel="next"` only to the API's own origin: the token must not go elsewhere.
    fn next_page(&self, reply: &Reply, current: &Url) -> Result<Option<Url>, GitHubError> {
        let Some(next) = reply.link.as_deref().and_then(next_link) else {
            return Ok(None);
        };
        let protocol = |reason: String| GitHubError::Protocol {
            method: "GET".into(),
            path: current.path().to_string(),
            reason,
        };
        let url = Url::parse(next).map_err(|e| protocol(format!("bad next-page link: {e}")))?;
        if url.origin() != self.base.origin() || !url.path().starts_with(self.base.path()) {
            return Err(protocol(format!(
                "refusing to follow a next-page link to another server ({})",
                url.origin().ascii_serialization()
            )));
        }
        Ok(Some(url))
    }

    /// GET every page of a list; `items` picks the entries out of one page.
    fn get_all_pages<P: DeserializeOwned, T>(
        &self,
        call: ApiCall,
        first: Url,
        mut items: impl FnMut(P) -> Vec<T>,
    ) -> Result<Vec<T>, GitHubError> {
        let mut url = first;
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let reply = self.send(call, "GET", &url, None)?;
            out.extend(items(self.parse::<P>(&reply, "GET", &url)?));
            match self.next_page(&reply, &url)? {
                Some(next) => url = next,
                None => return Ok(out),
            }
        }
        Err(GitHubError::Protocol {
            method: "GET".into(),
            path: url.path().to_string(),
            reason: format!("more than {MAX_PAGES} pages; refusing to continue"),
        })
    }

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

enum Attempt {
    Answer {
        facts: ResponseFacts,
        link: Option<String>,
        body: String,
    },
    Transport(String),
}

enum Interpreted {
    Done(Result<Reply, GitHubError>),
    Retry(Retryable, GitHubError),
}

/// Uniform in [0, 1) from the OS; 0.5 if it has none to give (jitter is not security).
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    match getrandom::getrandom(&mut b) {
        Ok(()) => f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

// ---- wire types: tolerant of unknown fields and of null/missing optional ones ----

#[derive(Deserialize)]
struct LabelJson {
    name: String,
}

#[derive(Deserialize)]
struct RunnerJson {
    id: u64,
    name: String,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    busy: Option<bool>,
    #[serde(default)]
    labels: Option<Vec<LabelJson>>,
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
struct RunnerList {
    /// Registrations in the whole scope at the time of this page.
    #[serde(default)]
    total_count: Option<u64>,
    runners: Vec<RunnerJson>,
}

#[derive(Deserialize)]
struct GroupJson {
    id: u64,
    name: String,
}

#[derive(Deserialize)]
struct GroupList {
    runner_groups: Vec<GroupJson>,
}

#[derive(Deserialize)]
struct TokenJson {
    token: String,
}

#[derive(Deserialize)]
struct JitJson {
    runner: RunnerJson,
    encoded_jit_config: String,
}

#[derive(Deserialize)]
struct AppJson {
    os: String,
    architecture: String,
    download_url: String,
    filename: String,
    #[serde(default)]
    sha256_checksum: Option<String>,
    #[serde(default)]
    temp_download_token: Option<String>,
}

#[derive(Deserialize)]
struct JobList {
    jobs: Vec<JobJson>,
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
struct JobJson {
    id: u64,
    run_id: u64,
    status: String,
    #[serde(default)]
    conclusion: Option<String>,
    #[serde(default)]
    runner_name: Option<String>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    started_at: Option<String>,
    #[serde(default)]
    completed_at: Option<String>,
    #[serde(default)]
    workflow_name: Option<String>,
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
        let mut url = self.scope_url(&["actions", "runners"]);
        url.query_pairs_mut().append_pair("per_page", PER_PAGE);
        let identity = &self.settings.identity;
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
            for r in runners.into_iter().filter(|r| identity.owns_name(&r.name)) {
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
