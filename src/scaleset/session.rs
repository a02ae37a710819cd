//! Message sessions and the message queue: create (409 = another live session), refresh
//! (a new queue token), delete, the long poll with `lastMessageId` and
//! `X-ScaleSetMaxCapacity`, acknowledging a message, acquiring available jobs (GHES).
//! Every queue call answers 401 as [`ScaleSetError::MessageQueueTokenExpired`]: the caller
//! refreshes the session and retries once.

use super::client::{Failure, ScaleSetClient};
use super::messages::{decode_message, ScaleSetMessage};
use super::transport::{Auth, Call};
use super::urls::{check_secure, message_url, poll_url, service_url};
use super::wire::{Listing, Session, SessionJson};
use super::ScaleSetError;
use crate::secret::Secret;
use serde_json::{json, Value};
use url::Url;

impl ScaleSetClient {
    /// Open the scale set's message session for `owner` (stable per unit).
    pub fn create_session(&self, scale_set_id: u64, owner: &str) -> Result<Session, ScaleSetError> {
        let path = format!("_apis/runtime/runnerscalesets/{scale_set_id}/sessions");
        let body = json!({"ownerName": owner});
        match self.admin("create-session", "POST", &path, &[], Some(body))? {
            Ok((_, value)) => session_of(scale_set_id, value, "POST", &path),
            Err(f) if f.status == 409 || f.is("RunnerScaleSetSessionConflictException") => {
                Err(ScaleSetError::SessionConflict {
                    scale_set_id,
                    message: f.message,
                })
            }
            Err(f) if f.status == 404 => Err(f.scale_set_gone(scale_set_id)),
            Err(f) => Err(f.into_error()),
        }
    }

    /// The same session with a new queue token (and whatever else changed).
    pub fn refresh_session(&self, session: &Session) -> Result<Session, ScaleSetError> {
        let id = session.scale_set_id;
        let path = format!(
            "_apis/runtime/runnerscalesets/{id}/sessions/{}",
            session.session_id
        );
        match self.admin("refresh-session", "PATCH", &path, &[], None)? {
            Ok((_, value)) => session_of(id, value, "PATCH", &path),
            Err(f) if f.is("RunnerScaleSetNotFoundException") => Err(f.scale_set_gone(id)),
            Err(f) if f.status == 404 || f.is("SessionExpiredException") => Err(lost(id, &f)),
            Err(f) => Err(f.into_error()),
        }
    }

    /// Close the session; one already expired or gone is done.
    pub fn delete_session(&self, session: &Session) -> Result<(), ScaleSetError> {
        let id = session.scale_set_id;
        let path = format!(
            "_apis/runtime/runnerscalesets/{id}/sessions/{}",
            session.session_id
        );
        match self.admin("delete-session", "DELETE", &path, &[], None)? {
            Ok(_) => Ok(()),
            Err(f) if f.status == 404 || f.is("SessionExpiredException") => Ok(()),
            Err(f) => Err(f.into_error()),
        }
    }

    /// Long-poll the queue for the next message after `last_message_id` (0: none processed
    /// yet). `None`: nothing came (202, or an empty 200 as seen in the wild).
    pub fn get_message(
        &self,
        session: &Session,
        last_message_id: i64,
        max_capacity: u32,
    ) -> Result<Option<ScaleSetMessage>, ScaleSetError> {
        let url = poll_url(&session.message_queue_url, last_message_id);
        let token = &session.message_queue_token;
        let mut call = Call::new("get-message", "GET", url, Auth::Bearer(token));
        call.accept = ACCEPT_WITH_VERSION;
        call.max_capacity = Some(max_capacity);
        call.timeout = Some(self.poll_timeout);
        let path = call.url.path().to_string();
        match self.with_queue_token(call, token)? {
            Ok((202, _)) => Ok(None),
            Ok((_, Value::Null)) => {
                tracing::debug!(path = %path, "empty 200 from the message queue; taken as no message");
                Ok(None)
            }
            Ok((_, value)) => {
                decode_message(value)
                    .map(Some)
                    .map_err(|reason| ScaleSetError::Protocol {
                        method: "GET".into(),
                        path,
                        reason,
                    })
            }
            Err(f) if f.is("RunnerScaleSetNotFoundException") => {
                Err(f.scale_set_gone(session.scale_set_id))
            }
            Err(f) if f.status == 404 => Err(lost(session.scale_set_id, &f)),
            Err(f) => Err(f.into_error()),
        }
    }

    /// Acknowledge message `message_id`: it is not delivered again. Gone already is done.
    pub fn delete_message(&self, session: &Session, message_id: i64) -> Result<(), ScaleSetError> {
        let url = message_url(&session.message_queue_url, message_id);
        let token = &session.message_queue_token;
        let call = Call::new("delete-message", "DELETE", url, Auth::Bearer(token));
        match self.with_queue_token(call, token)? {
            Ok(_) => Ok(()),
            Err(f) if f.status == 404 => Ok(()),
            Err(f) => Err(f.into_error()),
        }
    }

    /// Acquire the jobs of `runner_request_ids` (JobAvailable, GHES): the ids the service
    /// gave this scale set. With the session's token, not the admin token.
    pub fn acquire_jobs(
        &self,
        session: &Session,
        runner_request_ids: &[i64],
    ) -> Result<Vec<i64>, ScaleSetError> {
        if runner_request_ids.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.admin_connection()?;
        let relative = format!(
            "_apis/runtime/runnerscalesets/{}/acquirejobs",
            session.scale_set_id
        );
        let url = service_url(&conn.service_url, &relative, &[]);
        let token = &session.message_queue_token;
        let call = Call::new("acquire-jobs", "POST", url, Auth::Bearer(token))
            .with_body(json!(runner_request_ids));
        match self.with_queue_token(call, token)? {
            Ok((_, Value::Null)) => Ok(Vec::new()),
            Ok((_, value)) => Ok(Self::decode::<Listing<i64>>(value, "POST", &relative)?.value),
            Err(f) if f.status == 404 => Err(f.scale_set_gone(session.scale_set_id)),
            Err(f) => Err(f.into_error()),
        }
    }
}

/// The poll's `Accept`: the API version rides there, not in the query (kept equal to
/// `urls::API_VERSION` by the test below).
const ACCEPT_WITH_VERSION: &str = "application/json; api-version=6.0-preview";

fn lost(scale_set_id: u64, f: &Failure) -> ScaleSetError {
    ScaleSetError::SessionNotFound {
        scale_set_id,
        method: f.method.clone(),
        path: f.path.clone(),
    }
}

/// A session from its answer; one without a queue URL or token (seen during a broker
/// incident) is an error, to be retried.
fn session_of(
    scale_set_id: u64,
    value: Value,
    method: &str,
    path: &str,
) -> Result<Session, ScaleSetError> {
    let json: SessionJson = ScaleSetClient::decode(value, method, path)?;
    let protocol = |reason: &str| ScaleSetError::Protocol {
        method: method.into(),
        path: path.into(),
        reason: reason.into(),
    };
    if json.message_queue_url.is_empty() || json.message_queue_access_token.is_empty() {
        return Err(protocol(
            "the session has no message queue URL or token (a service incident); retry later",
        ));
    }
    let message_queue_url = Url::parse(&json.message_queue_url)
        .map_err(|_| protocol("the message queue URL is not a URL"))?;
    check_secure(&message_queue_url)?;
    let statistics = json.statistics.unwrap_or(json.runner_scale_set.statistics);
    Ok(Session {
        scale_set_id,
        session_id: json.session_id,
        owner_name: json.owner_name,
        scale_set: json.runner_scale_set,
        message_queue_url,
        message_queue_token: Secret::new(json.message_queue_access_token),
        statistics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaleset::urls::API_VERSION;

    #[test]
    fn the_poll_accept_carries_the_api_version() {
        assert_eq!(
            ACCEPT_WITH_VERSION,
            format!("application/json; api-version={API_VERSION}")
        );
    }
}
