//! The whole charm on one test machine: the real binary run through `dispatch` with the fake
//! hook tools (tests/support/juju_harness), a per-test LXD project (tests/support/lxd_fixture)
//! and a fake GitHub (tests/support/fake_github) that serves the fake runner tarball.
//!
//! What [`CharmEnv::new`] wires together:
//! - the LXD project's `default` profile carries the root disk (the fixture's) and a loopback
//!   proxy device to the fake GitHub's port, so the charm's normal profile order (default,
//!   then its own) lets the runner inside reach the fake;
//! - `GITHUB_RUNNER_HOST_ROOT` = the harness's temp host root, `GITHUB_RUNNER_LXD_PROJECT` =
//!   the test project;
//! - Juju storage `runner/0` at the one directory every test shares (see [`runner_storage_dir`]);
//! - the recording fake `systemctl` of tests/support first on the hook's PATH;
//! - config: `github-url` = the fake, `test-mode=insecure`, its token, `path` = [`REPO`].
//!
//! Include with the support modules it composes:
//! ```ignore
//! #[path = "support/executable.rs"] mod executable;
//! #[path = "support/fake_github/mod.rs"] mod fake_github;
//! #[path = "support/juju_harness/mod.rs"] mod juju_harness;
//! #[path = "support/lxd_fixture/mod.rs"] mod lxd_fixture;
//! #[path = "support/charm_env/mod.rs"] mod charm_env;
//! ```
#![allow(dead_code)] // each test binary uses a different part

use crate::executable::copy_executable;
use crate::fake_github::FakeGitHub;
use crate::juju_harness::{Harness, Run, REPO_ROOT};
pub use crate::lxd_fixture::wait_for;
use crate::lxd_fixture::{lxc_raw, LxdFixture};
use github_runner::identity::{UnitIdentity, OWNER_CONFIG_KEY};
use github_runner::juju::fake::FakeStorage;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The charm's file holding the credentials it last acted on (0600, under its state dir).
pub const CREDENTIALS_FILE: &str = "credentials.json";
/// The unit's current credential (token, App key, installation token), for every process.
pub const CREDENTIAL_STORE_FILE: &str = github_runner::credential::store::CREDENTIAL_FILE;
/// The repository the runners register in.
pub const REPO: &str = "octo/hello";
/// Environment knob: the LXD project the charm works in (Juju never sets it).
pub const LXD_PROJECT_ENV: &str = "GITHUB_RUNNER_LXD_PROJECT";
/// How long runners may take to come online (busybox containers take about a second).
pub const ONLINE_WITHIN: Duration = Duration::from_secs(90);
/// How long an instance may take to disappear after its runner exits.
pub const GONE_WITHIN: Duration = Duration::from_secs(60);

/// The recording fake systemctl of the setup tests (copied as `systemctl`, keeps its state
/// next to itself: `calls`, `active/<unit>`).
const FAKE_SYSTEMCTL: &str = "tests/support/fake_systemctl.sh";

pub use crate::lxd_fixture::runner_storage_dir;

pub struct CharmEnv {
    pub h: Harness,
    pub gh: FakeGitHub,
    pub fx: LxdFixture,
    /// First on the hook's PATH: the fake systemctl.
    pub bin_dir: PathBuf,
    pub unit: UnitIdentity,
    _tmp: tempfile::TempDir,
}

impl Default for CharmEnv {
    fn default() -> Self {
        CharmEnv::new(3)
    }
}

impl CharmEnv {
    /// A fresh unit `github-runner/0` configured for `virtual_machines` runners.
    pub fn new(virtual_machines: u32) -> CharmEnv {
        CharmEnv::build("github-runner/0", virtual_machines, None)
    }

    /// As [`CharmEnv::new`], for unit `unit_name` (`app/N`).
    pub fn for_unit(unit_name: &str, virtual_machines: u32) -> CharmEnv {
        CharmEnv::build(unit_name, virtual_machines, None)
    }

    /// As [`CharmEnv::new`], running `charm_binary` (the benchmark passes a release build).
    pub fn with_binary(virtual_machines: u32, charm_binary: &Path) -> CharmEnv {
        CharmEnv::build("github-runner/0", virtual_machines, Some(charm_binary))
    }

    fn build(unit_name: &str, virtual_machines: u32, charm_binary: Option<&Path>) -> CharmEnv {
        let fx = LxdFixture::new();
        let gh = FakeGitHub::start();
        let tarball =
            std::fs::read(fx.fake_runner_tarball()).expect("read the fake runner tarball");
        gh.set_runner_tarball(tarball);
        fx.route_default_profile_to_host_port(gh.port());

        let mut h = match charm_binary {
            Some(bin) => Harness::with_binary(unit_name, bin),
            None => Harness::with_unit(unit_name),
        };
        let unit = UnitIdentity::parse(&h.unit_name, &h.model_uuid).expect("valid unit identity");
        let tmp = tempfile::Builder::new()
            .prefix("charm-env-")
            .tempdir()
            .expect("temp dir");
        let bin_dir = tmp.path().join("bin");
        std::fs::create_dir_all(&bin_dir).expect("bin dir");
        let storage_dir = runner_storage_dir(&fx.conf);
        install_fake_systemctl(&bin_dir);

        h.env.insert(LXD_PROJECT_ENV.into(), fx.project.clone());
        h.env.insert(
            "PATH".into(),
            format!(
                "{}:{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                h.tools_dir.display(),
                bin_dir.display()
            ),
        );
        h.world.storage.insert(
            "runner/0".into(),
            FakeStorage {
                kind: "filesystem".into(),
                location: storage_dir.to_string_lossy().into_owned(),
            },
        );
        h.set_config("path", REPO)
            .set_config("token", gh.token())
            .set_config("github-url", gh.url())
            .set_config("test-mode", "insecure")
            .set_config("virtual-machines", i64::from(virtual_machines));
        CharmEnv {
            h,
            gh,
            fx,
            bin_dir,
            unit,
            _tmp: tmp,
        }
    }

    /// Another unit on this unit's machine (same host root, LXD daemon and project, fake
    /// systemctl and fake GitHub), of application `unit_name`'s app, configured alike for
    /// `virtual_machines` runners; nothing run yet.
    pub fn unit_on_same_machine(&self, unit_name: &str, virtual_machines: u32) -> Harness {
        let mut h = Harness::with_unit(unit_name);
        h.model_uuid = self.h.model_uuid.clone();
        h.host_root = self.h.host_root.clone();
        h.env = self.h.env.clone();
        h.world.storage = self.h.world.storage.clone();
        h.set_config("path", REPO)
            .set_config("token", self.gh.token())
            .set_config("github-url", self.gh.url())
            .set_config("test-mode", "insecure")
            .set_config("virtual-machines", i64::from(virtual_machines));
        h
    }

    /// Instances of the unit with `owner` key, sorted by name.
    pub fn instances_of(&self, owner: &str) -> Vec<String> {
        let listed = self.fx.lxc_ok(&[
            "query",
            &format!("/1.0/instances?recursion=1&project={}", self.fx.project),
        ]);
        let listed: serde_json::Value = serde_json::from_str(&listed).expect("instances JSON");
        let mut names: Vec<String> = listed
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["config"][OWNER_CONFIG_KEY].as_str() == Some(owner))
            .filter_map(|i| i["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    // ---- Juju events ----

    /// What Juju runs on a fresh unit with storage ([`Harness::deploy`]).
    pub fn deploy(&mut self) {
        self.h.deploy();
    }

    /// The timer's event: `JUJU_DISPATCH_PATH=reconcile-runners ./dispatch`.
    pub fn reconcile(&mut self) -> Run {
        self.h.dispatch_path("reconcile-runners")
    }

    pub fn config_changed(&mut self) -> Run {
        self.h.hook("config-changed")
    }

    pub fn set_config(&mut self, key: &str, value: impl Into<serde_json::Value>) -> &mut Self {
        self.h.set_config(key, value);
        self
    }

    /// (status, message) of the last status-set of the last run.
    pub fn status(&self) -> (String, String) {
        self.h.last_status().unwrap_or_default()
    }

    /// The environment of a run of `dispatch_path`, for spawning it outside the harness.
    pub fn dispatch_env(&self, dispatch_path: &str) -> Vec<(String, String)> {
        let mut env = self.h.hook_env("run-commands");
        env.insert("JUJU_HOOK_NAME".into(), String::new());
        env.insert("JUJU_DISPATCH_PATH".into(), dispatch_path.into());
        if let Some(action) = dispatch_path.strip_prefix("actions/") {
            env.insert("JUJU_ACTION_NAME".into(), action.into());
            env.insert(
                "JUJU_ACTION_UUID".into(),
                "00000000-0000-4000-8000-00000000cafe".into(),
            );
        }
        env.into_iter().collect()
    }

    /// Start `./dispatch` for `dispatch_path` in a process group of its own (so a SIGKILL of
    /// the group takes the `lxc` children with it, as a machine crash would).
    pub fn spawn_dispatch(&self, dispatch_path: &str) -> Child {
        self.h.write_world();
        Command::new(self.h.charm_dir.join("dispatch"))
            .env_clear()
            .envs(self.dispatch_env(dispatch_path))
            .current_dir(&self.h.charm_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn dispatch")
    }

    // ---- what LXD and GitHub hold ----

    /// This unit's instances (by owner key), sorted by name.
    pub fn instances(&self) -> Vec<String> {
        self.instances_of(&self.unit.owner_value())
    }

    /// Registrations in the fake GitHub, sorted by name.
    pub fn registrations(&self) -> Vec<String> {
        let mut names: Vec<String> = self.gh.runners().into_iter().map(|r| r.name).collect();
        names.sort();
        names
    }

    /// Names of registrations the fake has online.
    pub fn online(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .gh
            .runners()
            .into_iter()
            .filter(|r| r.online)
            .map(|r| r.name)
            .collect();
        names.sort();
        names
    }

    /// Exactly `n` runners, each an instance with its registration and none without.
    #[track_caller]
    pub fn assert_runners(&self, n: usize) -> Vec<String> {
        let instances = self.instances();
        let registrations = self.registrations();
        let instance_set: BTreeSet<&String> = instances.iter().collect();
        let registration_set: BTreeSet<&String> = registrations.iter().collect();
        assert_eq!(
            instance_set, registration_set,
            "instances and registrations differ (orphans on one side)"
        );
        assert_eq!(instances.len(), n, "runner count; instances: {instances:?}");
        instances
    }

    /// Wait (on the fake's condition variable) until exactly `n` registrations are online
    /// and there are no others; panics after [`ONLINE_WITHIN`].
    #[track_caller]
    pub fn wait_online(&self, n: usize) -> Vec<String> {
        let ok = self.gh.wait_until(ONLINE_WITHIN, |s| {
            s.runners.len() == n && s.runners.iter().all(|r| r.online)
        });
        assert!(
            ok,
            "expected {n} runners online within {ONLINE_WITHIN:?}; registrations: {:?}, online: {:?}, instances: {:?}, status: {:?}",
            self.registrations(),
            self.online(),
            self.instances(),
            self.h.last_status()
        );
        self.online()
    }

    /// Wait until this unit has exactly `names` as instances; false after `timeout`.
    pub fn wait_instances(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&[String]) -> bool,
    ) -> bool {
        wait_for(timeout, || pred(&self.instances()))
    }

    /// Wait until LXD has no running operation in the project (a killed client's launch or
    /// start finishes in the daemon); panics after 60 s.
    #[track_caller]
    pub fn wait_lxd_quiet(&self) {
        let url = format!("/1.0/operations?recursion=1&project={}", self.fx.project);
        let quiet = wait_for(Duration::from_secs(60), || {
            let out = lxc_raw(&self.fx.conf, None, &["query", &url]);
            let ops: serde_json::Value =
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            out.status.success()
                && ops["running"]
                    .as_array()
                    .map(|running| {
                        // An exec into a runner (its detached start) may outlive a client.
                        running.iter().all(|op| op["class"] == "websocket")
                    })
                    .unwrap_or(true)
        });
        assert!(
            quiet,
            "LXD operations in {} did not finish",
            self.fx.project
        );
    }

    /// Delete every instance of the project and every registration: back to zero runners,
    /// behind the charm's back.
    pub fn wipe_runners(&self) {
        for name in self.fx.instance_names() {
            let _ = self.fx.lxc(&["delete", "--force", &name]);
        }
        for r in self.gh.runners() {
            self.gh.remove_runner(&r.name);
        }
    }

    /// No secret in what the last run showed (its output, juju-log, status, action results,
    /// the hook tools' arguments), in unit state, or in any host file but the charm's two
    /// 0600 credential files (the previous credentials, the current credential), which must
    /// be 0600: only root may read them.
    /// Returns whether that credentials file exists.
    #[track_caller]
    pub fn assert_secrets_kept(&self, run: &Run, secrets: &[&str]) -> bool {
        let mut credentials_seen = false;
        let mut places: Vec<(String, String)> = vec![
            ("stdout".into(), run.stdout.clone()),
            ("stderr".into(), run.stderr.clone()),
            ("unit state".into(), format!("{:?}", self.h.unit_state())),
        ];
        for entry in std::fs::read_dir(&self.h.state_dir).expect("read the fake's state dir") {
            let path = entry.expect("dir entry").path();
            // world.json is Juju's side (the config holds the token); unit state is checked above.
            if path
                .file_name()
                .is_some_and(|n| n == github_runner::juju::fake::WORLD_FILE)
            {
                continue;
            }
            places.push((
                path.display().to_string(),
                std::fs::read_to_string(&path).unwrap_or_default(),
            ));
        }
        let mut stack = vec![self.h.host_root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                let meta = std::fs::symlink_metadata(&path).expect("stat host file");
                if meta.is_dir() {
                    stack.push(path);
                    continue;
                }
                if !meta.is_file() {
                    continue;
                }
                let text =
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
                let credential_file = [CREDENTIALS_FILE, CREDENTIAL_STORE_FILE]
                    .iter()
                    .any(|f| path.file_name().is_some_and(|n| n == *f));
                if credential_file {
                    assert_eq!(
                        meta.permissions().mode() & 0o777,
                        0o600,
                        "{} must be readable by root only",
                        path.display()
                    );
                    credentials_seen = true;
                    continue;
                }
                places.push((path.display().to_string(), text));
            }
        }
        for secret in secrets {
            for (place, text) in &places {
                assert!(
                    !text.contains(secret),
                    "a secret (fingerprint {}) shows in {place}",
                    github_runner::secret::Secret::new(secret.to_string()).fingerprint()
                );
            }
        }
        credentials_seen
    }

    /// An instance with this unit's owner key that is not a runner (no registration, no
    /// runner id): what GitHub does not list.
    pub fn launch_unregistered_instance(&self, name: &str) {
        self.fx.lxc_ok(&[
            "launch",
            crate::lxd_fixture::IMAGE_ALIAS,
            name,
            "-c",
            &format!("{OWNER_CONFIG_KEY}={}", self.unit.owner_value()),
        ]);
    }
}

fn install_fake_systemctl(bin_dir: &Path) {
    copy_executable(
        &Path::new(REPO_ROOT).join(FAKE_SYSTEMCTL),
        &bin_dir.join("systemctl"),
    );
}

/// `HH:MM` of an epoch in UTC (what the status must name for a rate-limit reset).
pub fn utc_hh_mm(epoch: u64) -> String {
    let secs = epoch % 86_400;
    format!("{:02}:{:02}", secs / 3600, (secs % 3600) / 60)
}

/// splitmix64: a seeded, dependency-free RNG for random kill points (the seed is printed).
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    pub fn duration_up_to(&mut self, max: Duration) -> Duration {
        let millis = max.as_millis().max(1) as u64;
        Duration::from_millis(self.next_u64() % (millis + 1))
    }
}

/// The seed CI runs the crash trials with: the same kill points on every run.
pub const FIXED_CRASH_SEED: u64 = 0x5EED_2026;

/// The crash trials' seed: `CRASH_SEED=<n>` replays a run; `CRASH_SWEEP=1` (opt-in) draws a
/// new one from the clock, for a random sweep; otherwise [`FIXED_CRASH_SEED`].
pub fn seed_from_env() -> u64 {
    if let Some(seed) = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return seed;
    }
    if std::env::var("CRASH_SWEEP").is_ok_and(|v| v == "1") {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(FIXED_CRASH_SEED);
    }
    FIXED_CRASH_SEED
}

/// SIGKILL the process group `pgid` (the child spawned by [`CharmEnv::spawn_dispatch`]).
pub fn kill_group(pgid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .expect("run kill");
    // A group that already exited is fine: the kill came too late to matter.
    let _ = status;
}

/// SIGKILL the one process `pid` (the hook process); its children live on.
pub fn kill_process(pid: u32) {
    // A process that already exited is fine: the kill came too late to matter.
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .expect("run kill");
}

/// True while any process of group `pgid` still runs (`kill -0 -- -pgid`).
pub fn group_alive(pgid: u32) -> bool {
    Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}
