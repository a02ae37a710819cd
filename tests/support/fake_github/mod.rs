//! A fake GitHub for tests: a real HTTP server on `127.0.0.1:<random port>` with state,
//! fault injection and a request log, answering the runner endpoints like GitHub does.
//!
//! Include it from a test file by path (there is no shared `tests/support/mod.rs`):
//!
//! ```ignore
//! #[path = "support/fake_github/mod.rs"]
//! mod fake_github;
//! use fake_github::{Endpoint, FakeGitHub, Fault};
//!
//! let gh = FakeGitHub::start();
//! // github-url = gh.url()          -> http://127.0.0.1:<port>
//! // REST API base = gh.api_base()  -> http://127.0.0.1:<port>/api/v3
//! // token = gh.token()
//! ```
//!
//! # REST API (under `/api/v3`, for `/repos/{owner}/{repo}` and `/orgs/{org}` alike)
//! - `GET …/actions/runners` (`per_page` ≤ 100, default 30, `page`, `name`; `Link` header with
//!   next/last/prev/first when there is more than one page), `GET|DELETE …/actions/runners/{id}`
//!   (DELETE: 204; 404 when absent; 422 when the runner is busy),
//!   `GET …/actions/runners/{id}/labels`,
//! - `POST …/actions/runners/registration-token`, `POST …/actions/runners/remove-token` (201),
//! - `POST …/actions/runners/generate-jitconfig` (201; 409 when the name exists in that
//!   path; 404 for an unknown `runner_group_id` — repos only have group 1; 422 for a missing
//!   field or 0 / over 100 labels). The registration is ephemeral, offline, idle.
//! - `GET …/actions/runners/downloads`: osx/win/linux-arm entries plus linux x64 and arm64,
//!   whose `download_url` is `<url>/_fake/downloads/<filename>` serving [`FakeGitHub::set_runner_tarball`].
//! - `GET /orgs/{org}/actions/runner-groups` (paginated) and `…/runner-groups/{id}`: every
//!   org has group 1 "Default"; add more with [`FakeGitHub::add_runner_group`].
//! - `GET /repos/{o}/{r}/actions/jobs/{id}`, `GET /repos/{o}/{r}/actions/runs/{run}/jobs`.
//! - `POST /app/installations/{id}/access_tokens` with an App's JWT ([`FakeGitHub::add_app`];
//!   checked as GitHub does, see `app.rs`): 201 `token`, `expires_at`, `permissions`,
//!   `repository_selection`. The token authorises the API until `expires_at` (then 401);
//!   its lifetime is [`FakeGitHub::set_installation_token_lifetime`] (3600 s).
//!
//! Every API request needs a `User-Agent` (else 403, as GitHub) and
//! `Authorization: Bearer <token>` (or `token <token>`) with a valid token (else 401
//! "Bad credentials"). Answers carry the full `x-ratelimit-*` set (limit, remaining, used,
//! reset, resource); once the primary budget ([`FakeGitHub::set_rate_budget`], 5000 an hour)
//! is spent, every API request answers 403 with `x-ratelimit-remaining: 0` until the reset.
//! A `page` of a listing can be held back ([`FakeGitHub::hold_page`]) while a test changes
//! the registrations. Unknown API paths, and paths marked with
//! [`FakeGitHub::set_path_missing`], answer 404. Any other path is visible.
//!
//! # Runner side: the listener protocol (`/_fake/listener/`, no auth, plain text)
//! `encoded_jit_config` is base64 of `"<url> <key>"` (decode with busybox `base64 -d`,
//! split on the space). The default tarball's `run.sh` ([`FAKE_RUNNER_SCRIPT`]) speaks it with
//! busybox `sh` and `wget` only; inside an LXD container an LXD proxy device forwarding
//! `127.0.0.1:<port>` is all it needs.
//! - `GET /_fake/listener/online?key=K` -> `ok` (registration online) | 404 `gone`
//! - `GET /_fake/listener/wait-job?key=K&timeout=S` (long-poll, S ≤ 60, default 30) ->
//!   `job <id> <run id> <owner/repo>` (a test assigned one: the runner is now busy, the job
//!   in_progress; the run and repo are what GitHub gives the job as `GITHUB_RUN_ID` and
//!   `GITHUB_REPOSITORY`) | `none` |
//!   404 `gone` (registration deleted)
//! - `GET /_fake/listener/done?key=K[&conclusion=success][&timeout=S]` -> `ok` (job completed;
//!   the ephemeral registration is removed, as GitHub does) | `wait` (the job is held by
//!   [`FakeGitHub::assign_held_job`]; call again) | 404 `gone`
//! - `GET /_fake/health` -> `ok`
//!
//! # Determinism
//! No sleeps except an injected slow answer; long-polls and [`FakeGitHub::wait_until`] wait
//! on a condition variable with a deadline. Dropping the handle stops the server and wakes
//! every waiter.

#![allow(dead_code)]

mod app;
mod http;
mod routes;
mod state;

#[allow(unused_imports)]
pub use app::{sign_jwt, IssuedToken, DEFAULT_TOKEN_LIFETIME_SECS};
pub use routes::tarball_name;
pub use state::{
    AdvertisedChecksum, DownloadFault, Endpoint, FakeJob, FakeRunner, FakeRunnerGroup, Fault,
    FaultRule, PageHold, RecordedRequest, Snapshot,
};

use http::HttpServer;
pub use state::now_epoch;
use state::{rfc3339, sha256_hex, Shared, State, Tarball};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The runner version the downloads list starts with.
pub const DEFAULT_RUNNER_VERSION: &str = "2.321.0";

/// `run.sh` of the default tarball: a fake runner for busybox (sh, base64, wget, sleep).
/// Takes the JIT config as the real one does (`run.sh --jitconfig <encoded>` or
/// `ACTIONS_RUNNER_INPUT_JITCONFIG`), goes online, waits for a job, reports it done, exits 0.
/// `FAKE_RUNNER_JOB_SECONDS` makes the job last that long.
pub const FAKE_RUNNER_SCRIPT: &str = r#"#!/bin/sh
# Fake GitHub Actions runner (tests only): speaks the fake GitHub's listener protocol
# with busybox sh, base64 and wget.
jit="${ACTIONS_RUNNER_INPUT_JITCONFIG:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --jitconfig) jit="$2"; shift 2 ;;
    *) shift ;;
  esac
done
[ -n "$jit" ] || { echo "fake runner: no JIT config" >&2; exit 2; }
decoded="$(printf '%s' "$jit" | base64 -d)" || { echo "fake runner: bad JIT config" >&2; exit 2; }
base="${decoded%% *}"
key="${decoded#* }"
# No `wget -T`: it segfaults in busybox 1.35; the fake bounds every long-poll itself.
fetch() { wget -q -O - "$base/_fake/listener/$1?key=$key$2"; }
fetch online "" >/dev/null || { echo "fake runner: registration refused" >&2; exit 1; }
echo "fake runner: online"
failures=0
while :; do
  if answer="$(fetch wait-job "&timeout=30")"; then
    failures=0
    case "$answer" in
      job\ *) job="${answer#job }"; job="${job%% *}"; break ;;
    esac
  else
    failures=$((failures + 1))
    [ "$failures" -ge 3 ] && { echo "fake runner: registration gone" >&2; exit 1; }
    sleep 1
  fi
done
echo "fake runner: running job $job"
[ -n "${FAKE_RUNNER_JOB_SECONDS:-}" ] && sleep "$FAKE_RUNNER_JOB_SECONDS"
failures=0
while :; do
  if answer="$(fetch done "&timeout=30")"; then
    failures=0
    [ "$answer" = "ok" ] && break
  else
    failures=$((failures + 1))
    [ "$failures" -ge 3 ] && { echo "fake runner: registration gone" >&2; exit 1; }
    sleep 1
  fi
done
echo "fake runner: job $job done"
exit 0
"#;

/// A gzip tar holding `./run.sh` ([`FAKE_RUNNER_SCRIPT`], mode 0755) and a `./config.sh` stub:
/// the tarball the fake serves until a test sets another.
pub fn fake_runner_tarball() -> Vec<u8> {
    tar_gz(&[
        ("./run.sh", FAKE_RUNNER_SCRIPT.as_bytes()),
        (
            "./config.sh",
            b"#!/bin/sh\necho 'fake runner: use run.sh --jitconfig' >&2\nexit 2\n",
        ),
    ])
}

/// A gzip tar of `files` (name, content) laid out like GitHub's runner tarballs: names kept
/// exactly as given (leading `./` included), every file mode 0755.
pub fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        // Raw name bytes: `set_path` would drop the leading `./` that GitHub's tarballs have.
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        // Writing into a Vec cannot fail.
        builder
            .append(&header, *data)
            .expect("append to in-memory tar");
    }
    builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .expect("finish in-memory tar.gz")
}

/// The running fake; the server stops when this is dropped.
pub struct FakeGitHub {
    shared: Arc<Shared>,
    url: String,
    token: String,
    server: Option<HttpServer>,
}

impl FakeGitHub {
    /// Serve on 127.0.0.1:<random port>, in background threads, with one valid token.
    pub fn start() -> FakeGitHub {
        let tarball = fake_runner_tarball();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                base_url: String::new(),
                tokens: BTreeSet::new(),
                runners: BTreeMap::new(),
                next_runner_id: 1,
                groups: BTreeMap::new(),
                next_group_id: 2,
                jobs: BTreeMap::new(),
                next_job_id: 1001,
                next_run_id: 501,
                missing_paths: BTreeSet::new(),
                private_repos: BTreeSet::new(),
                faults: Vec::new(),
                download_faults: Vec::new(),
                tarball: Tarball {
                    version: DEFAULT_RUNNER_VERSION.into(),
                    sha256: sha256_hex(&tarball),
                    bytes: tarball,
                    advertised: AdvertisedChecksum::Actual,
                    download_token: None,
                },
                requests: Vec::new(),
                label_ids: BTreeMap::new(),
                seq: 0,
                rate_limit: 5000,
                rate_remaining: 5000,
                rate_reset: now_epoch() + 3600,
                holds: Vec::new(),
                stopping: false,
                apps: app::Apps::default(),
            }),
            changed: Condvar::new(),
        });
        let handler_shared = shared.clone();
        let server = HttpServer::start(Arc::new(move |req| routes::handle(&handler_shared, req)))
            .expect("bind 127.0.0.1:0 for the fake GitHub");
        let port = server.addr().port();
        let url = format!("http://127.0.0.1:{port}");
        let token = format!("ghp_FAKEtoken{port:05}abcdefghijklmnopqrstuv");
        shared.update(|st| {
            st.base_url = url.clone();
            st.tokens.insert(token.clone());
        });
        FakeGitHub {
            shared,
            url,
            token,
            server: Some(server),
        }
    }

    /// `http://127.0.0.1:<port>`: the `github-url` to configure.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// `<url>/api/v3`: the REST API base (as for GitHub Enterprise Server).
    pub fn api_base(&self) -> String {
        format!("{}{}", self.url, routes::API_PREFIX)
    }

    /// Client settings for this fake: its API base and token, group "default", and no proxy
    /// (tests never inherit the developer's).
    pub fn client_settings(
        &self,
        path: github_runner::github::GitHubPath,
        identity: github_runner::identity::UnitIdentity,
    ) -> github_runner::github::ClientSettings {
        let mut s = github_runner::github::ClientSettings::new(
            self.api_base(),
            path,
            github_runner::secret::Secret::new(self.token()),
            "default",
            identity,
        );
        s.proxy = github_runner::github::proxy::ProxySettings::default();
        s
    }

    pub fn port(&self) -> u16 {
        self.server.as_ref().map(|s| s.addr().port()).unwrap_or(0)
    }

    /// The token valid from the start.
    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// Make `token` valid too (a token change test uses two).
    pub fn add_token(&self, token: &str) {
        self.shared.update(|st| st.tokens.insert(token.to_string()));
    }

    /// Make `token` invalid (401 from now on).
    pub fn revoke_token(&self, token: &str) {
        self.shared.update(|st| st.tokens.remove(token));
    }

    // ---- paths and groups ----

    /// Answer 404 for every API call under `path` (`owner/repo` or `org`).
    pub fn set_path_missing(&self, path: &str) {
        self.shared
            .update(|st| st.missing_paths.insert(path.to_string()));
    }

    /// Make `repo` (`owner/repo`) a private repository the token cannot read: it and its
    /// jobs answer 404 (a token with the organisation's runner permission only).
    pub fn set_repo_private(&self, repo: &str) {
        self.shared
            .update(|st| st.private_repos.insert(repo.to_string()));
    }

    /// Add runner group `name` to `org`; returns its id (2, 3, ...; 1 is "Default").
    pub fn add_runner_group(&self, org: &str, name: &str) -> u64 {
        self.shared.update(|st| {
            let id = st.next_group_id;
            st.next_group_id += 1;
            st.groups
                .entry(org.to_string())
                .or_default()
                .push(FakeRunnerGroup {
                    id,
                    name: name.to_string(),
                    default: false,
                    visibility: "all".into(),
                });
            id
        })
    }

    /// Groups of `org`, "Default" first.
    pub fn runner_groups(&self, org: &str) -> Vec<FakeRunnerGroup> {
        self.shared.lock().org_groups(org)
    }

    // ---- runners ----

    /// Register a (non-ephemeral, offline, idle, group 1) runner directly; returns its id.
    pub fn add_runner(&self, path: &str, name: &str, labels: &[&str]) -> u64 {
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        self.shared
            .update(|st| st.add_runner(path, name, &labels, 1, false))
    }

    /// Every registration, by id.
    pub fn runners(&self) -> Vec<FakeRunner> {
        self.shared.lock().runners.values().cloned().collect()
    }

    pub fn runner(&self, name: &str) -> Option<FakeRunner> {
        self.shared.lock().runner_by_name(name).cloned()
    }

    /// Set a runner online or offline; false when no runner has that name.
    pub fn set_runner_online(&self, name: &str, online: bool) -> bool {
        self.shared.update(|st| {
            let version = st.tarball.version.clone();
            st.runner_by_name_mut(name)
                .map(|r| {
                    r.online = online;
                    if online {
                        r.version = Some(version);
                    }
                })
                .is_some()
        })
    }

    /// Set a runner busy or idle; false when no runner has that name.
    pub fn set_runner_busy(&self, name: &str, busy: bool) -> bool {
        self.shared
            .update(|st| st.runner_by_name_mut(name).map(|r| r.busy = busy).is_some())
    }

    /// Remove a registration as GitHub does when an ephemeral runner finishes; false when
    /// absent.
    pub fn remove_runner(&self, name: &str) -> bool {
        self.shared.update(|st| {
            let id = st.runner_by_name(name).map(|r| r.id);
            id.and_then(|id| st.runners.remove(&id)).is_some()
        })
    }

    // ---- jobs ----

    /// Queue a job in `repo` (`owner/repo`) with `labels`; returns its id.
    pub fn add_job(&self, repo: &str, labels: &[&str]) -> u64 {
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        self.shared.update(|st| new_job(st, repo, labels))
    }

    /// A workflow run in `repo` with `jobs` queued jobs; returns the run id and the job ids.
    pub fn add_run(&self, repo: &str, jobs: usize) -> (u64, Vec<u64>) {
        self.shared.update(|st| {
            let run_id = st.next_run_id;
            st.next_run_id += 1;
            let ids = (0..jobs)
                .map(|_| new_job_in_run(st, repo, Vec::new(), run_id))
                .collect();
            (run_id, ids)
        })
    }

    /// Give runner `name` a job (queued until its listener takes it with `wait-job`, then
    /// in_progress and the runner busy; completed when the runner reports `done`). For an org
    /// runner the job lives in `<org>/fake-repo`. None when no such runner or it has a job.
    pub fn assign_job(&self, name: &str) -> Option<u64> {
        self.assign(name, false)
    }

    /// As [`FakeGitHub::assign_job`], but the runner stays busy (its `done` call answers
    /// `wait`) until [`FakeGitHub::release_job`].
    pub fn assign_held_job(&self, name: &str) -> Option<u64> {
        self.assign(name, true)
    }

    fn assign(&self, name: &str, held: bool) -> Option<u64> {
        self.shared.update(|st| {
            let r = st.runner_by_name(name)?;
            if r.job_id.is_some() {
                return None;
            }
            let repo = if r.path.contains('/') {
                r.path.clone()
            } else {
                format!("{}/fake-repo", r.path)
            };
            let labels = r.labels.clone();
            let id = new_job(st, &repo, labels);
            if let Some(j) = st.jobs.get_mut(&id) {
                j.held = held;
            }
            if let Some(r) = st.runner_by_name_mut(name) {
                r.job_id = Some(id);
            }
            Some(id)
        })
    }

    /// GitHub hands the existing queued job `job_id` to runner `name` (as it does to any
    /// idle runner with matching labels); false when either is missing or the runner has
    /// a job.
    pub fn dispatch_job(&self, job_id: u64, name: &str) -> bool {
        self.shared.update(|st| {
            if !st.jobs.contains_key(&job_id) {
                return false;
            }
            match st.runner_by_name_mut(name) {
                Some(r) if r.job_id.is_none() => {
                    r.job_id = Some(job_id);
                    true
                }
                _ => false,
            }
        })
    }

    /// Let a held job finish; false when no such job.
    pub fn release_job(&self, job_id: u64) -> bool {
        self.shared
            .update(|st| st.jobs.get_mut(&job_id).map(|j| j.held = false).is_some())
    }

    pub fn job(&self, id: u64) -> Option<FakeJob> {
        self.shared.lock().jobs.get(&id).cloned()
    }

    /// Change a job (status, conclusion, runner, timestamps...); false when absent.
    pub fn update_job(&self, id: u64, f: impl FnOnce(&mut FakeJob)) -> bool {
        self.shared
            .update(|st| st.jobs.get_mut(&id).map(f).is_some())
    }

    /// Wait until `pred` holds over the registrations and jobs, at most `timeout`.
    /// Returns whether it held (re-checked on every state change, no polling).
    pub fn wait_until(&self, timeout: Duration, mut pred: impl FnMut(&Snapshot) -> bool) -> bool {
        let st = self.shared.lock();
        self.shared
            .wait_for(st, timeout, |st| pred(&st.snapshot()))
            .1
    }

    // ---- holding a page back ----

    /// Hold the next request for page `page` of `endpoint` (before its answer is rendered)
    /// until the returned handle is released or dropped: a test can then change the state
    /// between two pages of a listing, as another client would on GitHub.
    pub fn hold_page(&self, endpoint: Endpoint, page: usize) -> HeldPage<'_> {
        let id = self.shared.update(|st| {
            let id = st.next_seq();
            st.holds.push(PageHold {
                id,
                endpoint,
                page,
                waiting: false,
                fired: false,
                released: false,
            });
            id
        });
        HeldPage { gh: self, id }
    }

    // ---- faults ----

    /// Answer the next `times` API requests (any endpoint) with `fault`.
    pub fn inject(&self, fault: Fault, times: usize) {
        self.push_fault(fault, None, Some(times));
    }

    /// Answer the next `times` requests to `endpoint` with `fault`.
    pub fn inject_on(&self, endpoint: Endpoint, fault: Fault, times: usize) {
        self.push_fault(fault, Some(endpoint), Some(times));
    }

    /// Answer every API request (of `endpoint`, or any) with `fault` until `clear_faults`.
    pub fn inject_always(&self, fault: Fault, endpoint: Option<Endpoint>) {
        self.push_fault(fault, endpoint, None);
    }

    /// Next `n` API requests answer `status` (a 5xx).
    pub fn fail_next(&self, n: usize, status: u16) {
        self.inject(Fault::ServerError(status), n);
    }

    /// The primary budget: `remaining` API requests are served until `reset_epoch`, then
    /// each answers 403 with `x-ratelimit-remaining: 0` (as GitHub does) until the wall clock
    /// passes `reset_epoch`, when a new window of the limit (5000) opens.
    pub fn set_rate_budget(&self, remaining: u64, reset_epoch: u64) {
        self.shared.update(|st| {
            st.rate_remaining = remaining;
            st.rate_reset = reset_epoch;
        });
    }

    /// API requests left in the primary budget.
    pub fn rate_remaining(&self) -> u64 {
        self.shared.lock().rate_remaining
    }

    /// Primary rate limit exhausted until `clear_faults`: 403, remaining 0, reset.
    pub fn exhaust_primary(&self, reset_epoch: u64) {
        self.inject_always(
            Fault::PrimaryRateLimit {
                status: 403,
                reset_epoch,
            },
            None,
        );
    }

    /// Next `n` API requests hit the secondary limit: 429 with `retry-after` when `Some`.
    pub fn secondary_limit_next(&self, n: usize, retry_after: Option<u64>) {
        self.inject(
            Fault::SecondaryRateLimit {
                status: 429,
                retry_after,
            },
            n,
        );
    }

    /// Next `n` API requests answer only after `delay`.
    pub fn slow_next(&self, n: usize, delay: Duration) {
        self.inject(Fault::Slow(delay), n);
    }

    /// Remove every pending fault (API and download).
    pub fn clear_faults(&self) {
        self.shared.update(|st| {
            st.faults.clear();
            st.download_faults.clear();
        });
    }

    fn push_fault(&self, fault: Fault, endpoint: Option<Endpoint>, remaining: Option<usize>) {
        if remaining == Some(0) {
            return;
        }
        self.shared.update(|st| {
            st.faults.push(FaultRule {
                fault,
                endpoint,
                remaining,
            })
        });
    }

    // ---- downloads ----

    /// Serve `bytes` as the linux x64 and arm64 tarballs; returns their SHA-256 (hex), which
    /// the downloads list advertises unless [`FakeGitHub::set_advertised_checksum`] says
    /// otherwise.
    pub fn set_runner_tarball(&self, bytes: Vec<u8>) -> String {
        let sha = sha256_hex(&bytes);
        self.shared.update(|st| {
            st.tarball.bytes = bytes;
            st.tarball.sha256 = sha.clone();
        });
        sha
    }

    pub fn runner_tarball(&self) -> Vec<u8> {
        self.shared.lock().tarball.bytes.clone()
    }

    pub fn runner_tarball_sha256(&self) -> String {
        self.shared.lock().tarball.sha256.clone()
    }

    /// Change the version (and so every filename and download URL) in the downloads list.
    pub fn set_runner_version(&self, version: &str) {
        self.shared
            .update(|st| st.tarball.version = version.to_string());
    }

    pub fn runner_version(&self) -> String {
        self.shared.lock().tarball.version.clone()
    }

    /// The download URL of the linux tarball for `arch` (`x64`, `arm64`).
    pub fn download_url(&self, arch: &str) -> String {
        let v = self.runner_version();
        format!("{}/_fake/downloads/{}", self.url, tarball_name(&v, arch))
    }

    pub fn set_advertised_checksum(&self, advertised: AdvertisedChecksum) {
        self.shared.update(|st| st.tarball.advertised = advertised);
    }

    /// Tarball downloads need this bearer token, which the downloads list hands out.
    pub fn require_download_token(&self, token: &str) {
        self.shared
            .update(|st| st.tarball.download_token = Some(token.to_string()));
    }

    /// Answer the next `times` tarball downloads with `fault`.
    pub fn inject_download(&self, fault: DownloadFault, times: usize) {
        if times > 0 {
            self.shared
                .update(|st| st.download_faults.push((fault, times)));
        }
    }

    // ---- request log ----

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Requests received for `endpoint`.
    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }

    /// REST API requests received (what counts against a rate limit).
    pub fn api_request_count(&self) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.endpoint.is_api())
            .count()
    }

    /// Per-endpoint request counts.
    pub fn counts(&self) -> BTreeMap<Endpoint, usize> {
        let mut out = BTreeMap::new();
        for r in self.shared.lock().requests.iter() {
            *out.entry(r.endpoint).or_insert(0) += 1;
        }
        out
    }

    pub fn clear_requests(&self) {
        self.shared.update(|st| st.requests.clear());
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.shared.update(|st| st.stopping = true);
        // Joins the accept thread; connection threads finish as their waits wake.
        self.server.take();
    }
}

/// A page held by [`FakeGitHub::hold_page`]; released on drop.
pub struct HeldPage<'a> {
    gh: &'a FakeGitHub,
    id: u64,
}

impl HeldPage<'_> {
    /// Wait (at most `timeout`) until a request is held here; whether one is.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        let st = self.gh.shared.lock();
        let id = self.id;
        self.gh
            .shared
            .wait_for(st, timeout, |st| {
                st.holds.iter().any(|h| h.id == id && h.waiting)
            })
            .1
    }

    /// Let the held request (or the next matching one) go on.
    pub fn release(&self) {
        let id = self.id;
        self.gh.shared.update(|st| {
            if let Some(h) = st.holds.iter_mut().find(|h| h.id == id) {
                h.released = true;
            }
        });
    }
}

impl Drop for HeldPage<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

/// A queued job in a run of its own.
fn new_job(st: &mut State, repo: &str, labels: Vec<String>) -> u64 {
    let run_id = st.next_run_id;
    st.next_run_id += 1;
    new_job_in_run(st, repo, labels, run_id)
}

fn new_job_in_run(st: &mut State, repo: &str, labels: Vec<String>, run_id: u64) -> u64 {
    let id = st.next_job_id;
    st.next_job_id += 1;
    st.jobs.insert(
        id,
        FakeJob {
            id,
            run_id,
            repo: repo.to_string(),
            name: format!("job-{id}"),
            workflow_name: Some("CI".into()),
            head_branch: Some("main".into()),
            status: "queued".into(),
            conclusion: None,
            labels,
            runner_id: None,
            runner_name: None,
            runner_group_id: None,
            created_at: rfc3339(now_epoch()),
            started_at: None,
            completed_at: None,
            held: false,
        },
    );
    id
}
