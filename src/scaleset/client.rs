//! [`ScaleSetClient`]: every Actions service call a listener makes, over the admin
//! connection (refreshed lazily, and once more after a 401). This file: settings, the two
//! call shapes (admin token, message-queue token), runner groups and scale sets; `runners` adds JIT
//! configs and registrations, `session` sessions and messages.

use super::auth::{AdminAuth, AdminConnection, RegistrationTokens};
use super::transport::{scrub, Answer, Auth, Call, Transport};
use super::urls::{service_url, ConfigUrl};
use super::wire::{
    parse_body, ErrorJson, Listing, NewScaleSet, RunnerGroupJson, ScaleSet, ScaleSetUpdate,
};
use super::{ScaleSetError, DEFAULT_RUNNER_GROUP_ID};
use crate::clock::{Clock, SystemClock};
use crate::github::proxy::{ProxySettings, Timeouts};
use crate::github::retry::RetryPolicy;
use crate::secret::Secret;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Everything the client needs; `Debug` is safe (no secret in it).
#[derive(Debug, Clone)]
pub struct ScaleSetSettings {
    pub config_url: ConfigUrl,
    pub proxy: ProxySettings,
    pub connect_timeout: Duration,
    /// Whole request, for every call but the long poll.
    pub call_timeout: Duration,
    /// Whole long poll: longer than the ~50 s the service holds one.
    pub poll_timeout: Duration,
    pub retry: RetryPolicy,
    /// `User-Agent: github-runner-charm/<version> (scale-set)`.
    pub user_agent_version: String,
}

impl ScaleSetSettings {
    /// 10 s connect, 30 s per call, 120 s per poll, retries as GitHub's own client (4, from
    /// 1 s doubling to 30 s), no proxy (callers set the model's).
    pub fn new(config_url: ConfigUrl) -> ScaleSetSettings {
        ScaleSetSettings {
            config_url,
            proxy: ProxySettings::default(),
            connect_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(30),
            poll_timeout: Duration::from_secs(120),
            retry: RetryPolicy {
                max_retries: 4,
                base_delay: Duration::from_secs(1),
                max_delay: Duration::from_secs(30),
                sleep_budget: Duration::from_secs(120),
            },
            user_agent_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

pub struct ScaleSetClient {
    pub(super) auth: AdminAuth,
    pub(super) transport: Transport,
    pub(super) poll_timeout: Duration,
}

impl fmt::Debug for ScaleSetClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScaleSetClient")
            .field("config_url", &self.auth.config_url().as_str())
            .finish_non_exhaustive()
    }
}

/// An answer that is not a success, for the caller to tell apart.
pub(super) struct Failure {
    pub(super) status: u16,
    pub(super) type_name: String,
    pub(super) message: String,
    pub(super) method: String,
    pub(super) path: String,
}

impl Failure {
    fn of(answer: &Answer, method: &str, url: &Url, secrets: &[&Secret]) -> Failure {
        let parsed = parse_body(&answer.body)
            .ok()
            .and_then(|v| serde_json::from_value::<ErrorJson>(v).ok());
        let (type_name, message) = match parsed {
            Some(e) => (e.type_name, e.message),
            // text/plain errors.
            None => (
                String::new(),
                String::from_utf8_lossy(&answer.body).trim().to_string(),
            ),
        };
        Failure {
            status: answer.status,
            type_name: scrub(&type_name, secrets),
            message: scrub(&message, secrets),
            method: method.to_string(),
            path: url.path().to_string(),
        }
    }

    /// The service matches exception types by substring (they may be assembly-qualified).
    pub(super) fn is(&self, type_name: &str) -> bool {
        self.type_name.contains(type_name)
    }

    pub(super) fn scale_set_gone(&self, scale_set_id: u64) -> ScaleSetError {
        ScaleSetError::ScaleSetNotFound {
            scale_set_id,
            method: self.method.clone(),
            path: self.path.clone(),
        }
    }

    /// What no caller has a special meaning for.
    pub(super) fn into_error(self) -> ScaleSetError {
        match self.status {
            403 => ScaleSetError::Forbidden {
                method: self.method,
                path: self.path,
                message: self.message,
            },
            429 => ScaleSetError::RateLimited {
                method: self.method,
                path: self.path,
                retry_after: None,
            },
            500..=599 => ScaleSetError::Server {
                method: self.method,
                path: self.path,
                status: self.status,
            },
            status => ScaleSetError::Service {
                status,
                method: self.method,
                path: self.path,
                type_name: self.type_name,
                message: self.message,
            },
        }
    }
}

/// A success (its folded JSON, `Null` when empty) or a failure to interpret.
pub(super) type Outcome = Result<(u16, Value), Failure>;

impl ScaleSetClient {
    pub fn new(settings: ScaleSetSettings, tokens: Arc<dyn RegistrationTokens>) -> ScaleSetClient {
        ScaleSetClient::with_clock(settings, tokens, Arc::new(SystemClock))
    }

    /// Token expiry and retry waits through `clock` (tests share one with the fake).
    pub fn with_clock(
        settings: ScaleSetSettings,
        tokens: Arc<dyn RegistrationTokens>,
        clock: Arc<dyn Clock>,
    ) -> ScaleSetClient {
        let timeouts = Timeouts {
            connect: settings.connect_timeout,
            total: settings.call_timeout,
        };
        let user_agent = format!(
            "github-runner-charm/{} (scale-set)",
            settings.user_agent_version
        );
        ScaleSetClient {
            transport: Transport::new(settings.proxy, timeouts, user_agent, settings.retry, clock),
            auth: AdminAuth::new(settings.config_url, tokens),
            poll_timeout: settings.poll_timeout,
        }
    }

    /// Requests sent so far (retries included), per operation: the registration exchange
    /// is `runner-registration`; the REST registration token is counted by its client.
    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.transport.calls()
    }

    /// The admin connection now (redoing the chain if under a minute is left).
    pub fn admin_connection(&self) -> Result<AdminConnection, ScaleSetError> {
        self.auth.connection(&self.transport)
    }

    /// A call with the admin token; a 401 redoes the chain once.
    pub(super) fn admin(
        &self,
        name: &'static str,
        method: &'static str,
        relative: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Result<Outcome, ScaleSetError> {
        let mut refreshed = false;
        loop {
            let conn = self.auth.connection(&self.transport)?;
            let url = service_url(&conn.service_url, relative, query);
            let mut call = Call::new(name, method, url.clone(), Auth::Bearer(&conn.token));
            call.body = body.clone();
            let answer = self.transport.send(&call)?;
            if answer.status == 401 {
                self.auth.invalidate();
                if refreshed {
                    return Err(ScaleSetError::AdminUnauthorized {
                        method: method.into(),
                        path: url.path().into(),
                    });
                }
                refreshed = true;
                continue;
            }
            return self.outcome(answer, method, &url, &[&conn.token]);
        }
    }

    /// A call with a session's message-queue token: 401 is [`ScaleSetError::MessageQueueTokenExpired`].
    pub(super) fn with_queue_token(
        &self,
        call: Call,
        token: &Secret,
    ) -> Result<Outcome, ScaleSetError> {
        let answer = self.transport.send(&call)?;
        if answer.status == 401 {
            return Err(ScaleSetError::MessageQueueTokenExpired {
                method: call.method.into(),
                path: call.url.path().into(),
            });
        }
        self.outcome(answer, call.method, &call.url, &[token])
    }

    fn outcome(
        &self,
        answer: Answer,
        method: &str,
        url: &Url,
        secrets: &[&Secret],
    ) -> Result<Outcome, ScaleSetError> {
        if !(200..300).contains(&answer.status) {
            return Ok(Err(Failure::of(&answer, method, url, secrets)));
        }
        let value = parse_body(&answer.body).map_err(|reason| ScaleSetError::Protocol {
            method: method.into(),
            path: url.path().into(),
            reason,
        })?;
        Ok(Ok((answer.status, value)))
    }

    pub(super) fn decode<T: DeserializeOwned>(
        value: Value,
        method: &str,
        what: &str,
    ) -> Result<T, ScaleSetError> {
        serde_json::from_value(value).map_err(|e| ScaleSetError::Protocol {
            method: method.into(),
            path: what.into(),
            reason: format!("unexpected JSON: {e}"),
        })
    }

    /// The runner group's id: 1 for the default group (empty or `default`), else looked up.
    pub fn runner_group_id(&self, name: &str) -> Result<u64, ScaleSetError> {
        let name = name.trim();
        if name.is_empty() || name.eq_ignore_ascii_case("default") {
            return Ok(DEFAULT_RUNNER_GROUP_ID);
        }
        let path = "_apis/runtime/runnergroups/";
        let (_, value) = self
            .admin(
                "get-runner-group",
                "GET",
                path,
                &[("groupName", name)],
                None,
            )?
            .map_err(Failure::into_error)?;
        let groups: Listing<RunnerGroupJson> = Self::decode(value, "GET", path)?;
        match groups.value.as_slice() {
            [] => Err(ScaleSetError::RunnerGroupNotFound { name: name.into() }),
            [one] => Ok(one.id),
            _ => Err(ScaleSetError::Protocol {
                method: "GET".into(),
                path: path.into(),
                reason: format!("{} runner groups named {name:?}", groups.count.max(2)),
            }),
        }
    }

    pub fn scale_set_by_name(
        &self,
        group_id: u64,
        name: &str,
    ) -> Result<Option<ScaleSet>, ScaleSetError> {
        let path = "_apis/runtime/runnerscalesets";
        let group = group_id.to_string();
        let query = [("runnerGroupId", group.as_str()), ("name", name)];
        let (_, value) = self
            .admin("get-scale-set", "GET", path, &query, None)?
            .map_err(Failure::into_error)?;
        let sets: Listing<ScaleSet> = Self::decode(value, "GET", path)?;
        let mut found = sets.value.into_iter();
        match (found.next(), found.next()) {
            (one, None) => Ok(one),
            _ => Err(ScaleSetError::Protocol {
                method: "GET".into(),
                path: path.into(),
                reason: format!("more than one scale set named {name:?} in group {group_id}"),
            }),
        }
    }

    pub fn scale_set(&self, id: u64) -> Result<Option<ScaleSet>, ScaleSetError> {
        let path = format!("_apis/runtime/runnerscalesets/{id}");
        match self.admin("get-scale-set", "GET", &path, &[], None)? {
            Ok((_, value)) => Ok(Some(Self::decode(value, "GET", &path)?)),
            Err(f) if f.status == 404 => Ok(None),
            Err(f) => Err(f.into_error()),
        }
    }

    /// Create; a name already taken in the group answers 400 (or 409), surfaced as
    /// [`ScaleSetError::Service`] with the service's message.
    pub fn create_scale_set(&self, new: &NewScaleSet) -> Result<ScaleSet, ScaleSetError> {
        let path = "_apis/runtime/runnerscalesets";
        let (_, value) = self
            .admin("create-scale-set", "POST", path, &[], Some(new.body()))?
            .map_err(Failure::into_error)?;
        let set: ScaleSet = Self::decode(value, "POST", path)?;
        if set.id == 0 {
            return Err(ScaleSetError::Protocol {
                method: "POST".into(),
                path: path.into(),
                reason: "the created scale set has no id".into(),
            });
        }
        Ok(set)
    }

    pub fn update_scale_set(
        &self,
        id: u64,
        update: &ScaleSetUpdate,
    ) -> Result<ScaleSet, ScaleSetError> {
        let path = format!("_apis/runtime/runnerscalesets/{id}");
        match self.admin("update-scale-set", "PATCH", &path, &[], Some(update.body()))? {
            Ok((_, value)) => Self::decode(value, "PATCH", &path),
            Err(f) if f.status == 404 => Err(f.scale_set_gone(id)),
            Err(f) => Err(f.into_error()),
        }
    }

    /// Delete; one already gone is done.
    pub fn delete_scale_set(&self, id: u64) -> Result<(), ScaleSetError> {
        let path = format!("_apis/runtime/runnerscalesets/{id}");
        match self.admin("delete-scale-set", "DELETE", &path, &[], None)? {
            Ok(_) => Ok(()),
            Err(f) if f.status == 404 => Ok(()),
            Err(f) => Err(f.into_error()),
        }
    }
}
