//! Runs the real charm binary the way Juju does, against the fake hook tools.
//!
//! Each [`Harness`] owns a temp dir with a charm dir (the repo's `dispatch`, YAML files,
//! `hooks/`, and `bin/github-runner-charm` linked to the built binary), a tools dir (every
//! hook tool name linked to `fake-jujuc`, plus tests/support/fake_systemctl.sh as
//! `systemctl`), the fake's state dir and a host root (`GITHUB_RUNNER_HOST_ROOT`). The LXD
//! project knob names a project that does not exist, so hooks never change the machine's
//! LXD. A run replaces the environment (no HOME), sets the `JUJU_*`
//! variables of the hook, action or custom event, runs `./dispatch` from the charm dir and
//! returns its exit code and output; the histories (status, juju-log, action results, ...)
//! are then read back. Unit state and relation data written by a failed hook are discarded,
//! as Juju does; a `juju-exec` run ([`Harness::dispatch_path`]) keeps them whatever its exit
//! code, as real `juju-exec` does.
//!
//! Include with `#[path = "support/juju_harness/mod.rs"] mod juju_harness;` and
//! `#[path = "support/executable.rs"] mod executable;` (test targets
//! need the `testkit` feature, which builds `fake-jujuc`).
#![allow(dead_code)]

use crate::executable::copy_executable;
use github_runner::juju::fake::{
    self, ActionRecord, CallRecord, FakeFailure, FakeRelation, FakeStorage, LogRecord,
    StatusRecord, World,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const CHARM_BIN: &str = env!("CARGO_BIN_EXE_github-runner-charm");
pub const WORKER_BIN: &str = env!("CARGO_BIN_EXE_github-runner-worker");
pub const FAKE_JUJUC_BIN: &str = env!("CARGO_BIN_EXE_fake-jujuc");
pub const REPO_ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The charm's test knob naming its LXD project, and the project the harness names: one that
/// never exists.
pub const LXD_PROJECT_ENV: &str = "GITHUB_RUNNER_LXD_PROJECT";
pub const NO_LXD_PROJECT: &str = "juju-harness-no-lxd";
/// Longest a hook may run before the harness kills it and fails the test. Juju itself puts
/// no deadline on hooks; this one only stops a test that hangs, so it must exceed what the
/// charm bounds itself to in one hook (the unit lock wait, then one `lxc` call, then a GitHub
/// call with its retries): a slow daemon must reach the charm's timeout path, not this one.
/// `harness_deadline_exceeds_the_charms_own_timeouts` (tests/juju_hooks.rs) checks it.
pub const HOOK_DEADLINE: Duration = Duration::from_secs(720);

/// Files of the repo that make up a charm dir, besides `dispatch`, `hooks/` and `bin/`.
const CHARM_YAML: [&str; 3] = ["metadata.yaml", "config.yaml", "actions.yaml"];
const LEGACY_HOOKS: [&str; 3] = ["install", "start", "upgrade-charm"];

/// When a run's changes to the world (unit state, relation data) are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// Hooks and actions: only when they exit 0, as Juju does.
    OnSuccess,
    /// juju-exec: always.
    Always,
}

#[derive(Debug, Clone)]
pub struct Run {
    /// -1 when killed by a signal.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Wall time from spawn to exit.
    pub elapsed: Duration,
    /// Peak resident memory of the hook process itself (`dispatch` execs the charm, so the
    /// charm's), KiB, from the kernel's accounting of the reaped process; its children (hook
    /// tools, lxc) are not in it.
    pub peak_rss_kib: u64,
}

impl Run {
    #[track_caller]
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.code, 0, "hook failed: {self:#?}");
        self
    }
}

pub struct Harness {
    _tmp: tempfile::TempDir,
    pub charm_dir: PathBuf,
    pub tools_dir: PathBuf,
    pub state_dir: PathBuf,
    pub host_root: PathBuf,
    /// What Juju knows; written before each run, read back after a successful one.
    pub world: World,
    pub unit_name: String,
    pub model_uuid: String,
    /// Extra variables for every run (`JUJU_CHARM_HTTP_PROXY`, ...), overriding defaults.
    pub env: BTreeMap<String, String>,
    runs: u32,
}

impl Default for Harness {
    fn default() -> Self {
        Harness::new()
    }
}

/// A model UUID of its own for each harness: tests run in parallel against one LXD daemon,
/// and the LXD objects named after the model (a unit's network ACL) must not collide.
fn unique_model_uuid() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let unique = (std::process::id() << 8) ^ NEXT.fetch_add(1, Ordering::SeqCst);
    format!("{unique:08x}-1d0b-4d6e-8e7c-3f0e6e0b7c11")
}

impl Harness {
    pub fn new() -> Self {
        Harness::with_unit("github-runner/0")
    }

    pub fn with_unit(unit_name: &str) -> Self {
        Harness::with_binary(unit_name, Path::new(CHARM_BIN))
    }

    /// A harness running `charm_binary` (the benchmark passes the release build).
    pub fn with_binary(unit_name: &str, charm_binary: &Path) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("juju-harness-")
            .tempdir()
            .expect("temp dir");
        let root = tmp.path().to_path_buf();
        let charm_dir = root.join("charm");
        let tools_dir = root.join("tools");
        let state_dir = root.join("state");
        let host_root = root.join("host");
        for dir in [&charm_dir, &tools_dir, &state_dir, &host_root] {
            std::fs::create_dir_all(dir).expect("create harness dir");
        }
        copy_executable(
            &Path::new(REPO_ROOT).join("dispatch"),
            &charm_dir.join("dispatch"),
        );
        for file in CHARM_YAML {
            std::fs::copy(Path::new(REPO_ROOT).join(file), charm_dir.join(file))
                .unwrap_or_else(|e| panic!("copy {file}: {e}"));
        }
        std::fs::create_dir_all(charm_dir.join("hooks")).expect("hooks dir");
        for hook in LEGACY_HOOKS {
            // Follows the repo's symlink, as charmcraft does when packing.
            copy_executable(
                &Path::new(REPO_ROOT).join("hooks").join(hook),
                &charm_dir.join("hooks").join(hook),
            );
        }
        std::fs::create_dir_all(charm_dir.join("bin")).expect("bin dir");
        std::os::unix::fs::symlink(charm_binary, charm_dir.join("bin/github-runner-charm"))
            .expect("link charm binary");
        // The worker binary of the same build when it is there (a release charm binary has
        // its release worker beside it), else this test build's.
        let sibling = charm_binary.with_file_name("github-runner-worker");
        let worker = if sibling.exists() {
            sibling
        } else {
            PathBuf::from(WORKER_BIN)
        };
        std::os::unix::fs::symlink(worker, charm_dir.join("bin/github-runner-worker"))
            .expect("link worker binary");
        for tool in fake::TOOL_NAMES {
            std::os::unix::fs::symlink(FAKE_JUJUC_BIN, tools_dir.join(tool)).expect("link tool");
        }
        // Hooks install and repair a systemd timer: never the machine's systemctl.
        copy_executable(
            &Path::new(REPO_ROOT).join("tests/support/fake_systemctl.sh"),
            &tools_dir.join("systemctl"),
        );
        Harness {
            _tmp: tmp,
            charm_dir,
            tools_dir,
            state_dir,
            host_root,
            world: World::default(),
            unit_name: unit_name.to_string(),
            model_uuid: unique_model_uuid(),
            env: BTreeMap::new(),
            runs: 0,
        }
    }

    pub fn app_name(&self) -> String {
        self.unit_name
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    pub fn set_config(&mut self, key: &str, value: impl Into<Value>) -> &mut Self {
        self.world.config.insert(key.to_string(), value.into());
        self
    }

    /// path and token set: the smallest valid configuration.
    pub fn valid_config(&mut self) -> &mut Self {
        self.set_config("path", "canonical/github-runner-operator")
            .set_config("token", "ghp_TESTTOKEN0123456789")
    }

    pub fn fail_tool(&mut self, tool: &str, code: i32, stderr: &str) -> &mut Self {
        self.world.failing.insert(
            tool.to_string(),
            FakeFailure {
                code,
                stderr: stderr.to_string(),
            },
        );
        self
    }

    /// Add a relation on `endpoint` with `units` remote units; returns its id.
    pub fn add_relation(&mut self, endpoint: &str, remote_app: &str, units: usize) -> String {
        let id = format!("{endpoint}:{}", 10 + self.world.relations.len());
        self.world.relations.push(FakeRelation {
            id: id.clone(),
            remote_app: remote_app.to_string(),
            remote_units: (0..units)
                .map(|n| (format!("{remote_app}/{n}"), BTreeMap::new()))
                .collect(),
            ..FakeRelation::default()
        });
        id
    }

    /// The environment of a plain hook, for driving hook tools from the test process.
    pub fn hook_env(&self, hook: &str) -> BTreeMap<String, String> {
        let mut env = self.base_env(hook);
        env.insert("JUJU_HOOK_NAME".into(), hook.into());
        env.insert("JUJU_DISPATCH_PATH".into(), format!("hooks/{hook}"));
        env
    }

    /// Write the world for tools run outside [`Harness::hook`] & co.
    pub fn write_world(&self) {
        fake::write_json(&self.state_dir.join(fake::WORLD_FILE), &self.world).expect("write world");
    }

    /// The world as the tools left it.
    pub fn read_world(&self) -> World {
        fake::read_json(&self.state_dir.join(fake::WORLD_FILE)).expect("read world")
    }

    fn base_env(&self, context: &str) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = [
            (
                "JUJU_CHARM_DIR",
                self.charm_dir.to_string_lossy().into_owned(),
            ),
            ("CHARM_DIR", self.charm_dir.to_string_lossy().into_owned()),
            (
                "JUJU_CONTEXT_ID",
                format!("{}-{context}-{}", self.unit_name, self.runs),
            ),
            ("JUJU_UNIT_NAME", self.unit_name.clone()),
            ("JUJU_MODEL_NAME", "test-model".into()),
            ("JUJU_MODEL_UUID", self.model_uuid.clone()),
            ("JUJU_VERSION", "3.5.4".into()),
            ("JUJU_MACHINE_ID", "0".into()),
            ("JUJU_AVAILABILITY_ZONE", String::new()),
            ("JUJU_API_ADDRESSES", "10.0.0.1:17070".into()),
            ("JUJU_CHARM_HTTP_PROXY", String::new()),
            ("JUJU_CHARM_HTTPS_PROXY", String::new()),
            ("JUJU_CHARM_NO_PROXY", String::new()),
            ("JUJU_HOOK_NAME", String::new()),
            (
                "PATH",
                format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.tools_dir.display()),
            ),
            (
                fake::STATE_DIR_ENV,
                self.state_dir.to_string_lossy().into_owned(),
            ),
            (
                github_runner::paths::HOST_ROOT_ENV,
                self.host_root.to_string_lossy().into_owned(),
            ),
            // An LXD project that does not exist: hooks run here answer "waiting for LXD"
            // instead of creating pools or profiles on the machine's daemon. Tests that
            // want LXD set their own project in `env` (tests/support/charm_env).
            (LXD_PROJECT_ENV, NO_LXD_PROJECT.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(self.env.clone());
        env
    }

    /// What Juju runs on a fresh unit with storage: storage-attached, install,
    /// config-changed, start. Each must succeed.
    pub fn deploy(&mut self) {
        for hook in [
            "runner-storage-attached",
            "install",
            "config-changed",
            "start",
        ] {
            let run = self.hook(hook);
            assert_eq!(
                run.code,
                0,
                "{}: hook {hook} failed: {run:#?}\nstatus: {:?}",
                self.unit_name,
                self.last_status()
            );
        }
    }

    /// Run hook `name` through `dispatch`, with the relation or storage variables its name
    /// calls for (adding a relation or the runner storage when the world has none).
    pub fn hook(&mut self, name: &str) -> Run {
        let mut env = self.base_env(name);
        env.insert("JUJU_HOOK_NAME".into(), name.into());
        env.insert("JUJU_DISPATCH_PATH".into(), format!("hooks/{name}"));
        self.add_hook_context(name, &mut env);
        self.run_in(&self.charm_dir.join("dispatch"), env, Commit::OnSuccess)
    }

    /// Run hook `name` with extra variables (`JUJU_SECRET_ID` for a secret hook).
    pub fn hook_with(&mut self, name: &str, extra: &[(&str, &str)]) -> Run {
        let mut env = self.base_env(name);
        env.insert("JUJU_HOOK_NAME".into(), name.into());
        env.insert("JUJU_DISPATCH_PATH".into(), format!("hooks/{name}"));
        self.add_hook_context(name, &mut env);
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self.run_in(&self.charm_dir.join("dispatch"), env, Commit::OnSuccess)
    }

    /// Old Juju: run `hooks/<name>` by absolute path, without `JUJU_DISPATCH_PATH`.
    pub fn legacy_hook(&mut self, name: &str) -> Run {
        let mut env = self.base_env(name);
        env.insert("JUJU_HOOK_NAME".into(), name.into());
        self.add_hook_context(name, &mut env);
        self.run_in(
            &self.charm_dir.join("hooks").join(name),
            env,
            Commit::OnSuccess,
        )
    }

    pub fn action(&mut self, name: &str) -> Run {
        let mut env = self.base_env(name);
        env.insert("JUJU_DISPATCH_PATH".into(), format!("actions/{name}"));
        env.insert("JUJU_ACTION_NAME".into(), name.into());
        env.insert(
            "JUJU_ACTION_UUID".into(),
            format!("00000000-0000-4000-8000-{:012}", self.runs),
        );
        self.run_in(&self.charm_dir.join("dispatch"), env, Commit::OnSuccess)
    }

    /// A custom event, as juju-exec runs `JUJU_DISPATCH_PATH=<path> ./dispatch`. Unlike a
    /// hook's, its state changes are kept even when it fails: juju-exec commits what the
    /// command's hook tools set whatever the command's exit code.
    pub fn dispatch_path(&mut self, path: &str) -> Run {
        let mut env = self.base_env("run-commands");
        env.insert("JUJU_DISPATCH_PATH".into(), path.into());
        self.run_in(&self.charm_dir.join("dispatch"), env, Commit::Always)
    }

    fn add_hook_context(&mut self, name: &str, env: &mut BTreeMap<String, String>) {
        if let Some((endpoint, kind)) = name.rsplit_once("-relation-") {
            let existing = self
                .world
                .relations
                .iter()
                .find(|r| r.endpoint() == endpoint);
            let id = match existing {
                Some(r) => r.id.clone(),
                None => self.add_relation(endpoint, &format!("remote-{endpoint}"), 1),
            };
            let relation = self
                .world
                .relations
                .iter()
                .find(|r| r.id == id)
                .expect("relation just found or added");
            env.insert("JUJU_RELATION".into(), endpoint.into());
            env.insert("JUJU_RELATION_ID".into(), id.clone());
            env.insert("JUJU_REMOTE_APP".into(), relation.remote_app.clone());
            if let Some(unit) = relation.remote_units.keys().next() {
                if kind != "created" && kind != "broken" {
                    env.insert("JUJU_REMOTE_UNIT".into(), unit.clone());
                }
                if kind == "departed" {
                    env.insert("JUJU_DEPARTING_UNIT".into(), unit.clone());
                }
            }
        }
        if name.starts_with("runner-storage-") {
            let location = self.host_root.join("storage/juju");
            let storage = self
                .world
                .storage
                .entry("runner/0".into())
                .or_insert_with(|| FakeStorage {
                    kind: "filesystem".into(),
                    location: location.to_string_lossy().into_owned(),
                });
            env.insert("JUJU_STORAGE_ID".into(), "runner/0".into());
            env.insert("JUJU_STORAGE_LOCATION".into(), storage.location.clone());
            env.insert("JUJU_STORAGE_KIND".into(), storage.kind.clone());
        }
    }

    /// Reset per-run histories, write the world, run, and keep the world's changes as
    /// `commit` says.
    fn run_in(&mut self, program: &Path, env: BTreeMap<String, String>, commit: Commit) -> Run {
        self.runs += 1;
        for file in [
            fake::CALLS_FILE,
            fake::STATUS_FILE,
            fake::LOG_FILE,
            fake::APP_VERSION_FILE,
            fake::ACTION_FILE,
            fake::ACTION_LOG_FILE,
            fake::REBOOT_FILE,
        ] {
            let _ = std::fs::remove_file(self.state_dir.join(file));
        }
        let world_file = self.state_dir.join(fake::WORLD_FILE);
        fake::write_json(&world_file, &self.world).expect("write world");
        let run = run_with_deadline(
            Command::new(program)
                .env_clear()
                .envs(&env)
                .current_dir(&self.charm_dir)
                .stdin(Stdio::null()),
        );
        if run.code == 0 || commit == Commit::Always {
            self.world = fake::read_json(&world_file).expect("read world");
        }
        run
    }

    pub fn calls(&self) -> Vec<CallRecord> {
        fake::read_jsonl(&self.state_dir.join(fake::CALLS_FILE)).expect("calls")
    }

    pub fn statuses(&self) -> Vec<StatusRecord> {
        fake::read_jsonl(&self.state_dir.join(fake::STATUS_FILE)).expect("statuses")
    }

    /// (status, message) of the last status-set of this run.
    pub fn last_status(&self) -> Option<(String, String)> {
        self.statuses()
            .last()
            .map(|s| (s.status.clone(), s.message.clone()))
    }

    pub fn logs(&self) -> Vec<LogRecord> {
        fake::read_jsonl(&self.state_dir.join(fake::LOG_FILE)).expect("logs")
    }

    pub fn app_versions(&self) -> Vec<String> {
        fake::read_jsonl(&self.state_dir.join(fake::APP_VERSION_FILE)).expect("versions")
    }

    pub fn action_record(&self) -> ActionRecord {
        fake::read_json(&self.state_dir.join(fake::ACTION_FILE)).expect("action record")
    }

    pub fn action_logs(&self) -> Vec<String> {
        fake::read_jsonl(&self.state_dir.join(fake::ACTION_LOG_FILE)).expect("action logs")
    }

    /// Unit state as committed (after the last successful run).
    pub fn unit_state(&self) -> BTreeMap<String, String> {
        self.world.unit_state.clone()
    }
}

/// Run to completion; a watchdog kills the child after [`HOOK_DEADLINE`]. Waiting blocks
/// (no polling), so the benchmark measures the hook, not a poll interval.
pub fn run_with_deadline(command: &mut Command) -> Run {
    let started = Instant::now();
    // Reaped below with wait4, which also reports the process's peak memory.
    #[allow(clippy::zombie_processes)]
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(HOOK_DEADLINE).is_err() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            return true;
        }
        false
    });
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    // wait4 rather than Child::wait: it also gives the reaped process's peak memory.
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills in; all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own unreaped child; status and usage outlive the call.
    let reaped = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid as i32, "wait4 on the hook");
    let elapsed = started.elapsed();
    let _ = done.send(());
    let killed = watchdog.join().expect("watchdog");
    assert!(
        !killed,
        "hook still running after {HOOK_DEADLINE:?}; killed"
    );
    use std::os::unix::process::ExitStatusExt;
    Run {
        code: std::process::ExitStatus::from_raw(status)
            .code()
            .unwrap_or(-1),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed,
        peak_rss_kib: usage.ru_maxrss as u64,
    }
}
