//! The [`GitHub`] trait over GitHub's REST API with ureq: every page of every list, typed
//! errors carrying method + path + status (never the token), retries bounded per hook, and
//! per-endpoint call counts.
//!
//! `transport` sends one call with its retries and follows pages; `wire` holds the JSON
//! shapes GitHub answers with; `api` is the trait over both.

mod api;
mod mint;
mod transport;
mod wire;

use super::calls::CallCounters;
use super::proxy::{build_agent, is_loopback_host, ProxyError, ProxySettings, Timeouts};
use super::retry::RetryPolicy;
use super::GitHubPath;
use crate::clock::{Clock, SystemClock};
use crate::config::CharmConfig;
use crate::credential::provider::CredentialProvider;
use crate::identity::UnitIdentity;
use crate::secret::Secret;
use std::fmt;
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

/// Everything the client needs; `Debug` is safe (no credential in it).
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// REST API base: `https://api.github.com` or `<github-url>/api/v3`.
    pub api_base_url: String,
    pub path: GitHubPath,
    /// Where every call's bearer token comes from.
    pub credential: Arc<CredentialProvider>,
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
            credential: Arc::new(CredentialProvider::token(token)),
            group: group.into(),
            identity,
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            user_agent_version: env!("CARGO_PKG_VERSION").to_string(),
            proxy: ProxySettings::default(),
            retry: RetryPolicy::default(),
        }
    }

    /// The client for `config`'s scope, through the model's proxies, authenticated by
    /// `credential`.
    pub fn from_config(
        config: &CharmConfig,
        identity: UnitIdentity,
        proxy: ProxySettings,
        credential: Arc<CredentialProvider>,
    ) -> Self {
        ClientSettings {
            proxy,
            credential,
            ..ClientSettings::new(
                config.api_base_url.clone(),
                config.path.clone(),
                Secret::default(),
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
    fn scrub(&self, text: &str, bearer: &Secret) -> String {
        let token = bearer.expose();
        let text: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
        if token.len() >= 4 {
            text.replace(token, "[redacted]")
        } else {
            text
        }
    }
}
