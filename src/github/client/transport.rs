//! One API call with its bounded retries, the answer classified into a typed error, and
//! every page of a listing (only ever on the API's own origin).

use super::{GitHubClient, ACCEPT, API_VERSION, MAX_BODY_BYTES, MAX_PAGES};
use crate::credential::provider::{CredentialError, CredentialProvider};
use crate::credential::Credential;
use crate::github::calls::{process_counters, ApiCall};
use crate::github::classify::{classify, next_link, permission_needed, Class, ResponseFacts};
use crate::github::outcomes::{process_outcomes, RateLimit};
use crate::github::retry::{decide, jitter, Decision, Retryable};
use crate::github::GitHubError;
use crate::secret::Secret;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::io::Read;
use std::sync::PoisonError;
use std::time::Duration;
use url::Url;

/// An answer worth reading: 2xx, or a 404/409/422 the caller interprets.
pub(super) struct Reply {
    pub(super) link: Option<String>,
    pub(super) body: String,
}

impl GitHubClient {
    /// One call with its retries: 2xx is `Ok`; anything else is the typed error an operator
    /// can act on (callers turn the 404s and 422s that mean an outcome into that outcome).
    pub(super) fn send(
        &self,
        call: ApiCall,
        method: &str,
        url: &Url,
        body: Option<&Value>,
    ) -> Result<Reply, GitHubError> {
        let provider = &self.settings.credential;
        let bearer = provider.bearer(self).map_err(credential_error)?;
        let unauthorized = match self.send_as(call, method, url, body, &bearer) {
            Err(e @ GitHubError::Unauthorized { .. }) => e,
            other => return other,
        };
        // An App's installation token refused: one renewal and one retry.
        let Some(fresh) = provider.renew(&bearer, self).map_err(credential_error)? else {
            return Err(unauthorized);
        };
        match self.send_as(call, method, url, body, &fresh) {
            Err(GitHubError::Unauthorized { .. }) => Err(app_rejected(provider)),
            other => other,
        }
    }

    /// One call with `bearer`, retried as the policy allows.
    pub(super) fn send_as(
        &self,
        call: ApiCall,
        method: &str,
        url: &Url,
        body: Option<&Value>,
        bearer: &Secret,
    ) -> Result<Reply, GitHubError> {
        let path = url.path().to_string();
        let mut retries = 0;
        loop {
            self.calls.record(call);
            process_counters().record(call);
            let (retryable, error) = match self.attempt(method, url, body, bearer) {
                Attempt::Answer { facts, link, body } => {
                    process_outcomes().record(call, Some(facts.status));
                    tracing::debug!(method, path = %path, status = facts.status, retries, "GitHub API call");
                    match self.interpret(method, &path, facts, link, body, bearer) {
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

    fn attempt(&self, method: &str, url: &Url, body: Option<&Value>, bearer: &Secret) -> Attempt {
        let request = self
            .agent
            .request_url(method, url)
            .set("Accept", ACCEPT)
            .set("X-GitHub-Api-Version", API_VERSION)
            .set("User-Agent", &self.settings.user_agent())
            .set("Authorization", &format!("Bearer {}", bearer.expose()));
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
                return Attempt::Transport(self.scrub(&reason, bearer));
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
        bearer: &Secret,
    ) -> Interpreted {
        let m = method.to_string();
        let p = path.to_string();
        let now = self.clock.now_epoch();
        let message = self.scrub(&facts.message, bearer);
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

    pub(super) fn parse<T: DeserializeOwned>(
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
    pub(super) fn get_all_pages<P: DeserializeOwned, T>(
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

/// A credential that cannot give a bearer token: Blocked naming it, unless GitHub was only
/// unreachable while minting (then the next round retries).
fn credential_error(e: CredentialError) -> GitHubError {
    match e {
        CredentialError::Mint { source, .. }
            if !matches!(
                source,
                GitHubError::Unauthorized { .. }
                    | GitHubError::Forbidden { .. }
                    | GitHubError::NotFound { .. }
                    | GitHubError::Unprocessable { .. }
            ) =>
        {
            source
        }
        other => GitHubError::Credential {
            message: other.to_string(),
        },
    }
}

fn app_rejected(provider: &CredentialProvider) -> GitHubError {
    let message = match provider.credential() {
        Ok(Credential::App(app)) => {
            crate::messages::github_app_rejected(app.app_id, app.installation_id)
        }
        Ok(Credential::Token(_)) | Err(_) => crate::messages::GITHUB_TOKEN_INVALID.to_string(),
    };
    GitHubError::Credential { message }
}
