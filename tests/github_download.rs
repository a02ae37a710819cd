//! Runner tarball downloads from the fake GitHub: the good path, every way a download can go
//! wrong, and the last verified tarball intact after each failure.

#[path = "support/fake_github/mod.rs"]
mod fake_github;

use fake_github::{tar_gz, AdvertisedChecksum, DownloadFault, Endpoint, FakeGitHub};
use github_runner::github::download::{
    download_needed, download_runner_tarball, tarball_path, DownloadError, DownloadSettings,
    StoredTarball, TARBALL_FILE_NAME,
};
use github_runner::github::proxy::ProxySettings;
use github_runner::github::{Arch, GitHub, GitHubClient, GitHubPath, RunnerApplication};
use github_runner::identity::UnitIdentity;
use github_runner::paths::HostPaths;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

/// A tarball of `size` incompressible-ish bytes plus run.sh.
fn big_tarball(size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    let mut x: u32 = 0x1234_5678;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    tar_gz(&[
        ("./run.sh", b"#!/bin/sh\n"),
        ("./bin/Runner.Listener", &data),
    ])
}

fn settings() -> DownloadSettings {
    DownloadSettings {
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(20),
        max_bytes: 8 * 1024 * 1024,
        proxy: ProxySettings::default(),
        user_agent_version: "test".into(),
    }
}

fn latest(gh: &FakeGitHub) -> RunnerApplication {
    let s = gh.client_settings(
        GitHubPath::Repo {
            owner: "o".into(),
            repo: "r".into(),
        },
        UnitIdentity::parse("github-runner/0", "m").unwrap(),
    );
    GitHubClient::new(s)
        .unwrap()
        .runner_application(Arch::X64)
        .unwrap()
}

/// Only the tarball in the directory: no temp file left behind.
fn assert_only_tarball(dir: &Path, expected: &[u8]) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, [TARBALL_FILE_NAME], "leftovers in {dir:?}");
    assert_eq!(
        std::fs::read(dir.join(TARBALL_FILE_NAME)).unwrap(),
        expected
    );
}

struct Setup {
    gh: FakeGitHub,
    _root: tempfile::TempDir,
    dir: std::path::PathBuf,
    old: Vec<u8>,
}

/// A fake serving a fresh tarball, and an older verified one already in place.
fn setup() -> Setup {
    let gh = FakeGitHub::start();
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    let dir = paths.runner_binary_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let old = tar_gz(&[("./run.sh", b"#!/bin/sh\necho old\n")]);
    std::fs::write(tarball_path(&paths), &old).unwrap();
    gh.set_runner_tarball(big_tarball(300_000));
    Setup {
        gh,
        _root: root,
        dir,
        old,
    }
}

#[test]
fn a_good_download_replaces_the_old_tarball_and_is_remembered() {
    let s = setup();
    let app = latest(&s.gh);
    let stored = StoredTarball {
        url: Some("https://old/url.tgz".into()),
        sha256: Some("0".repeat(64)),
    };
    assert!(download_needed(&stored, true, &app));
    let done = download_runner_tarball(&app, &s.dir, &settings()).unwrap();
    assert_eq!(done.path, s.dir.join(TARBALL_FILE_NAME));
    assert_eq!(done.sha256, s.gh.runner_tarball_sha256());
    assert_eq!(done.size, s.gh.runner_tarball().len() as u64);
    assert_eq!(done.url, s.gh.download_url("x64"));
    assert_only_tarball(&s.dir, &s.gh.runner_tarball());
    let mode = std::fs::metadata(&done.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    // Unit state remembers URL and checksum: no second download until they change.
    let stored = done.stored();
    assert!(!download_needed(&stored, true, &latest(&s.gh)));
    assert!(download_needed(&stored, false, &latest(&s.gh)));
    s.gh.set_runner_tarball(big_tarball(1000));
    s.gh.set_runner_version("2.400.0");
    let newer = latest(&s.gh);
    assert!(download_needed(&stored, true, &newer));
    download_runner_tarball(&newer, &s.dir, &settings()).unwrap();
    assert_only_tarball(&s.dir, &s.gh.runner_tarball());
    assert_eq!(s.gh.count(Endpoint::DownloadTarball), 2);
}

#[test]
fn a_temp_download_token_from_the_list_is_sent_with_the_download_only() {
    let s = setup();
    s.gh.require_download_token("ghes-temp-123");
    let app = latest(&s.gh);
    assert_eq!(
        app.temp_download_token.as_ref().map(|t| t.expose()),
        Some("ghes-temp-123")
    );
    assert!(
        !format!("{app:?}").contains("ghes-temp-123"),
        "Debug shows it"
    );
    download_runner_tarball(&app, &s.dir, &settings()).unwrap();
    assert_only_tarball(&s.dir, &s.gh.runner_tarball());

    // Without it the server refuses, and the old tarball stays.
    let mut without = app.clone();
    without.temp_download_token = None;
    std::fs::write(s.dir.join(TARBALL_FILE_NAME), &s.old).unwrap();
    let err = download_runner_tarball(&without, &s.dir, &settings()).unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    assert!(!err.to_string().contains("ghes-temp-123"));
    assert_only_tarball(&s.dir, &s.old);
    // A fake without the requirement hands out no token.
    assert!(latest(&FakeGitHub::start()).temp_download_token.is_none());
}

#[test]
fn the_default_fake_tarball_downloads_and_verifies() {
    let gh = FakeGitHub::start();
    let dir = tempfile::tempdir().unwrap();
    let done = download_runner_tarball(&latest(&gh), dir.path(), &settings()).unwrap();
    assert_eq!(std::fs::read(done.path).unwrap(), gh.runner_tarball());
}

/// Run a failing download and check the old tarball survived, untouched and alone.
fn fails(s: &Setup, app: &RunnerApplication, check: impl Fn(&DownloadError) -> bool) {
    let err = download_runner_tarball(app, &s.dir, &settings()).unwrap_err();
    assert!(check(&err), "unexpected error: {err:?}");
    assert_only_tarball(&s.dir, &s.old);
}

#[test]
fn a_wrong_checksum_is_refused() {
    let s = setup();
    s.gh.set_advertised_checksum(AdvertisedChecksum::Value("ab".repeat(32)));
    fails(&s, &latest(&s.gh), |e| {
        matches!(e, DownloadError::ChecksumMismatch { expected, actual, .. }
            if *expected == "ab".repeat(32) && *actual == s.gh.runner_tarball_sha256())
    });
}

#[test]
fn a_missing_checksum_is_refused_without_downloading() {
    let s = setup();
    s.gh.set_advertised_checksum(AdvertisedChecksum::Missing);
    let app = latest(&s.gh);
    assert_eq!(app.sha256_checksum, None);
    fails(&s, &app, |e| {
        matches!(e, DownloadError::MissingChecksum { .. })
    });
    assert_eq!(s.gh.count(Endpoint::DownloadTarball), 0);
}

#[test]
fn a_truncated_download_is_refused() {
    let s = setup();
    s.gh.inject_download(DownloadFault::TruncateAfter(100_000), 1);
    fails(&s, &latest(&s.gh), |e| {
        matches!(
            e,
            DownloadError::Transport {
                received: 100_000,
                ..
            }
        ) || matches!(
            e,
            DownloadError::Truncated {
                received: 100_000,
                ..
            }
        )
    });
}

#[test]
fn a_server_failing_mid_stream_is_refused() {
    let s = setup();
    s.gh.inject_download(DownloadFault::BrokenChunkedAfter(150_000), 1);
    fails(&s, &latest(&s.gh), |e| {
        matches!(e, DownloadError::Transport { .. })
    });
}

#[test]
fn a_server_error_is_refused() {
    let s = setup();
    s.gh.inject_download(DownloadFault::Status(503), 1);
    fails(&s, &latest(&s.gh), |e| {
        matches!(e, DownloadError::Http { status: 503, .. })
    });
}

#[test]
fn a_stalled_download_times_out() {
    let s = setup();
    s.gh.inject_download(DownloadFault::Slow(Duration::from_secs(5)), 1);
    let mut quick = settings();
    quick.timeout = Duration::from_millis(500);
    let err = download_runner_tarball(&latest(&s.gh), &s.dir, &quick).unwrap_err();
    assert!(matches!(err, DownloadError::Transport { .. }), "{err:?}");
    assert_only_tarball(&s.dir, &s.old);
}

#[test]
fn what_is_not_a_runner_tarball_is_refused() {
    let s = setup();
    for bytes in [
        b"<html>not found</html>".to_vec(),
        tar_gz(&[("./config.sh", b"#!/bin/sh\n")]),
        tar_gz(&[("./bin/run.sh", b"#!/bin/sh\n")]),
    ] {
        s.gh.set_runner_tarball(bytes);
        fails(&s, &latest(&s.gh), |e| {
            matches!(e, DownloadError::NotRunnerTarball { .. })
        });
    }
    // A tarball cut short but served (and checksummed) whole is still caught.
    let full = big_tarball(100_000);
    s.gh.set_runner_tarball(full[..full.len() / 2].to_vec());
    fails(&s, &latest(&s.gh), |e| {
        matches!(e, DownloadError::NotRunnerTarball { .. })
    });
}

#[test]
fn a_download_over_the_cap_is_refused_with_or_without_a_length() {
    let s = setup();
    let mut capped = settings();
    capped.max_bytes = 100_000;
    // Content-Length says too much: refused before reading the body.
    let err = download_runner_tarball(&latest(&s.gh), &s.dir, &capped).unwrap_err();
    assert!(
        matches!(err, DownloadError::TooLarge { limit: 100_000, .. }),
        "{err:?}"
    );
    assert_only_tarball(&s.dir, &s.old);
    // No length (chunked): refused once the stream passes the cap.
    s.gh.inject_download(DownloadFault::Chunked, 1);
    let err = download_runner_tarball(&latest(&s.gh), &s.dir, &capped).unwrap_err();
    assert!(matches!(err, DownloadError::TooLarge { .. }), "{err:?}");
    assert_only_tarball(&s.dir, &s.old);
    // Under the cap, chunked is fine.
    s.gh.inject_download(DownloadFault::Chunked, 1);
    download_runner_tarball(&latest(&s.gh), &s.dir, &settings()).unwrap();
    assert_only_tarball(&s.dir, &s.gh.runner_tarball());
}

#[test]
fn the_destination_directory_is_created_when_missing() {
    let gh = FakeGitHub::start();
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    let done =
        download_runner_tarball(&latest(&gh), &paths.runner_binary_dir(), &settings()).unwrap();
    assert_eq!(done.path, tarball_path(&paths));
    assert!(done.path.starts_with(root.path()));
}
