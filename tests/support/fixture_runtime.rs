//! The charm's [`Runtime`] over a test's LXD project and the fake GitHub: validated config
//! (the fake's URL and token, test-mode, small vm-* values, plus `extra` options), the
//! fake runner tarball in the host cache below `root`, the project's storage pool.
//!
//! Included by path next to `lxd_fixture` and `fake_github` (it refers to both).
#![allow(dead_code)] // each includer uses part of it

use crate::fake_github::FakeGitHub;
use crate::lxd_fixture::LxdFixture;
use github_runner::charm::runtime::Runtime;
use github_runner::clock::SystemClock;
use github_runner::config::{validate, ConfigContext};
use github_runner::github::download::tarball_path;
use github_runner::github::proxy::ProxySettings;
use github_runner::github::{ClientSettings, GitHubClient};
use github_runner::identity::UnitIdentity;
use github_runner::paths::HostPaths;
use std::path::Path;
use std::sync::Arc;

/// A unit of the charm at library level: the test's LXD project (its default profile
/// routed to the fake GitHub), the fake, the runtime, its host root.
pub struct FixtureUnit {
    pub fx: LxdFixture,
    pub gh: FakeGitHub,
    pub rt: Runtime,
    pub root: tempfile::TempDir,
}

impl FixtureUnit {
    pub fn new(repo: &str, extra: serde_json::Value) -> FixtureUnit {
        let fx = LxdFixture::new();
        let gh = FakeGitHub::start();
        fx.route_default_profile_to_host_port(gh.port());
        let root = tempfile::tempdir().expect("temp dir");
        let rt = fixture_runtime(&fx, &gh, repo, extra, root.path());
        FixtureUnit { fx, gh, rt, root }
    }
}

/// Unit `github-runner/0` of path `repo`, host paths below `root`.
pub fn fixture_runtime(
    fx: &LxdFixture,
    gh: &FakeGitHub,
    repo: &str,
    extra: serde_json::Value,
    root: &Path,
) -> Runtime {
    let mut raw = serde_json::json!({
        "path": repo,
        "token": gh.token(),
        "github-url": gh.url(),
        "test-mode": "insecure",
        "vm-cpu": 1,
        "vm-memory": "512MiB",
        "vm-disk": "1GiB",
    });
    if let (Some(raw), Some(extra)) = (raw.as_object_mut(), extra.as_object()) {
        raw.extend(extra.clone());
    }
    let config = validate(
        raw.as_object().expect("an object"),
        &ConfigContext {
            app_name: "github-runner",
            juju_proxy_configured: false,
        },
    )
    .expect("valid config");
    let identity = UnitIdentity::parse("github-runner/0", "model-uuid").expect("unit name");
    let token = config.token().cloned().unwrap_or_default();
    let settings = ClientSettings::from_config(
        &config,
        identity.clone(),
        ProxySettings::default(),
        std::sync::Arc::new(github_runner::credential::provider::CredentialProvider::token(token)),
    );
    let client = GitHubClient::new(settings).expect("client for the fake");
    let paths = HostPaths::new(root);
    let tarball = tarball_path(&paths);
    std::fs::create_dir_all(tarball.parent().expect("has a parent")).expect("cache dir");
    std::fs::copy(fx.fake_runner_tarball(), &tarball).expect("fake runner tarball");
    let mut rt = Runtime::from_parts(
        identity,
        config,
        paths,
        Arc::new(fx.lxd().clone()),
        Arc::new(client),
        Arc::new(SystemClock),
        Default::default(),
        root.to_path_buf(),
    );
    rt.storage_pool = fx.pool.clone();
    rt
}
