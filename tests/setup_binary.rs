//! `charm::setup::update_runner_binary_with` with the real GitHub client against the fake
//! GitHub: downloads only when the listed URL or checksum changes (or the file is gone),
//! remembers them in unit state, and keeps the old tarball through a failed download.

#[path = "support/fake_github/mod.rs"]
mod fake_github;

use fake_github::{DownloadFault, Endpoint, FakeGitHub};
use github_runner::charm::setup::{update_runner_binary_with, SetupError};
use github_runner::github::download::{
    tarball_path, DownloadSettings, STATE_SHA256_KEY, STATE_URL_KEY,
};
use github_runner::github::proxy::ProxySettings;
use github_runner::github::{GitHubClient, GitHubPath};
use github_runner::identity::UnitIdentity;
use github_runner::juju::memory::MemoryHookTools;
use github_runner::juju::Status;
use github_runner::paths::HostPaths;
use std::time::Duration;

struct Unit {
    gh: FakeGitHub,
    client: GitHubClient,
    tools: MemoryHookTools,
    root: tempfile::TempDir,
}

impl Unit {
    fn new() -> Unit {
        let gh = FakeGitHub::start();
        let s = gh.client_settings(
            GitHubPath::Repo {
                owner: "o".into(),
                repo: "r".into(),
            },
            UnitIdentity::parse("github-runner/0", "m").unwrap(),
        );
        Unit {
            client: GitHubClient::new(s).unwrap(),
            gh,
            tools: MemoryHookTools::default(),
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn paths(&self) -> HostPaths {
        HostPaths::new(self.root.path())
    }

    fn update(&self) -> Result<github_runner::charm::setup::BinaryUpdate, SetupError> {
        let settings = DownloadSettings {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            proxy: ProxySettings::default(),
            ..DownloadSettings::default()
        };
        update_runner_binary_with(&self.tools, &self.paths(), &self.client, &settings)
    }

    fn downloads(&self) -> usize {
        self.gh.count(Endpoint::DownloadTarball)
    }

    fn stored(&self, key: &str) -> Option<String> {
        self.tools.lock().unit_state.get(key).cloned()
    }
}

#[test]
fn downloads_once_then_only_when_github_lists_another_tarball() {
    let u = Unit::new();
    let first = u.update().unwrap();
    assert!(first.changed);
    assert_eq!(first.path, tarball_path(&u.paths()));
    assert_eq!(std::fs::read(&first.path).unwrap(), u.gh.runner_tarball());
    assert_eq!(u.downloads(), 1);
    assert_eq!(
        u.stored(STATE_URL_KEY).as_deref(),
        Some(u.gh.download_url("x64").as_str())
    );
    assert_eq!(
        u.stored(STATE_SHA256_KEY),
        Some(u.gh.runner_tarball_sha256())
    );
    assert_eq!(
        u.tools.statuses(),
        [Status::Maintenance("Downloading runner binary".into())]
    );

    let again = u.update().unwrap();
    assert!(!again.changed);
    assert_eq!(u.downloads(), 1, "nothing new: no download");
    assert_eq!(
        u.gh.count(Endpoint::ListDownloads),
        2,
        "one listing per check"
    );
    assert_eq!(
        u.tools.statuses().len(),
        1,
        "no status when nothing downloads"
    );

    u.gh.set_runner_version("9.9.9");
    let newer = u.update().unwrap();
    assert!(newer.changed);
    assert_eq!(u.downloads(), 2);
    assert!(u.stored(STATE_URL_KEY).unwrap().contains("9.9.9"));

    std::fs::remove_file(&newer.path).unwrap();
    assert!(
        u.update().unwrap().changed,
        "a missing file is fetched again"
    );
    assert_eq!(u.downloads(), 3);
}

#[test]
fn a_failed_download_keeps_the_old_tarball_and_state_and_says_so() {
    let u = Unit::new();
    u.update().unwrap();
    let old = u.gh.runner_tarball();
    let old_url = u.stored(STATE_URL_KEY);
    u.gh.set_runner_version("2.0.0");
    u.gh.inject_download(DownloadFault::Status(500), 10);

    let err = u.update().unwrap_err();
    match err.status() {
        Some(Status::Maintenance(m)) => {
            assert!(m.starts_with("Failed to update runner binary: "), "{m}");
            assert!(m.contains("500"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(tarball_path(&u.paths())).unwrap(), old);
    assert_eq!(
        u.stored(STATE_URL_KEY),
        old_url,
        "state still names the old one"
    );

    u.gh.clear_faults();
    assert!(u.update().unwrap().changed, "the next check retries");
}

#[test]
fn a_refused_or_failing_listing_is_reported_without_touching_the_tarball() {
    let u = Unit::new();
    u.update().unwrap();
    u.gh.revoke_token(&u.gh.token());
    let err = u.update().unwrap_err();
    assert!(matches!(err, SetupError::RunnerBinaryLookup(_)), "{err}");
    match err.status() {
        Some(Status::Blocked(m)) => {
            assert!(m.contains("token"), "the operator must fix the token: {m}");
            assert!(!m.contains(&u.gh.token()), "no token in the status");
        }
        other => panic!("{other:?}"),
    }
    u.gh.add_token(&u.gh.token());
    u.gh.fail_next(20, 503);
    let err = u.update().unwrap_err();
    assert!(
        matches!(err.status(), Some(Status::Maintenance(m)) if m.starts_with("Failed to update runner binary: ")),
        "{err}"
    );
    assert!(tarball_path(&u.paths()).is_file());
}
