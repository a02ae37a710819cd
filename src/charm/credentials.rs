//! The credentials of the configuration the charm last acted on, kept for one purpose: when
//! token, path, group, labels or github-url change, the old runners are flushed with the
//! credentials they were registered with (Juju hands a hook only the new configuration).
//!
//! Unit state is readable by anyone with model access, so it holds only the token's
//! fingerprint; the token itself lives in `credentials.json` under
//! [`HostPaths::state_dir`] (0600 file, owned by root, like Juju's own agent
//! files), replaced atomically (write a temporary file, fsync, rename).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::CharmConfig;
use crate::credential::{AppCredential, Credential};
use crate::github::GitHubPath;
use crate::paths::HostPaths;
use crate::secret::Secret;

pub const CREDENTIALS_FILE: &str = "credentials.json";

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("could not write the previous-credentials file {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("could not read the previous-credentials file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
}

/// What the file holds: enough to rebuild the old GitHub client.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    /// The personal access token (empty with a GitHub App).
    token: String,
    /// The GitHub App (files written before App support have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    app: Option<StoredApp>,
    /// `org` or `owner/repo`.
    path: String,
    group: String,
    labels: Vec<String>,
    github_url: String,
    api_base_url: String,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredApp {
    app_id: u64,
    installation_id: u64,
    private_key: String,
}

/// The previous credentials and scope. `Debug` never shows the token (a [`Secret`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousCredentials {
    pub credential: Credential,
    pub path: GitHubPath,
    pub group: String,
    pub labels: Vec<String>,
    pub github_url: String,
    pub api_base_url: String,
}

impl PreviousCredentials {
    /// None for a configuration whose credential was not resolved (never acted on).
    pub fn of(config: &CharmConfig) -> Option<Self> {
        Some(PreviousCredentials {
            credential: config.credential.clone()?,
            path: config.path.clone(),
            group: config.group.clone(),
            labels: config.labels.clone(),
            github_url: config.github_url.clone(),
            api_base_url: config.api_base_url.clone(),
        })
    }

    /// `current` with these credentials and scope in place of its own.
    pub fn apply_to(&self, current: &CharmConfig) -> CharmConfig {
        let mut old = current.clone();
        old.credential = Some(self.credential.clone());
        old.path = self.path.clone();
        old.group = self.group.clone();
        old.labels = self.labels.clone();
        old.github_url = self.github_url.clone();
        old.api_base_url = self.api_base_url.clone();
        old
    }
}

pub fn credentials_path(paths: &HostPaths) -> PathBuf {
    paths.state_dir().join(CREDENTIALS_FILE)
}

/// Replace the file with `creds` (0600), atomically. Skips the write when the content is
/// already there.
pub fn save(paths: &HostPaths, creds: &PreviousCredentials) -> Result<(), CredentialsError> {
    let path = credentials_path(paths);
    let err = |reason: String| CredentialsError::Write {
        path: path.clone(),
        reason,
    };
    let (token, app) = match &creds.credential {
        Credential::Token(token) => (token.expose().to_string(), None),
        Credential::App(app) => (
            String::new(),
            Some(StoredApp {
                app_id: app.app_id,
                installation_id: app.installation_id,
                private_key: app.private_key.expose().to_string(),
            }),
        ),
    };
    let stored = Stored {
        token,
        app,
        path: creds.path.display(),
        group: creds.group.clone(),
        labels: creds.labels.clone(),
        github_url: creds.github_url.clone(),
        api_base_url: creds.api_base_url.clone(),
    };
    if let Ok(Some(existing)) = read_stored(&path) {
        if existing == stored {
            return Ok(());
        }
    }
    let dir = paths.state_dir();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| err(e.to_string()))?;
    let text = serde_json::to_vec(&stored).map_err(|e| err(e.to_string()))?;
    // NamedTempFile is created 0600 in the same directory, so the rename is atomic.
    let mut tmp = crate::host::file::temp_file_in(&dir).map_err(|e| err(e.to_string()))?;
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| err(e.to_string()))?;
    tmp.write_all(&text).map_err(|e| err(e.to_string()))?;
    tmp.as_file().sync_all().map_err(|e| err(e.to_string()))?;
    tmp.persist(&path).map_err(|e| err(e.error.to_string()))?;
    Ok(())
}

/// The stored credentials; `Ok(None)` when there is no file (first configuration, or a
/// machine that lost it).
pub fn load(paths: &HostPaths) -> Result<Option<PreviousCredentials>, CredentialsError> {
    let path = credentials_path(paths);
    let Some(stored) = read_stored(&path)? else {
        return Ok(None);
    };
    let path_value = crate::config::values::parse_github_path(&stored.path).map_err(|e| {
        CredentialsError::Read {
            path: path.clone(),
            reason: format!("bad path {:?}: {e}", stored.path),
        }
    })?;
    let credential = match stored.app {
        Some(app) => Credential::App(AppCredential {
            app_id: app.app_id,
            installation_id: app.installation_id,
            private_key: Secret::new(app.private_key),
        }),
        None => Credential::Token(Secret::new(stored.token)),
    };
    Ok(Some(PreviousCredentials {
        credential,
        path: path_value,
        group: stored.group,
        labels: stored.labels,
        github_url: stored.github_url,
        api_base_url: stored.api_base_url,
    }))
}

/// As [`load`]; when the unit has no file yet but an older charm left its machine-wide one
/// (`paths.legacy()`), that one is adopted (moved into the unit's folder) only when it holds
/// the token this unit last acted on (`acted_fingerprint`, from unit state): on a machine
/// shared by several units it may be another unit's, whose token must never be used here.
pub fn load_adopting_legacy(
    paths: &HostPaths,
    acted_fingerprint: Option<&str>,
) -> Result<Option<PreviousCredentials>, CredentialsError> {
    if let Some(own) = load(paths)? {
        return Ok(Some(own));
    }
    let legacy_paths = paths.legacy();
    if paths.unit_folder().is_none() {
        return Ok(None);
    }
    let Some(legacy) = load(&legacy_paths)? else {
        return Ok(None);
    };
    if acted_fingerprint != Some(legacy.credential.fingerprint().as_str()) {
        tracing::info!("the older machine-wide credentials file is another unit's: not used");
        return Ok(None);
    }
    save(paths, &legacy)?;
    let _ = fs::remove_file(credentials_path(&legacy_paths));
    tracing::info!("adopted the older machine-wide credentials file");
    Ok(Some(legacy))
}

fn read_stored(path: &Path) -> Result<Option<Stored>, CredentialsError> {
    let err = |reason: String| CredentialsError::Read {
        path: path.to_path_buf(),
        reason,
    };
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            // serde's message quotes no input value, so the token cannot leak through it.
            .map_err(|e| err(format!("not valid JSON ({})", e.classify_name()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(e.to_string())),
    }
}

/// serde_json's error category, without the line/column detail.
trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "syntax",
            serde_json::error::Category::Data => "missing or mistyped field",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn creds(token: &str) -> PreviousCredentials {
        PreviousCredentials {
            credential: Credential::Token(Secret::new(token)),
            path: GitHubPath::Repo {
                owner: "o".into(),
                repo: "r".into(),
            },
            group: "default".into(),
            labels: vec!["gpu".into()],
            github_url: "https://github.com".into(),
            api_base_url: "https://api.github.com".into(),
        }
    }

    #[test]
    fn an_older_charms_machine_wide_file_is_adopted_only_by_the_unit_whose_token_it_holds() {
        let root = tempfile::tempdir().unwrap();
        let legacy = HostPaths::new(root.path());
        save(&legacy, &creds("ghp_unit_a")).unwrap();
        let a = HostPaths::for_unit(root.path(), "github-runner/0");
        let b = HostPaths::for_unit(root.path(), "other/0");
        let fp = |t: &str| Secret::new(t).fingerprint();
        // b acted on another token: the file is a's, never b's.
        assert_eq!(
            load_adopting_legacy(&b, Some(&fp("ghp_unit_b"))).unwrap(),
            None
        );
        assert_eq!(load_adopting_legacy(&b, None).unwrap(), None);
        assert!(credentials_path(&legacy).exists());
        // a acted on that token: adopted into a's folder, the machine-wide file gone.
        assert_eq!(
            load_adopting_legacy(&a, Some(&fp("ghp_unit_a"))).unwrap(),
            Some(creds("ghp_unit_a"))
        );
        assert!(!credentials_path(&legacy).exists());
        assert_eq!(load(&a).unwrap(), Some(creds("ghp_unit_a")));
    }

    #[test]
    fn round_trips_in_a_private_file() {
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(root.path());
        assert_eq!(load(&paths).unwrap(), None);
        save(&paths, &creds("ghp_old")).unwrap();
        assert_eq!(load(&paths).unwrap(), Some(creds("ghp_old")));
        let meta = fs::metadata(credentials_path(&paths)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let dir = fs::metadata(paths.state_dir()).unwrap();
        assert_eq!(dir.mode() & 0o077, 0, "state dir is private");
        save(&paths, &creds("ghp_new")).unwrap();
        assert_eq!(
            load(&paths).unwrap().unwrap().credential,
            Credential::Token(Secret::new("ghp_new"))
        );
        // No temporary file is left beside it.
        assert_eq!(fs::read_dir(paths.state_dir()).unwrap().count(), 1);
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_does_not_quote_it() {
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(root.path());
        fs::create_dir_all(paths.state_dir()).unwrap();
        fs::write(credentials_path(&paths), "{\"token\": \"ghp_leak\"").unwrap();
        let err = load(&paths).unwrap_err().to_string();
        assert!(!err.contains("ghp_leak"), "{err}");
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn debug_hides_the_token() {
        assert!(!format!("{:?}", creds("ghp_secret")).contains("ghp_secret"));
    }
}
