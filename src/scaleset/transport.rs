//! One exchange with GitHub or the Actions service: the agent for the URL's host (through
//! the model's proxy, as [`crate::github`] builds it), the auth header, bounded retries on
//! what may pass (connection errors, 5xx but 501, 429), the body read capped. The caller interprets every other status.

use super::ScaleSetError;
use crate::clock::Clock;
use crate::github::proxy::{build_agent, ProxySettings, Timeouts};
use crate::github::retry::{decide, jitter, Decision, RetryPolicy, Retryable};
use crate::secret::Secret;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use url::Url;

/// Largest answer read into memory (a message holds at most 50 job messages).
const MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
/// Longest service text quoted in an error.
pub(super) const MAX_MESSAGE_CHARS: usize = 300;

pub(super) enum Auth<'a> {
    /// `RemoteAuth <registration token>`: the registration exchange only.
    RemoteAuth(&'a Secret),
    /// `Bearer <admin or message-queue token>`.
    Bearer(&'a Secret),
}

impl Auth<'_> {
    fn header(&self) -> String {
        match self {
            Auth::RemoteAuth(t) => format!("RemoteAuth {}", t.expose()),
            Auth::Bearer(t) => format!("Bearer {}", t.expose()),
        }
    }

    fn secret(&self) -> &Secret {
        match self {
            Auth::RemoteAuth(t) | Auth::Bearer(t) => t,
        }
    }
}

pub(super) struct Call<'a> {
    /// Counter key: which operation.
    pub(super) name: &'static str,
    pub(super) method: &'static str,
    pub(super) url: Url,
    pub(super) auth: Auth<'a>,
    pub(super) body: Option<Value>,
    /// `Accept` (the message poll carries the API version there).
    pub(super) accept: &'static str,
    pub(super) max_capacity: Option<u32>,
    /// Whole-request timeout instead of the agent's (the long poll).
    pub(super) timeout: Option<Duration>,
    /// Also retry 401/403: a just-minted registration token can be briefly unknown.
    pub(super) retry_auth_errors: bool,
}

impl<'a> Call<'a> {
    pub(super) fn new(name: &'static str, method: &'static str, url: Url, auth: Auth<'a>) -> Self {
        Call {
            name,
            method,
            url,
            auth,
            body: None,
            accept: "application/json",
            max_capacity: None,
            timeout: None,
            retry_auth_errors: false,
        }
    }

    pub(super) fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// An answer after the retries: any status, the body as sent (`wire::parse_body` strips a BOM).
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Vec<u8>,
}

pub(super) struct Transport {
    proxy: ProxySettings,
    timeouts: Timeouts,
    user_agent: String,
    retry: RetryPolicy,
    pub(super) clock: Arc<dyn Clock>,
    /// One agent per scheme and host: the proxy that applies depends on the host.
    agents: Mutex<BTreeMap<(String, String), ureq::Agent>>,
    calls: Mutex<BTreeMap<&'static str, u64>>,
}

impl Transport {
    pub(super) fn new(
        proxy: ProxySettings,
        timeouts: Timeouts,
        user_agent: String,
        retry: RetryPolicy,
        clock: Arc<dyn Clock>,
    ) -> Transport {
        Transport {
            proxy,
            timeouts,
            user_agent,
            retry,
            clock,
            agents: Mutex::new(BTreeMap::new()),
            calls: Mutex::new(BTreeMap::new()),
        }
    }

    /// Requests sent so far (retries included), per operation.
    pub(super) fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn agent(&self, url: &Url) -> Result<ureq::Agent, ScaleSetError> {
        let key = (
            url.scheme().to_string(),
            url.host_str().unwrap_or_default().to_string(),
        );
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = agents.get(&key) {
            return Ok(a.clone());
        }
        let agent = build_agent(&self.proxy, &key.0, &key.1, self.timeouts, &self.user_agent)?;
        agents.insert(key, agent.clone());
        Ok(agent)
    }

    pub(super) fn send(&self, call: &Call) -> Result<Answer, ScaleSetError> {
        let agent = self.agent(&call.url)?;
        let mut retries = 0;
        let mut slept = Duration::ZERO;
        loop {
            *self
                .calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(call.name)
                .or_default() += 1;
            let attempt = self.attempt(&agent, call);
            let retryable = match &attempt {
                Err(_) => Some(Retryable::Transient),
                Ok((answer, retry_after)) => match answer.status {
                    429 => Some(match retry_after {
                        Some(s) => Retryable::SecondaryLimit {
                            retry_after: Some(Duration::from_secs(*s)),
                        },
                        None => Retryable::Transient,
                    }),
                    500..=599 if answer.status != 501 => Some(Retryable::Transient),
                    401 | 403 if call.retry_auth_errors => Some(Retryable::Transient),
                    _ => None,
                },
            };
            let decision = retryable.map(|r| decide(&self.retry, r, retries, slept, jitter()));
            tracing::debug!(
                call = call.name,
                method = call.method,
                path = call.url.path(),
                status = attempt.as_ref().ok().map(|(a, _)| a.status),
                retries,
                "scale-set call"
            );
            match decision {
                Some(Decision::RetryAfter(wait)) => {
                    slept += wait;
                    retries += 1;
                    self.clock.sleep(wait);
                }
                _ => {
                    return attempt
                        .map(|(a, _)| a)
                        .map_err(|reason| ScaleSetError::Transport {
                            host: call.url.host_str().unwrap_or_default().to_string(),
                            method: call.method.to_string(),
                            path: call.url.path().to_string(),
                            reason,
                        })
                }
            }
        }
    }

    /// One attempt: the answer and its `Retry-After` seconds, or why none came.
    fn attempt(&self, agent: &ureq::Agent, call: &Call) -> Result<(Answer, Option<u64>), String> {
        let mut request = agent
            .request_url(call.method, &call.url)
            .set("Accept", call.accept)
            .set("User-Agent", &self.user_agent)
            .set("Authorization", &call.auth.header());
        if let Some(cap) = call.max_capacity {
            request = request.set("X-ScaleSetMaxCapacity", &cap.to_string());
        }
        if let Some(t) = call.timeout {
            request = request.timeout(t);
        }
        let result = match &call.body {
            Some(b) => request.send_json(b),
            None if matches!(call.method, "POST" | "PATCH") => request
                .set("Content-Type", "application/json")
                .send_bytes(&[]),
            None => request.call(),
        };
        let response = match result {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                let reason = match t.message() {
                    Some(m) => format!("{}: {m}", t.kind()),
                    None => t.kind().to_string(),
                };
                return Err(scrub(&reason, &[call.auth.secret()]));
            }
        };
        let status = response.status();
        let retry_after = response
            .header("retry-after")
            .and_then(|v| v.trim().parse().ok());
        let mut body = Vec::new();
        response
            .into_reader()
            .take(MAX_BODY_BYTES)
            .read_to_end(&mut body)
            .map_err(|e| format!("reading the answer: {}", e.kind()))?;
        Ok((Answer { status, body }, retry_after))
    }
}

/// `text` cut short, with every secret in `secrets` replaced.
pub(super) fn scrub(text: &str, secrets: &[&Secret]) -> String {
    let mut text: String = text.chars().take(MAX_MESSAGE_CHARS).collect();
    for s in secrets {
        if s.expose().len() >= 4 {
            text = text.replace(s.expose(), "[redacted]");
        }
    }
    text
}
