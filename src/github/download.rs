//! The runner application tarball: fetched only when GitHub lists a new one, streamed with a
//! size cap and a timeout, verified (SHA-256 from the downloads list, a gzip tar holding
//! `run.sh`), then renamed over the old one. The last verified tarball stays in place through
//! every failure (the Python charm deleted it first).

use super::proxy::{build_agent, is_loopback_host, without_credentials, ProxySettings, Timeouts};
use super::RunnerApplication;
use crate::paths::HostPaths;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{File, Permissions};
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// Name of the verified tarball inside [`HostPaths::runner_binary_dir`].
pub const TARBALL_FILE_NAME: &str = "actions-runner.tar.gz";
/// Larger than any runner release (about 200 MiB) with room to grow.
pub const MAX_TARBALL_BYTES: u64 = 512 * 1024 * 1024;
/// Unit-state keys remembering what is in place.
pub const STATE_URL_KEY: &str = "runner-binary-url";
pub const STATE_SHA256_KEY: &str = "runner-binary-sha256";

const CHUNK: usize = 128 * 1024;

/// Where the verified tarball lives.
pub fn tarball_path(paths: &HostPaths) -> PathBuf {
    paths.runner_binary_dir().join(TARBALL_FILE_NAME)
}

#[derive(Debug, Clone)]
pub struct DownloadSettings {
    pub connect_timeout: Duration,
    /// Whole download.
    pub timeout: Duration,
    pub max_bytes: u64,
    pub proxy: ProxySettings,
    pub user_agent_version: String,
}

impl Default for DownloadSettings {
    /// 30 s connect, 10 min in all, 512 MiB, no proxy (the charm sets the model's).
    fn default() -> Self {
        DownloadSettings {
            connect_timeout: Duration::from_secs(30),
            timeout: Duration::from_secs(600),
            max_bytes: MAX_TARBALL_BYTES,
            proxy: ProxySettings::default(),
            user_agent_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// What unit state says is in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredTarball {
    pub url: Option<String>,
    pub sha256: Option<String>,
}

impl StoredTarball {
    pub fn from_state(state: &BTreeMap<String, String>) -> Self {
        let get = |k: &str| state.get(k).filter(|v| !v.is_empty()).cloned();
        StoredTarball {
            url: get(STATE_URL_KEY),
            sha256: get(STATE_SHA256_KEY),
        }
    }

    pub fn to_state(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert(
            STATE_URL_KEY.to_string(),
            self.url.clone().unwrap_or_default(),
        );
        out.insert(
            STATE_SHA256_KEY.to_string(),
            self.sha256.clone().unwrap_or_default(),
        );
        out
    }
}

/// Download only when the file is missing or GitHub lists another URL or checksum. When
/// GitHub stops advertising a checksum, keep the verified tarball rather than fetch one that
/// cannot be verified.
pub fn download_needed(
    stored: &StoredTarball,
    file_present: bool,
    latest: &RunnerApplication,
) -> bool {
    if !file_present || stored.url.as_deref() != Some(latest.download_url.as_str()) {
        return true;
    }
    match (&latest.sha256_checksum, &stored.sha256) {
        (Some(new), Some(old)) => !new.trim().eq_ignore_ascii_case(old.trim()),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// The tarball now in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadedTarball {
    pub path: PathBuf,
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

impl DownloadedTarball {
    /// What to remember in unit state.
    pub fn stored(&self) -> StoredTarball {
        StoredTarball {
            url: Some(self.url.clone()),
            sha256: Some(self.sha256.clone()),
        }
    }
}

/// URLs in errors lose their query (signed download links carry credentials there).
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    #[error("GitHub lists no sha256_checksum for {url}; refusing an unverifiable runner download")]
    MissingChecksum { url: String },
    #[error("GitHub's sha256_checksum for {url} is not 64 hex digits")]
    InvalidChecksum { url: String },
    #[error("runner download URL {url} is not usable: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("refusing plain http:// runner download from {url}: only loopback hosts (test-mode) may use http")]
    InsecureUrl { url: String },
    #[error("runner download from {url} answered HTTP {status}")]
    Http { url: String, status: u16 },
    #[error("runner download from {url} failed after {received} bytes: {reason}")]
    Transport {
        url: String,
        received: u64,
        reason: String,
    },
    #[error("runner download from {url} ended after {received} of {expected} bytes")]
    Truncated {
        url: String,
        received: u64,
        expected: u64,
    },
    #[error("runner download from {url} is larger than the {limit}-byte cap")]
    TooLarge { url: String, limit: u64 },
    #[error("runner download from {url} has SHA-256 {actual}, GitHub lists {expected}")]
    ChecksumMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("runner download from {url} is not a runner tarball: {reason}")]
    NotRunnerTarball { url: String, reason: String },
    #[error("could not write the runner tarball in {dir}: {reason}")]
    Io { dir: String, reason: String },
}

fn shown(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    without_credentials(u.as_str())
}

/// Download `app` into `dest_dir` as [`TARBALL_FILE_NAME`], verified, replacing the old one
/// only once the new one is verified.
pub fn download_runner_tarball(
    app: &RunnerApplication,
    dest_dir: &Path,
    settings: &DownloadSettings,
) -> Result<DownloadedTarball, DownloadError> {
    let url = Url::parse(&app.download_url).map_err(|e| DownloadError::BadUrl {
        url: without_credentials(&app.download_url),
        reason: e.to_string(),
    })?;
    let url_shown = shown(&url);
    let expected = match app.sha256_checksum.as_deref().map(str::trim) {
        None | Some("") => return Err(DownloadError::MissingChecksum { url: url_shown }),
        Some(c) if c.len() == 64 && c.bytes().all(|b| b.is_ascii_hexdigit()) => {
            c.to_ascii_lowercase()
        }
        Some(_) => return Err(DownloadError::InvalidChecksum { url: url_shown }),
    };
    let host = url.host_str().unwrap_or_default().to_string();
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&host) => {}
        "http" => return Err(DownloadError::InsecureUrl { url: url_shown }),
        other => {
            return Err(DownloadError::BadUrl {
                url: url_shown,
                reason: format!("scheme {other} (want https)"),
            })
        }
    }
    let agent = build_agent(
        &settings.proxy,
        url.scheme(),
        &host,
        Timeouts {
            connect: settings.connect_timeout,
            total: settings.timeout,
        },
        &format!("github-runner-charm/{}", settings.user_agent_version),
    )
    .map_err(|e| DownloadError::BadUrl {
        url: url_shown.clone(),
        reason: e.to_string(),
    })?;
    let transport = |received: u64, reason: String| DownloadError::Transport {
        url: url_shown.clone(),
        received,
        reason,
    };
    let mut request = agent.request_url("GET", &url);
    if let Some(token) = &app.temp_download_token {
        // Only for this download, which the downloads list tied the token to.
        request = request.set("Authorization", &format!("Bearer {}", token.expose()));
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(status, _)) => {
            return Err(DownloadError::Http {
                url: url_shown,
                status,
            })
        }
        Err(ureq::Error::Transport(t)) => return Err(transport(0, t.kind().to_string())),
    };
    let length: Option<u64> = response
        .header("content-length")
        .and_then(|v| v.trim().parse().ok());
    if length.is_some_and(|n| n > settings.max_bytes) {
        return Err(DownloadError::TooLarge {
            url: url_shown,
            limit: settings.max_bytes,
        });
    }

    let io_err = |e: std::io::Error| DownloadError::Io {
        dir: dest_dir.display().to_string(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dest_dir).map_err(io_err)?;
    // Dropped (and so deleted) on every early return: the old tarball is never touched.
    let mut temp = crate::host::file::temp_file_in(dest_dir).map_err(io_err)?;
    let mut reader = response.into_reader().take(settings.max_bytes + 1);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut received: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(transport(received, e.to_string())),
        };
        received += n as u64;
        if received > settings.max_bytes {
            return Err(DownloadError::TooLarge {
                url: url_shown,
                limit: settings.max_bytes,
            });
        }
        hasher.update(&buf[..n]);
        temp.write_all(&buf[..n]).map_err(io_err)?;
    }
    if let Some(expected_len) = length {
        if received != expected_len {
            return Err(DownloadError::Truncated {
                url: url_shown,
                received,
                expected: expected_len,
            });
        }
    }
    temp.flush().map_err(io_err)?;
    temp.as_file().sync_all().map_err(io_err)?;
    let actual: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != expected {
        return Err(DownloadError::ChecksumMismatch {
            url: url_shown,
            expected,
            actual,
        });
    }
    verify_runner_tarball(temp.path()).map_err(|reason| DownloadError::NotRunnerTarball {
        url: url_shown.clone(),
        reason,
    })?;
    temp.as_file()
        .set_permissions(Permissions::from_mode(0o644))
        .map_err(io_err)?;
    let path = dest_dir.join(TARBALL_FILE_NAME);
    temp.persist(&path).map_err(|e| io_err(e.error))?;
    // The rename is durable only once the directory is synced.
    File::open(dest_dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err)?;
    tracing::info!(url = %url_shown, size = received, sha256 = %actual, "runner tarball updated");
    Ok(DownloadedTarball {
        path,
        url: app.download_url.clone(),
        sha256: actual,
        size: received,
    })
}

/// A gzip tar, intact to its end, with a regular file `run.sh` or `./run.sh`.
pub fn verify_runner_tarball(path: &Path) -> Result<(), String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(file)));
    let mut has_run_sh = false;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a gzip tar: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("not a gzip tar: {e}"))?;
        let entry_path = entry.path_bytes().into_owned();
        if matches!(entry_path.as_slice(), b"run.sh" | b"./run.sh")
            && entry.header().entry_type().is_file()
        {
            has_run_sh = true;
        }
    }
    // Read the gzip stream to its end so a damaged trailer (CRC, length) is caught too.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink())
        .map_err(|e| format!("damaged gzip stream: {e}"))?;
    if has_run_sh {
        Ok(())
    } else {
        Err("no run.sh at the top level".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(url: &str, sha: Option<&str>) -> RunnerApplication {
        RunnerApplication {
            os: "linux".into(),
            architecture: "x64".into(),
            download_url: url.into(),
            filename: "actions-runner-linux-x64-2.321.0.tar.gz".into(),
            sha256_checksum: sha.map(String::from),
            temp_download_token: None,
        }
    }

    fn stored(url: Option<&str>, sha: Option<&str>) -> StoredTarball {
        StoredTarball {
            url: url.map(String::from),
            sha256: sha.map(String::from),
        }
    }

    #[test]
    fn download_needed_only_when_something_changed() {
        let latest = app("https://x/a.tgz", Some("ABC"));
        // Same URL and checksum (case aside), file present: nothing to do.
        assert!(!download_needed(
            &stored(Some("https://x/a.tgz"), Some("abc")),
            true,
            &latest
        ));
        // File gone.
        assert!(download_needed(
            &stored(Some("https://x/a.tgz"), Some("abc")),
            false,
            &latest
        ));
        // New URL.
        assert!(download_needed(
            &stored(Some("https://x/b.tgz"), Some("abc")),
            true,
            &latest
        ));
        // Same URL, new checksum (a re-published release).
        assert!(download_needed(
            &stored(Some("https://x/a.tgz"), Some("abd")),
            true,
            &latest
        ));
        // Nothing remembered.
        assert!(download_needed(&StoredTarball::default(), true, &latest));
        assert!(download_needed(
            &stored(Some("https://x/a.tgz"), None),
            true,
            &latest
        ));
        // GitHub stopped listing a checksum: keep the verified one.
        let unverifiable = app("https://x/a.tgz", None);
        assert!(!download_needed(
            &stored(Some("https://x/a.tgz"), Some("abc")),
            true,
            &unverifiable
        ));
        assert!(download_needed(
            &stored(Some("https://x/a.tgz"), Some("abc")),
            false,
            &unverifiable
        ));
    }

    #[test]
    fn stored_tarball_round_trips_through_unit_state() {
        let s = stored(Some("https://x/a.tgz"), Some("abc"));
        assert_eq!(StoredTarball::from_state(&s.to_state()), s);
        assert_eq!(
            StoredTarball::from_state(&StoredTarball::default().to_state()),
            StoredTarball::default()
        );
        assert_eq!(
            StoredTarball::from_state(&BTreeMap::new()),
            StoredTarball::default()
        );
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        let dir = tempfile::tempdir().unwrap();
        let s = DownloadSettings::default();
        let sha = Some("a".repeat(64));
        type Check = fn(&DownloadError) -> bool;
        let cases: [(&str, Option<String>, Check); 6] = [
            ("https://x/a.tgz", None, |e| {
                matches!(e, DownloadError::MissingChecksum { .. })
            }),
            ("https://x/a.tgz", Some(" ".into()), |e| {
                matches!(e, DownloadError::MissingChecksum { .. })
            }),
            ("https://x/a.tgz", Some("abc".into()), |e| {
                matches!(e, DownloadError::InvalidChecksum { .. })
            }),
            ("http://example.com/a.tgz", sha.clone(), |e| {
                matches!(e, DownloadError::InsecureUrl { .. })
            }),
            ("ftp://example.com/a.tgz", sha.clone(), |e| {
                matches!(e, DownloadError::BadUrl { .. })
            }),
            ("not a url", sha.clone(), |e| {
                matches!(e, DownloadError::BadUrl { .. })
            }),
        ];
        for (url, sha, check) in cases {
            let mut a = app(url, None);
            a.sha256_checksum = sha;
            let err = download_runner_tarball(&a, dir.path(), &s).unwrap_err();
            assert!(check(&err), "{url}: {err}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn errors_never_show_a_signed_query() {
        let mut a = app(
            "http://example.com/a.tgz?sig=SECRETSIG&X-Amz=1",
            Some(&"a".repeat(64)),
        );
        let dir = tempfile::tempdir().unwrap();
        let err =
            download_runner_tarball(&a, dir.path(), &DownloadSettings::default()).unwrap_err();
        assert!(!err.to_string().contains("SECRETSIG"), "{err}");
        a.sha256_checksum = None;
        let err =
            download_runner_tarball(&a, dir.path(), &DownloadSettings::default()).unwrap_err();
        assert!(!err.to_string().contains("SECRETSIG"), "{err}");
    }

    fn write_tar_gz(path: &Path, files: &[(&str, &[u8])]) {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            File::create(path).unwrap(),
            flate2::Compression::fast(),
        ));
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }

    #[test]
    fn tarball_verification() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.tgz");
        for (files, ok) in [
            (
                vec![("./run.sh", &b"#!/bin/sh"[..]), ("./bin/x", b"x")],
                true,
            ),
            (vec![("run.sh", &b"#!/bin/sh"[..])], true),
            (vec![("./bin/run.sh", &b"#!/bin/sh"[..])], false),
            (vec![("./config.sh", &b"#!/bin/sh"[..])], false),
        ] {
            write_tar_gz(&p, &files);
            assert_eq!(verify_runner_tarball(&p).is_ok(), ok, "{files:?}");
        }
        // Not gzip; gzip but not tar; a gzip tar cut short.
        std::fs::write(&p, b"just text").unwrap();
        assert!(verify_runner_tarball(&p).is_err());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&[b'z'; 2048]).unwrap();
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        assert!(verify_runner_tarball(&p).is_err());
        write_tar_gz(&p, &[("./run.sh", &[7u8; 50_000])]);
        let full = std::fs::read(&p).unwrap();
        std::fs::write(&p, &full[..full.len() - 10]).unwrap();
        let err = verify_runner_tarball(&p).unwrap_err();
        assert!(!err.is_empty());
    }
}
