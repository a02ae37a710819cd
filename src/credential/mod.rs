//! The GitHub credential, for every consumer (hooks, reactive workers, anything that calls
//! GitHub): what the options name ([`CredentialSource`]), what it resolves to
//! ([`Credential`], read from Juju secrets by [`resolve`] in a hook), the unit's 0600
//! credential file ([`store`], with the App's installation token cached under a lock) and
//! the [`provider::CredentialProvider`] the GitHub client asks for its bearer token.
//!
//! Why a file and not only the hook's memory: a reactive worker runs for days outside any
//! hook and cannot call `secret-get`; it reads what the last hook resolved, and shares the
//! installation token the hooks minted (one mint per hour for the whole unit, not one per
//! process).

pub mod app;
pub mod provider;
pub mod resolve;
pub mod store;

use crate::secret::Secret;

/// Key of the token in a user secret named by `token` (`juju add-secret <name> token=<pat>`).
pub const TOKEN_SECRET_KEY: &str = "token";
/// Key of the PEM private key in the secret named by `github-app-private-key`.
pub const PRIVATE_KEY_SECRET_KEY: &str = "private-key";

/// What the options say the credential is. `Debug` shows no token (a [`Secret`]); secret
/// URIs are not secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `token` holds the personal access token itself.
    Token(Secret),
    /// `token` is a Juju secret URI whose key `token` holds it.
    TokenSecret(String),
    /// `github-app-id`, `github-app-installation-id` and `github-app-private-key` (a secret
    /// URI whose key `private-key` holds the PEM).
    App {
        app_id: u64,
        installation_id: u64,
        private_key_secret: String,
    },
}

impl CredentialSource {
    /// The credential when it needs no secret read; None for a secret URI.
    pub fn literal(&self) -> Option<Credential> {
        match self {
            CredentialSource::Token(token) => Some(Credential::Token(token.clone())),
            _ => None,
        }
    }
}

/// The credential the GitHub client authenticates with. No `Debug` of the secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A personal access token.
    Token(Secret),
    /// A GitHub App installation: the key signs the JWTs exchanged for installation tokens.
    App(AppCredential),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCredential {
    pub app_id: u64,
    pub installation_id: u64,
    /// The PEM as the secret holds it (PKCS#1 or PKCS#8).
    pub private_key: Secret,
}

impl Credential {
    /// Changes whenever the credential does (a rotated token or key, another App): unit
    /// state keeps this, never the credential.
    pub fn fingerprint(&self) -> String {
        match self {
            Credential::Token(token) => token.fingerprint(),
            Credential::App(app) => Secret::new(format!(
                "app:{}:{}:{}",
                app.app_id,
                app.installation_id,
                app.private_key.expose()
            ))
            .fingerprint(),
        }
    }

    /// For messages: `token` or `GitHub App 123`.
    pub fn describe(&self) -> String {
        match self {
            Credential::Token(_) => "token".into(),
            Credential::App(app) => format!("GitHub App {}", app.app_id),
        }
    }
}
