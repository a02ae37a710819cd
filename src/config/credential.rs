//! The credential options: `token` (the token itself or a Juju secret URI), or the three
//! `github-app-*` options together. Which secret they name is read later, in a hook
//! (`crate::credential::resolve`); here only their shape is checked.

use super::error::Problem;
use crate::credential::CredentialSource;
use crate::messages;
use crate::secret::Secret;
use serde_json::{Map, Value};

pub const APP_ID: &str = "github-app-id";
pub const APP_INSTALLATION_ID: &str = "github-app-installation-id";
pub const APP_PRIVATE_KEY: &str = "github-app-private-key";

/// What `config-get` says the credential is: invalid problems and missing ones, apart.
pub(super) fn read(
    raw: &Map<String, Value>,
    app: &str,
) -> Result<CredentialSource, (Vec<Problem>, Vec<Problem>)> {
    let value = |key: &str| raw.get(key).filter(|v| !v.is_null());
    let mut invalid = Vec::new();
    let token = match value("token") {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            invalid.push(Problem::Invalid {
                option: "token",
                shown: None,
                expected: "expected a string (the value is not shown: it is a secret)".into(),
            });
            None
        }
    };
    let id = |key: &'static str, invalid: &mut Vec<Problem>| match value(key) {
        None => None,
        Some(v) => match v.as_u64() {
            Some(0) => None,
            Some(n) => Some(n),
            None => {
                invalid.push(Problem::invalid(
                    key,
                    v,
                    "expected a whole number (0: unset)",
                ));
                None
            }
        },
    };
    let app_id = id(APP_ID, &mut invalid);
    let installation_id = id(APP_INSTALLATION_ID, &mut invalid);
    let private_key = match value(APP_PRIVATE_KEY) {
        None => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if is_secret_uri(s) => Some(s.clone()),
        // Never quoted: an operator may have pasted the key itself.
        Some(_) => {
            invalid.push(Problem::Invalid {
                option: APP_PRIVATE_KEY,
                shown: None,
                expected: messages::app_key_option_not_a_secret(app),
            });
            None
        }
    };
    // Given counts an invalid value too: it is reported as invalid, not also as missing.
    let given = |option: &str, parsed: bool| parsed || invalid.iter().any(|p| p.option() == option);
    let app_options = [
        (APP_ID, given(APP_ID, app_id.is_some())),
        (
            APP_INSTALLATION_ID,
            given(APP_INSTALLATION_ID, installation_id.is_some()),
        ),
        (
            APP_PRIVATE_KEY,
            given(APP_PRIVATE_KEY, private_key.is_some()),
        ),
    ];
    let any_app = app_options.iter().any(|(_, set)| *set);
    if token.is_some() && any_app {
        invalid.push(Problem::Invalid {
            option: "token",
            shown: None,
            expected: messages::token_and_app_both_set(app),
        });
    }
    let mut missing = Vec::new();
    if token.is_none() && !any_app && invalid.is_empty() {
        missing.push(Problem::Missing {
            option: "token",
            fix: messages::credential_fix(app),
        });
    }
    if token.is_none() && any_app {
        for (option, set) in app_options {
            if !set {
                missing.push(Problem::Missing {
                    option,
                    fix: messages::app_option_fix(app, option),
                });
            }
        }
    }
    if !invalid.is_empty() || !missing.is_empty() {
        return Err((invalid, missing));
    }
    Ok(match (token, app_id, installation_id, private_key) {
        (Some(t), ..) if is_secret_uri(&t) => CredentialSource::TokenSecret(t),
        (Some(t), ..) => CredentialSource::Token(Secret::new(t)),
        (None, Some(app_id), Some(installation_id), Some(private_key_secret)) => {
            CredentialSource::App {
                app_id,
                installation_id,
                private_key_secret,
            }
        }
        // Every other combination pushed a problem above.
        _ => {
            return Err((
                Vec::new(),
                vec![Problem::Missing {
                    option: "token",
                    fix: messages::credential_fix(app),
                }],
            ))
        }
    })
}

/// `secret:<id>` or `secret://<model-uuid>/<id>`, as `juju add-secret` prints it.
pub fn is_secret_uri(text: &str) -> bool {
    text.strip_prefix("secret:")
        .map(|id| id.trim_start_matches("//"))
        .is_some_and(|id| {
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '/' || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read_json(v: Value) -> Result<CredentialSource, String> {
        read(v.as_object().unwrap(), "runners").map_err(|(invalid, missing)| {
            let all: Vec<String> = invalid
                .iter()
                .chain(&missing)
                .map(|p| p.to_string())
                .collect();
            all.join("; ")
        })
    }

    #[test]
    fn token_is_the_token_or_a_secret_uri() {
        assert_eq!(
            read_json(json!({"token": "ghp_x"})).unwrap(),
            CredentialSource::Token(Secret::new("ghp_x"))
        );
        assert_eq!(
            read_json(json!({"token": "secret:d3kq8ibv1o3c77dkvh0g"})).unwrap(),
            CredentialSource::TokenSecret("secret:d3kq8ibv1o3c77dkvh0g".into())
        );
    }

    #[test]
    fn the_three_app_options_together_replace_token() {
        let app = json!({"github-app-id": 12, "github-app-installation-id": 34,
                         "github-app-private-key": "secret:abc"});
        assert_eq!(
            read_json(app).unwrap(),
            CredentialSource::App {
                app_id: 12,
                installation_id: 34,
                private_key_secret: "secret:abc".into()
            }
        );
    }

    #[test]
    fn token_and_app_options_together_are_refused_naming_both() {
        let msg = read_json(json!({"token": "ghp_x", "github-app-id": 12})).unwrap_err();
        assert!(
            msg.contains("token") && msg.contains("github-app-*"),
            "{msg}"
        );
        assert!(!msg.contains("ghp_x"), "{msg}");
    }

    #[test]
    fn a_partial_app_set_names_what_is_missing() {
        let msg = read_json(json!({"github-app-id": 12})).unwrap_err();
        assert!(msg.contains("github-app-installation-id: missing"), "{msg}");
        assert!(msg.contains("github-app-private-key: missing"), "{msg}");
        assert!(!msg.contains("github-app-id: missing"), "{msg}");
    }

    #[test]
    fn a_pasted_key_is_refused_and_not_quoted() {
        let msg = read_json(json!({"github-app-id": 1, "github-app-installation-id": 2,
            "github-app-private-key": "-----BEGIN RSA PRIVATE KEY-----\nMIIEsecret"}))
        .unwrap_err();
        assert!(
            msg.contains("github-app-private-key") && msg.contains("juju add-secret"),
            "{msg}"
        );
        assert!(
            !msg.contains("MIIEsecret") && !msg.contains("missing"),
            "{msg}"
        );
    }

    #[test]
    fn nothing_set_asks_for_a_credential() {
        let msg = read_json(json!({})).unwrap_err();
        assert!(msg.contains("token: missing"), "{msg}");
    }

    #[test]
    fn secret_uris_are_what_juju_prints() {
        assert!(is_secret_uri("secret:d3kq8ibv1o3c77dkvh0g"));
        assert!(is_secret_uri(
            "secret://0b5a1ef1-6b8a-4b5e-8f1a-7d0c3e2b1a90/d3kq8ibv1o3c77dkvh0g"
        ));
        assert!(!is_secret_uri("secret:"));
        assert!(!is_secret_uri("ghp_secret:x"));
        assert!(!is_secret_uri("secret:a b"));
    }
}
