//! The one place every GitHub caller gets its bearer token from.
//!
//! A personal access token is sent as is. A GitHub App's installation token is reused from
//! this process's memory, then from the unit's credential file, while it is more than
//! [`RENEW_BEFORE_EXPIRY_SECS`](super::app::RENEW_BEFORE_EXPIRY_SECS) from expiry; otherwise
//! it is minted under the file's lock (so of two processes renewing at once only the first
//! mints) and cached there. A 401 on a token gets one renewal ([`CredentialProvider::renew`]).

use std::sync::{Arc, Mutex, PoisonError};

use super::app::{AppKey, InstallationToken, KeyError};
use super::store::{CredentialStore, StoreError};
use super::{AppCredential, Credential};
use crate::clock::Clock;
use crate::github::GitHubError;
use crate::secret::Secret;

/// Exchanges a JWT for an installation token (`POST /app/installations/{id}/access_tokens`).
pub trait TokenMinter {
    fn mint(&self, app: &AppCredential, jwt: &Secret) -> Result<InstallationToken, GitHubError>;
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("the private key of GitHub App {app_id} is unusable: {reason}; put a PEM key in the secret named by github-app-private-key")]
    BadKey { app_id: u64, reason: KeyError },
    #[error("GitHub App {app_id} could not get an installation token for installation {installation_id}: {source}")]
    Mint {
        app_id: u64,
        installation_id: u64,
        source: GitHubError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where the credential comes from.
enum Origin {
    /// Resolved by this hook (or given by a test).
    Fixed(Credential),
    /// Re-read from the unit's file at every call: a worker follows the hooks' rotations
    /// without a restart.
    File,
}

pub struct CredentialProvider {
    origin: Origin,
    /// None: no file (a plain token given to the client directly).
    store: Option<CredentialStore>,
    clock: Arc<dyn Clock>,
    /// The installation token this process last used, with the credential that made it.
    memo: Mutex<Option<(String, InstallationToken)>>,
}

impl std::fmt::Debug for CredentialProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialProvider")
    }
}

impl CredentialProvider {
    /// A personal access token, no file.
    pub fn token(token: Secret) -> Self {
        CredentialProvider {
            origin: Origin::Fixed(Credential::Token(token)),
            store: None,
            clock: Arc::new(crate::clock::SystemClock),
            memo: Mutex::new(None),
        }
    }

    /// A hook's provider: the credential it resolved; an App's tokens cached in `store`.
    pub fn resolved(credential: Credential, store: CredentialStore, clock: Arc<dyn Clock>) -> Self {
        CredentialProvider {
            origin: Origin::Fixed(credential),
            store: Some(store),
            clock,
            memo: Mutex::new(None),
        }
    }

    /// A long-running process's provider: whatever the unit's file holds at each call.
    pub fn following(store: CredentialStore, clock: Arc<dyn Clock>) -> Self {
        CredentialProvider {
            origin: Origin::File,
            store: Some(store),
            clock,
            memo: Mutex::new(None),
        }
    }

    pub fn credential(&self) -> Result<Credential, CredentialError> {
        match (&self.origin, &self.store) {
            (Origin::Fixed(c), _) => Ok(c.clone()),
            (Origin::File, Some(store)) => Ok(store.credential()?),
            // `following` always has a store.
            (Origin::File, None) => Err(StoreError::Missing {
                path: std::path::PathBuf::new(),
            }
            .into()),
        }
    }

    /// The bearer token for the next call; never an installation token past its renewal
    /// time.
    pub fn bearer(&self, minter: &dyn TokenMinter) -> Result<Secret, CredentialError> {
        let credential = self.credential()?;
        let app = match &credential {
            Credential::Token(token) => return Ok(token.clone()),
            Credential::App(app) => app,
        };
        let now = self.clock.now_epoch();
        let fingerprint = credential.fingerprint();
        if let Some((by, token)) = self.memo().as_ref() {
            if *by == fingerprint && token.usable_at(now) {
                return Ok(token.token.clone());
            }
        }
        self.obtain(&credential, app, minter, None)
    }

    /// After a 401 on `rejected`: a fresh installation token (another process's, when it
    /// already renewed it, else a new mint). None for a personal access token: nothing to
    /// renew.
    pub fn renew(
        &self,
        rejected: &Secret,
        minter: &dyn TokenMinter,
    ) -> Result<Option<Secret>, CredentialError> {
        let credential = self.credential()?;
        let Credential::App(app) = &credential else {
            return Ok(None);
        };
        self.obtain(&credential, app, minter, Some(rejected))
            .map(Some)
    }

    /// Under the file's lock: the cached token when usable (and not `rejected`), else a
    /// new one, cached.
    fn obtain(
        &self,
        credential: &Credential,
        app: &AppCredential,
        minter: &dyn TokenMinter,
        rejected: Option<&Secret>,
    ) -> Result<Secret, CredentialError> {
        let held = match &self.store {
            Some(store) => Some((store, store.lock(&*self.clock)?)),
            None => None,
        };
        let now = self.clock.now_epoch();
        if let Some((store, _)) = &held {
            if let Some(cached) = store.installation_token(credential)? {
                if cached.usable_at(now) && Some(&cached.token) != rejected {
                    return Ok(self.remember(credential, cached));
                }
            }
        }
        let key = AppKey::from_pem(&app.private_key).map_err(|reason| CredentialError::BadKey {
            app_id: app.app_id,
            reason,
        })?;
        let jwt = key
            .jwt(app.app_id, now)
            .map_err(|reason| CredentialError::BadKey {
                app_id: app.app_id,
                reason,
            })?;
        let minted = minter
            .mint(app, &jwt)
            .map_err(|source| CredentialError::Mint {
                app_id: app.app_id,
                installation_id: app.installation_id,
                source,
            })?;
        tracing::info!(
            app_id = app.app_id,
            expires_at = minted.expires_at,
            "minted a GitHub App installation token"
        );
        if let Some((store, lock)) = &held {
            store.save_installation_token(lock, credential, &minted)?;
        }
        Ok(self.remember(credential, minted))
    }

    fn remember(&self, credential: &Credential, token: InstallationToken) -> Secret {
        let secret = token.token.clone();
        *self.memo() = Some((credential.fingerprint(), token));
        secret
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Option<(String, InstallationToken)>> {
        self.memo.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
#[path = "provider_tests.rs"]
mod tests;
