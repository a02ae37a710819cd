//! The unit's credential file: the credential the last hook resolved (a reactive worker has
//! no `secret-get`) and the App's installation token, shared by every process of the unit.
//!
//! 0600, root-owned, in the unit's 0700 state folder; replaced atomically (a reader sees the
//! old file or the new one, never half of one). Writers and minters hold its lock
//! ([`UnitLock`] on its own file), so two processes renewing at once mint once: the second
//! finds the first one's token when it gets the lock.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::app::InstallationToken;
use super::{AppCredential, Credential};
use crate::clock::Clock;
use crate::host::lock::{LockWait, UnitLock};
use crate::paths::HostPaths;
use crate::secret::Secret;

pub const CREDENTIAL_FILE: &str = "current-credential.json";
const LOCK_FILE: &str = "current-credential.lock";
/// Largest file read (a PEM key is a few KiB).
const MAX_FILE_BYTES: u64 = 256 * 1024;
/// A mint is one HTTP call with its retries: longer than that is a stuck holder.
const LOCK_WAIT: LockWait = LockWait {
    max: Duration::from_secs(120),
    poll: Duration::from_millis(100),
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("could not write the credential file {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("could not read the credential file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("the credential file {path} is missing: the next hook writes it")]
    Missing { path: PathBuf },
    #[error(transparent)]
    Lock(#[from] crate::host::lock::LockError),
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", tag = "kind")]
enum StoredCredential {
    Token {
        token: String,
    },
    App {
        app_id: u64,
        installation_id: u64,
        private_key: String,
    },
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
struct StoredToken {
    token: String,
    expires_at: u64,
    #[serde(default)]
    obtained_at: u64,
    /// [`Credential::fingerprint`] of the App credential that minted it: a new key or App
    /// never reuses the old one's token.
    minted_by: String,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
struct StoredFile {
    credential: StoredCredential,
    #[serde(default)]
    installation_token: Option<StoredToken>,
}

/// The unit's credential file and its lock.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    dir: PathBuf,
}

/// The store's lock, held while a token is read and minted.
pub struct StoreLock(#[allow(dead_code)] UnitLock);

impl CredentialStore {
    pub fn for_unit(paths: &HostPaths) -> Self {
        CredentialStore {
            dir: paths.state_dir(),
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(CREDENTIAL_FILE)
    }

    pub fn lock(&self, clock: &dyn Clock) -> Result<StoreLock, StoreError> {
        Ok(StoreLock(UnitLock::acquire(
            &self.dir.join(LOCK_FILE),
            "credential",
            clock,
            LOCK_WAIT,
        )?))
    }

    /// Record `credential` (a hook, after resolving it). The cached installation token stays
    /// when it was minted by this very credential. No write when nothing changed.
    pub fn put(&self, credential: &Credential, clock: &dyn Clock) -> Result<(), StoreError> {
        let _held = self.lock(clock)?;
        let current = self.read()?;
        let fingerprint = credential.fingerprint();
        let installation_token = current
            .as_ref()
            .and_then(|f| f.installation_token.clone())
            .filter(|t| matches!(credential, Credential::App(_)) && t.minted_by == fingerprint);
        let next = StoredFile {
            credential: stored(credential),
            installation_token,
        };
        if current.as_ref() == Some(&next) {
            return Ok(());
        }
        self.write(&next)
    }

    /// The credential the last hook recorded.
    pub fn credential(&self) -> Result<Credential, StoreError> {
        let file = self
            .read()?
            .ok_or_else(|| StoreError::Missing { path: self.path() })?;
        Ok(match file.credential {
            StoredCredential::Token { token } => Credential::Token(Secret::new(token)),
            StoredCredential::App {
                app_id,
                installation_id,
                private_key,
            } => Credential::App(AppCredential {
                app_id,
                installation_id,
                private_key: Secret::new(private_key),
            }),
        })
    }

    /// The cached installation token `app` minted, if any (usable or not).
    pub fn installation_token(
        &self,
        app: &Credential,
    ) -> Result<Option<InstallationToken>, StoreError> {
        let fingerprint = app.fingerprint();
        Ok(self
            .read()?
            .and_then(|f| f.installation_token)
            .filter(|t| t.minted_by == fingerprint)
            .map(|t| InstallationToken {
                token: Secret::new(t.token),
                expires_at: t.expires_at,
                obtained_at: t.obtained_at,
            }))
    }

    /// Cache `token`, minted by `app`, under the held lock.
    pub fn save_installation_token(
        &self,
        _held: &StoreLock,
        app: &Credential,
        token: &InstallationToken,
    ) -> Result<(), StoreError> {
        let mut file = self.read()?.unwrap_or(StoredFile {
            credential: stored(app),
            installation_token: None,
        });
        if file.credential != stored(app) {
            // A hook recorded another credential meanwhile: this token is not its.
            return Ok(());
        }
        file.installation_token = Some(StoredToken {
            token: token.token.expose().to_string(),
            expires_at: token.expires_at,
            obtained_at: token.obtained_at,
            minted_by: app.fingerprint(),
        });
        self.write(&file)
    }

    fn read(&self) -> Result<Option<StoredFile>, StoreError> {
        let path = self.path();
        let err = |reason: String| StoreError::Read {
            path: path.clone(),
            reason,
        };
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e.to_string())),
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| err(e.to_string()))?;
        // serde_json's message could quote the content: say only that it is unreadable.
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|_| err("not the JSON this charm writes".into()))
    }

    fn write(&self, file: &StoredFile) -> Result<(), StoreError> {
        let path = self.path();
        let err = |reason: String| StoreError::Write {
            path: path.clone(),
            reason,
        };
        crate::host::file::create_private_dir(&self.dir).map_err(|e| err(e.to_string()))?;
        let text = serde_json::to_vec(file).map_err(|e| err(e.to_string()))?;
        // Created 0600 in the same folder: the rename is atomic and the content never
        // readable by others.
        let mut tmp = crate::host::file::temp_file_in(&self.dir).map_err(|e| err(e.to_string()))?;
        tmp.write_all(&text).map_err(|e| err(e.to_string()))?;
        tmp.as_file().sync_all().map_err(|e| err(e.to_string()))?;
        tmp.persist(&path).map_err(|e| err(e.error.to_string()))?;
        Ok(())
    }
}

fn stored(credential: &Credential) -> StoredCredential {
    match credential {
        Credential::Token(token) => StoredCredential::Token {
            token: token.expose().to_string(),
        },
        Credential::App(app) => StoredCredential::App {
            app_id: app.app_id,
            installation_id: app.installation_id,
            private_key: app.private_key.expose().to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::os::unix::fs::PermissionsExt;

    fn store() -> (tempfile::TempDir, CredentialStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = CredentialStore::for_unit(&HostPaths::for_unit(dir.path(), "runner/0"));
        (dir, store)
    }

    #[test]
    fn the_file_is_0600_in_a_0700_folder() {
        let (_dir, store) = store();
        let clock = ManualClock::at(1_000);
        store
            .put(&Credential::Token(Secret::new("ghp_one")), &clock)
            .unwrap();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.path()), 0o600);
        assert_eq!(mode(store.path().parent().unwrap()), 0o700);
    }

    /// A reader that opened the file before a write still reads the whole old file, and
    /// the path gives the whole new one: the write replaces the file, never rewrites it in
    /// place (where a reader could see it half-written).
    #[test]
    fn a_write_replaces_the_file_so_no_reader_sees_half_of_one() {
        let (_dir, store) = store();
        let clock = ManualClock::at(1_000);
        store
            .put(&Credential::Token(Secret::new("ghp_one")), &clock)
            .unwrap();
        let mut reader = std::fs::File::open(store.path()).unwrap();
        store
            .put(&Credential::Token(Secret::new("ghp_two")), &clock)
            .unwrap();
        let mut old = String::new();
        reader.read_to_string(&mut old).unwrap();
        assert!(old.contains("ghp_one") && old.ends_with('}'), "{old}");
        assert_eq!(
            store.credential().unwrap(),
            Credential::Token(Secret::new("ghp_two"))
        );
        // No temporary file left beside it.
        let names: Vec<_> = std::fs::read_dir(store.path().parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            names.iter().all(|n| n == CREDENTIAL_FILE || n == LOCK_FILE),
            "{names:?}"
        );
    }
}
