//! The admin connection: credential -> registration token (REST) -> `runner-registration`
//! exchange -> Actions service URL + admin token (a JWT). The token's `exp` is read without
//! verifying the JWT (only the service can); the whole chain is redone, lazily, before a
//! call that would start with less than [`REFRESH_MARGIN_SECS`] left.

use super::transport::{scrub, Auth, Call, Transport};
use super::urls::{check_secure, ConfigUrl};
use super::wire::parse_body;
use super::ScaleSetError;
use crate::github::{GitHub, GitHubError};
use crate::secret::Secret;
use base64::Engine;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, PoisonError};
use url::Url;

/// Refresh when less than this is left on the admin token.
pub const REFRESH_MARGIN_SECS: u64 = 60;

/// Where registration tokens come from: the REST client of the charm's credential.
pub trait RegistrationTokens: Send + Sync {
    fn registration_token(&self) -> Result<Secret, GitHubError>;
}

impl<G: GitHub + ?Sized> RegistrationTokens for G {
    fn registration_token(&self) -> Result<Secret, GitHubError> {
        GitHub::registration_token(self)
    }
}

/// `{svc}` and the admin token valid for it. `Debug` is safe.
#[derive(Debug, Clone)]
pub struct AdminConnection {
    pub service_url: Url,
    pub token: Secret,
    /// The token's `exp` (epoch seconds).
    pub expires_epoch: u64,
}

pub(super) struct AdminAuth {
    config_url: ConfigUrl,
    tokens: Arc<dyn RegistrationTokens>,
    current: Mutex<Option<AdminConnection>>,
}

impl AdminAuth {
    pub(super) fn new(config_url: ConfigUrl, tokens: Arc<dyn RegistrationTokens>) -> AdminAuth {
        AdminAuth {
            config_url,
            tokens,
            current: Mutex::new(None),
        }
    }

    pub(super) fn config_url(&self) -> &ConfigUrl {
        &self.config_url
    }

    /// The connection to use now, after the whole chain when none is held or the held one
    /// has less than a minute left. Calls made meanwhile on other threads wait for it.
    pub(super) fn connection(
        &self,
        transport: &Transport,
    ) -> Result<AdminConnection, ScaleSetError> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let now = transport.clock.now_epoch();
        if let Some(c) = current.as_ref() {
            if c.expires_epoch.saturating_sub(now) >= REFRESH_MARGIN_SECS {
                return Ok(c.clone());
            }
        }
        let fresh = self.exchange(transport)?;
        tracing::debug!(
            service_host = fresh.service_url.host_str().unwrap_or(""),
            expires_in_secs = fresh.expires_epoch.saturating_sub(now),
            "scale-set admin token obtained"
        );
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    /// Forget the held connection (after a 401 on it): the next call redoes the chain.
    pub(super) fn invalidate(&self) {
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn exchange(&self, transport: &Transport) -> Result<AdminConnection, ScaleSetError> {
        let registration = self
            .tokens
            .registration_token()
            .map_err(ScaleSetError::RegistrationToken)?;
        let url = self.config_url.registration_exchange_url();
        let path = url.path().to_string();
        let mut call = Call::new(
            "runner-registration",
            "POST",
            url,
            Auth::RemoteAuth(&registration),
        )
        .with_body(json!({"url": self.config_url.as_str(), "runner_event": "register"}));
        call.retry_auth_errors = true;
        let answer = transport.send(&call)?;
        let protocol = |reason: String| ScaleSetError::Protocol {
            method: "POST".into(),
            path: path.clone(),
            reason,
        };
        match answer.status {
            200..=299 => {}
            401 | 403 | 404 => {
                return Err(ScaleSetError::RegistrationRefused {
                    status: answer.status,
                    path,
                    config_url: self.config_url.as_str().to_string(),
                })
            }
            status @ 500..=599 => {
                return Err(ScaleSetError::Server {
                    method: "POST".into(),
                    path,
                    status,
                })
            }
            status => {
                let text = String::from_utf8_lossy(&answer.body);
                return Err(protocol(format!(
                    "status {status}: {}",
                    scrub(&text, &[&registration])
                )));
            }
        }
        let value = parse_body(&answer.body).map_err(protocol)?;
        let field = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or_default();
        let (svc, token) = (field("url"), field("token"));
        if svc.is_empty() || token.is_empty() {
            return Err(protocol("no service url or token in the answer".into()));
        }
        let service_url =
            Url::parse(svc).map_err(|e| protocol(format!("service url is not a URL: {e}")))?;
        check_secure(&service_url)?;
        let token = Secret::new(token);
        let expires_epoch = jwt_expiry(&token)
            .ok_or_else(|| protocol("the admin token is not a JWT with an exp claim".into()))?;
        Ok(AdminConnection {
            service_url,
            token,
            expires_epoch,
        })
    }
}

/// The `exp` claim of a JWT, read without verifying its signature.
pub fn jwt_expiry(token: &Secret) -> Option<u64> {
    let payload = token.expose().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    match claims.get("exp")? {
        Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f as u64)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: &str) -> Secret {
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        Secret::new(format!("{}.{}.sig", e(r#"{"alg":"RS256"}"#), e(claims)))
    }

    #[test]
    fn the_expiry_is_read_from_the_claims() {
        assert_eq!(
            jwt_expiry(&jwt(r#"{"exp": 1700000000, "iss": "x"}"#)),
            Some(1_700_000_000)
        );
        assert_eq!(
            jwt_expiry(&jwt(r#"{"exp": 1700000000.5}"#)),
            Some(1_700_000_000)
        );
        // Padded base64url, as some encoders write it.
        let padded = base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":12}"#);
        assert_eq!(jwt_expiry(&Secret::new(format!("h.{padded}.s"))), Some(12));
        for bad in [
            jwt(r#"{"iss": "x"}"#),
            jwt(r#"{"exp": "soon"}"#),
            jwt("not json"),
            Secret::new("opaque"),
        ] {
            assert_eq!(jwt_expiry(&bad), None);
        }
    }
}
