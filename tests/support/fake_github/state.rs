//! The fake's state: registrations, groups, jobs, tokens, faults, the request log.
//! Everything is plain data behind one mutex; the condvar wakes long-polls and slow answers.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// An API endpoint (or a `/_fake/` helper) as the fake classifies a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    ListRunners,
    GetRunner,
    DeleteRunner,
    ListRunnerLabels,
    RegistrationToken,
    RemoveToken,
    GenerateJitConfig,
    ListDownloads,
    ListRunnerGroups,
    GetRunnerGroup,
    GetJob,
    ListRunJobs,
    /// `GET /repos/{owner}/{repo}`.
    GetRepository,
    /// `POST /app/installations/{id}/access_tokens` (a JWT as bearer).
    InstallationToken,
    /// Any other path under `/api/v3` (answered 404).
    UnknownApi,
    /// `GET /_fake/downloads/<file>`.
    DownloadTarball,
    ListenerOnline,
    ListenerWaitJob,
    ListenerDone,
    /// Other `/_fake/` paths (`/_fake/health`) and anything outside the API.
    Other,
}

impl Endpoint {
    /// True for REST API calls (what GitHub would count against the rate limit).
    pub fn is_api(self) -> bool {
        !matches!(
            self,
            Endpoint::DownloadTarball
                | Endpoint::ListenerOnline
                | Endpoint::ListenerWaitJob
                | Endpoint::ListenerDone
                | Endpoint::Other
        )
    }
}

/// A fault the fake answers with instead of the normal response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// This status (500, 502, 503, 504) with a GitHub-like error body.
    ServerError(u16),
    /// Primary rate limit exhausted: `status` (403 or 429), `x-ratelimit-remaining: 0`,
    /// `x-ratelimit-reset: reset_epoch`.
    PrimaryRateLimit { status: u16, reset_epoch: u64 },
    /// Secondary rate limit: `status` (403 or 429), the "secondary rate limit" message, and
    /// `retry-after` when `Some`.
    SecondaryRateLimit {
        status: u16,
        retry_after: Option<u64>,
    },
    /// 403 without rate-limit markers (a permission problem), with
    /// `X-Accepted-GitHub-Permissions` when `Some`.
    Forbidden {
        accepted_permissions: Option<String>,
    },
    /// Wait this long, then answer normally (the request is processed after the wait, as a
    /// slow GitHub would).
    Slow(Duration),
}

/// A fault on `GET /_fake/downloads/<file>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownloadFault {
    /// Answer with this status and no tarball.
    Status(u16),
    /// Announce the full `Content-Length`, send only the first `n` bytes, close.
    TruncateAfter(usize),
    /// Chunked transfer: the first `n` bytes, then a malformed chunk and close (a server
    /// failing mid-stream).
    BrokenChunkedAfter(usize),
    /// Well-formed chunked transfer, so no length is known up front.
    Chunked,
    /// Wait this long before answering.
    Slow(Duration),
}

/// What the downloads list says the tarball's `sha256_checksum` is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertisedChecksum {
    /// The SHA-256 of the served bytes (the default).
    Actual,
    /// No `sha256_checksum` field.
    Missing,
    /// This value.
    Value(String),
}

/// A page request the fake holds back until the test releases it (see `FakeGitHub::hold_page`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageHold {
    pub id: u64,
    pub endpoint: Endpoint,
    /// The `page` query parameter (1 when absent).
    pub page: usize,
    /// A request is waiting at this hold.
    pub waiting: bool,
    /// Armed holds stop the first matching request; a fired one stops no other.
    pub fired: bool,
    pub released: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultRule {
    pub fault: Fault,
    /// Only requests to this endpoint; any API endpoint when `None`.
    pub endpoint: Option<Endpoint>,
    /// Requests left to fault; forever (until cleared) when `None`.
    pub remaining: Option<usize>,
}

/// A runner registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRunner {
    pub id: u64,
    pub name: String,
    /// `owner/repo` or `org`, as in the charm's `path` config.
    pub path: String,
    pub online: bool,
    pub busy: bool,
    pub labels: Vec<String>,
    pub ephemeral: bool,
    pub runner_group_id: u64,
    /// Set once the runner has connected (`version` is null before, as on GitHub).
    pub version: Option<String>,
    /// Key of the listener endpoints; `Some` for JIT registrations.
    pub jit_key: Option<String>,
    /// Job assigned by a test (queued until the runner's listener takes it).
    pub job_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRunnerGroup {
    pub id: u64,
    pub name: String,
    pub default: bool,
    pub visibility: String,
}

/// A workflow job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeJob {
    pub id: u64,
    pub run_id: u64,
    /// `owner/repo` the job runs in.
    pub repo: String,
    pub name: String,
    pub workflow_name: Option<String>,
    pub head_branch: Option<String>,
    /// queued, in_progress, completed, ...
    pub status: String,
    pub conclusion: Option<String>,
    pub labels: Vec<String>,
    pub runner_id: Option<u64>,
    pub runner_name: Option<String>,
    pub runner_group_id: Option<u64>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    /// While true, the runner's `done` call waits: the runner stays busy (see `release_job`).
    pub held: bool,
}

/// One request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// Full path, e.g. `/api/v3/repos/o/r/actions/runners`.
    pub path: String,
    /// Raw query string without `?`.
    pub query: String,
    /// Lowercase names.
    pub headers: Vec<(String, String)>,
    pub endpoint: Endpoint,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A copy of the fake's registrations, jobs and request log, for `FakeGitHub::wait_until` predicates.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub runners: Vec<FakeRunner>,
    pub jobs: Vec<FakeJob>,
    pub requests: Vec<RecordedRequest>,
}

impl Snapshot {
    pub fn runner(&self, name: &str) -> Option<&FakeRunner> {
        self.runners.iter().find(|r| r.name == name)
    }

    /// Requests received so far for `endpoint`.
    pub fn count(&self, endpoint: Endpoint) -> usize {
        self.requests
            .iter()
            .filter(|r| r.endpoint == endpoint)
            .count()
    }
}

pub struct Tarball {
    pub version: String,
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub advertised: AdvertisedChecksum,
    /// When set, the downloads list carries it as `temp_download_token` and a tarball
    /// download without `Authorization: Bearer <it>` answers 403 (GHES hosting the runner).
    pub download_token: Option<String>,
}

pub struct State {
    pub base_url: String,
    pub tokens: BTreeSet<String>,
    pub runners: BTreeMap<u64, FakeRunner>,
    pub next_runner_id: u64,
    /// Extra groups per org; every org also has group 1 "Default".
    pub groups: BTreeMap<String, Vec<FakeRunnerGroup>>,
    pub next_group_id: u64,
    pub jobs: BTreeMap<u64, FakeJob>,
    pub next_job_id: u64,
    pub next_run_id: u64,
    pub missing_paths: BTreeSet<String>,
    /// Private repositories (`owner/repo`) the token cannot read: the repository and its
    /// jobs answer 404, as GitHub does for a token without access (runner endpoints of the
    /// organisation still work).
    pub private_repos: BTreeSet<String>,
    pub faults: Vec<FaultRule>,
    pub download_faults: Vec<(DownloadFault, usize)>,
    pub tarball: Tarball,
    pub requests: Vec<RecordedRequest>,
    pub label_ids: BTreeMap<String, u64>,
    pub seq: u64,
    /// The primary budget per window (`x-ratelimit-limit`).
    pub rate_limit: u64,
    /// Requests left in this window; at 0 every API request answers 403 until the reset.
    pub rate_remaining: u64,
    pub rate_reset: u64,
    pub holds: Vec<PageHold>,
    pub stopping: bool,
    /// GitHub Apps, their installations and installation tokens.
    pub apps: super::app::Apps,
}

impl State {
    pub fn runner_by_name(&self, name: &str) -> Option<&FakeRunner> {
        self.runners.values().find(|r| r.name == name)
    }

    pub fn runner_by_name_mut(&mut self, name: &str) -> Option<&mut FakeRunner> {
        self.runners.values_mut().find(|r| r.name == name)
    }

    pub fn runner_by_key_mut(&mut self, key: &str) -> Option<&mut FakeRunner> {
        self.runners
            .values_mut()
            .find(|r| r.jit_key.as_deref() == Some(key))
    }

    pub fn label_id(&mut self, name: &str) -> u64 {
        let next = self.label_ids.len() as u64 + 1;
        *self.label_ids.entry(name.to_string()).or_insert(next)
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Group 1 "Default" plus the ones tests added, by id.
    pub fn org_groups(&self, org: &str) -> Vec<FakeRunnerGroup> {
        let mut all = vec![FakeRunnerGroup {
            id: 1,
            name: "Default".into(),
            default: true,
            visibility: "all".into(),
        }];
        all.extend(self.groups.get(org).cloned().unwrap_or_default());
        all
    }

    pub fn add_runner(
        &mut self,
        path: &str,
        name: &str,
        labels: &[String],
        group_id: u64,
        ephemeral: bool,
    ) -> u64 {
        let id = self.next_runner_id;
        self.next_runner_id += 1;
        for l in labels {
            self.label_id(l);
        }
        self.runners.insert(
            id,
            FakeRunner {
                id,
                name: name.to_string(),
                path: path.to_string(),
                online: false,
                busy: false,
                labels: labels.to_vec(),
                ephemeral,
                runner_group_id: group_id,
                version: None,
                jit_key: None,
                job_id: None,
            },
        );
        id
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            runners: self.runners.values().cloned().collect(),
            jobs: self.jobs.values().cloned().collect(),
            requests: self.requests.clone(),
        }
    }

    /// The first fault rule matching `endpoint`, consumed once.
    pub fn take_fault(&mut self, endpoint: Endpoint) -> Option<Fault> {
        let i = self
            .faults
            .iter()
            .position(|r| r.endpoint.is_none_or(|e| e == endpoint) && r.remaining != Some(0))?;
        let rule = &mut self.faults[i];
        let fault = rule.fault.clone();
        if let Some(n) = rule.remaining.as_mut() {
            *n -= 1;
        }
        if rule.remaining == Some(0) {
            self.faults.remove(i);
        }
        Some(fault)
    }

    pub fn take_download_fault(&mut self) -> Option<DownloadFault> {
        let first = self.download_faults.first_mut()?;
        let fault = first.0.clone();
        first.1 -= 1;
        if first.1 == 0 {
            self.download_faults.remove(0);
        }
        Some(fault)
    }
}

/// The fake's state behind the server plumbing's [`super::http::Shared`].
pub type Shared = super::http::Shared<State>;

impl super::http::Stopping for State {
    fn stopping(&self) -> bool {
        self.stopping
    }
}

/// UTC `YYYY-MM-DDTHH:MM:SSZ` for epoch seconds.
pub fn rfc3339(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

pub fn now_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(ALPHABET[(n >> 18) as usize & 63] as char);
        out.push(ALPHABET[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            ALPHABET[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            ALPHABET[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
