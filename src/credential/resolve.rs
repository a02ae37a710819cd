//! In a hook: the credential the options name, read from its Juju secret when it is one.
//!
//! A secret Juju refuses (not granted, removed, no such key) or a private key that does not
//! parse is a configuration problem (Blocked naming the option, nothing changed); a hook
//! tool that does not answer fails the hook. Nothing runs on a grant: the next converge
//! (config-changed, the timer's reconcile) reads it again.

use std::collections::BTreeMap;

use super::app::AppKey;
use super::{
    AppCredential, Credential, CredentialSource, PRIVATE_KEY_SECRET_KEY, TOKEN_SECRET_KEY,
};
use crate::config::credential::APP_PRIVATE_KEY;
use crate::config::{ConfigError, Problem};
use crate::juju::{HookToolError, HookTools, SecretRead};
use crate::messages;
use crate::secret::Secret;

/// `changed_secret`: the secret a `secret-changed` hook is about (read at its new revision,
/// [`SecretRead::in_hook`]); every other read gets the tracked revision.
pub fn resolve(
    tools: &dyn HookTools,
    source: &CredentialSource,
    changed_secret: Option<&str>,
    app: &str,
) -> Result<Result<Credential, ConfigError>, HookToolError> {
    let blocked = |option: &'static str, expected: String| {
        Ok(Err(ConfigError {
            problems: vec![Problem::Invalid {
                option,
                shown: None,
                expected,
            }],
        }))
    };
    match source {
        CredentialSource::Token(token) => Ok(Ok(Credential::Token(token.clone()))),
        CredentialSource::TokenSecret(uri) => {
            match secret_value(tools, uri, TOKEN_SECRET_KEY, changed_secret, app)? {
                Ok(token) => Ok(Ok(Credential::Token(Secret::new(token.trim())))),
                Err(why) => blocked("token", why),
            }
        }
        CredentialSource::App {
            app_id,
            installation_id,
            private_key_secret,
        } => {
            let pem = match secret_value(
                tools,
                private_key_secret,
                PRIVATE_KEY_SECRET_KEY,
                changed_secret,
                app,
            )? {
                Ok(pem) => Secret::new(pem),
                Err(why) => return blocked(APP_PRIVATE_KEY, why),
            };
            if let Err(e) = AppKey::from_pem(&pem) {
                return blocked(
                    APP_PRIVATE_KEY,
                    messages::app_key_unusable(private_key_secret, e),
                );
            }
            Ok(Ok(Credential::App(AppCredential {
                app_id: *app_id,
                installation_id: *installation_id,
                private_key: pem,
            })))
        }
    }
}

/// The value of `key` in secret `uri`; Err(why) when Juju refuses it or it lacks the key.
fn secret_value(
    tools: &dyn HookTools,
    uri: &str,
    key: &str,
    changed_secret: Option<&str>,
    app: &str,
) -> Result<Result<String, String>, HookToolError> {
    let read = SecretRead::in_hook(changed_secret, uri);
    let mut content: BTreeMap<String, String> = match tools.secret_get(uri, read) {
        Ok(content) => content,
        // Exit 1: Juju answered and refused (permission denied, not found).
        Err(HookToolError::Failed {
            code: 1, stderr, ..
        }) => {
            let says = stderr.trim().trim_start_matches("ERROR ").to_string();
            return Ok(Err(messages::secret_unreadable(uri, app, &says)));
        }
        Err(e) => return Err(e),
    };
    match content.remove(key) {
        Some(value) if !value.trim().is_empty() => Ok(Ok(value)),
        _ => Ok(Err(messages::secret_key_missing(uri, key))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::juju::memory::{MemoryHookTools, MemoryState};

    const URI: &str = "secret:d3kq8ibv1o3c77dkvh0g";

    fn tools_with(content: &[(&str, &str)]) -> MemoryHookTools {
        let mut state = MemoryState::default();
        state.secrets.insert(
            URI.into(),
            content
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        MemoryHookTools::new(state)
    }

    fn blocked(r: Result<Credential, ConfigError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn a_token_secret_is_refreshed_in_its_own_secret_changed_hook() {
        let tools = tools_with(&[("token", "ghp_from_secret\n")]);
        let source = CredentialSource::TokenSecret(URI.into());
        let c = resolve(&tools, &source, Some(URI), "runners")
            .unwrap()
            .unwrap();
        assert_eq!(c, Credential::Token(Secret::new("ghp_from_secret")));
        assert_eq!(
            tools.lock().secret_reads,
            vec![(URI.to_string(), SecretRead::Refresh)]
        );
    }

    #[test]
    fn a_secret_not_granted_is_blocked_with_the_grant_command() {
        let tools = tools_with(&[("token", "ghp_x")]);
        tools.lock().secrets_not_granted.insert(URI.into());
        let source = CredentialSource::TokenSecret(URI.into());
        let msg = blocked(resolve(&tools, &source, None, "runners").unwrap());
        assert!(
            msg.contains(
                "token: cannot read secret secret:d3kq8ibv1o3c77dkvh0g (permission denied)"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("juju grant-secret <secret name> runners"),
            "{msg}"
        );
    }

    #[test]
    fn a_secret_without_the_key_is_blocked_naming_the_key() {
        let tools = tools_with(&[("pat", "ghp_x")]);
        let source = CredentialSource::TokenSecret(URI.into());
        let msg = blocked(resolve(&tools, &source, None, "runners").unwrap());
        assert!(msg.contains("has no key `token`"), "{msg}");
        assert!(!msg.contains("ghp_x"), "{msg}");
    }

    #[test]
    fn a_hook_tool_that_does_not_answer_fails_the_hook() {
        let tools = tools_with(&[("token", "ghp_x")]);
        tools.fail_tool("secret-get", 2, "ERROR connection refused");
        let source = CredentialSource::TokenSecret(URI.into());
        assert!(resolve(&tools, &source, None, "runners").is_err());
    }

    #[test]
    fn an_app_key_that_does_not_parse_is_blocked_without_quoting_it() {
        let tools = tools_with(&[(
            "private-key",
            "-----BEGIN PRIVATE KEY-----\nc2VjcmV0a2V5\n-----END PRIVATE KEY-----",
        )]);
        let source = CredentialSource::App {
            app_id: 1,
            installation_id: 2,
            private_key_secret: URI.into(),
        };
        let msg = blocked(resolve(&tools, &source, None, "runners").unwrap());
        assert!(
            msg.contains("github-app-private-key: the key in secret"),
            "{msg}"
        );
        assert!(!msg.contains("c2VjcmV0a2V5"), "{msg}");
    }

    #[test]
    fn an_app_key_in_either_pem_form_resolves() {
        for pem in [
            include_str!("../../tests/fixtures/test-app-key-pkcs1.pem"),
            include_str!("../../tests/fixtures/test-app-key-pkcs8.pem"),
        ] {
            let tools = tools_with(&[("private-key", pem)]);
            let source = CredentialSource::App {
                app_id: 1,
                installation_id: 2,
                private_key_secret: URI.into(),
            };
            let c = resolve(&tools, &source, None, "runners").unwrap().unwrap();
            assert!(matches!(c, Credential::App(a) if a.app_id == 1 && a.installation_id == 2));
        }
    }
}
