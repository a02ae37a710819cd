//! [`Lxd`] driving the `lxc` command: JSON output, `lxc query` for REST calls, an `LXD_CONF`
//! of its own and an explicit environment for every spawn (Juju hooks run without HOME).
//!
//! `instances`: the instance calls (list, launch, exec, push, stop, delete); `resources`:
//! images, storage pools, profiles and the server.

mod instances;
mod resources;
#[cfg(test)]
mod tests;

use super::{
    ExecOutput, ExecSpec, Instance, InstanceState, InstanceType, LaunchSpec, Lxd, LxdError,
    MachineInstance, ProfileSpec, ProfileUse, PushSource, PushSpec, ServerInfo,
    MANAGED_PROFILE_DESCRIPTION,
};
use crate::host::child::{collect_capped, Collection, HOST_PROGRAM_PATH};
use crate::host::file::create_private_dir;
use crate::identity::OWNER_CONFIG_KEY;
use crate::paths::HostPaths;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Bound on one `lxc` call that has no timeout of its own (list, query, push, ...).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Extra time given to `lxc stop --timeout N` before the client itself is killed.
const STOP_CLIENT_GRACE: Duration = Duration::from_secs(30);

/// Lines `lxc exec` prints when LXD itself failed, as opposed to the command exiting non-zero.
const EXEC_FAILURE_MARKERS: &[&str] = &[
    "Error: Instance is not running",
    "Error: Instance is frozen",
    "Error: Instance not found",
    "Error: Failed to retrieve PID",
    "Error: Failed to connect",
    "Error: websocket",
    "Error: VM agent isn't currently running",
];

/// The `lxc` client, optionally bound to one LXD project.
#[derive(Debug, Clone)]
pub struct LxcCli {
    lxc: PathBuf,
    conf_dir: PathBuf,
    project: Option<String>,
    /// `LXD_DIR`/`LXD_SOCKET` of our own environment, passed on so a relocated daemon is found.
    daemon_env: Vec<(String, String)>,
}

/// Most `lxc` itself may print (instance listings of a big host stay far below). Output of a
/// command inside an instance has its own, much smaller cap: [`ExecSpec::output_cap`].
const LXD_OUTPUT_CAP: usize = 64 << 20;

/// What one `lxc` invocation printed.
struct Captured {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl LxcCli {
    /// Finds `lxc` on PATH; `conf_dir` (created 0700 if missing) becomes its `LXD_CONF`.
    pub fn new(conf_dir: impl Into<PathBuf>) -> Result<Self, LxdError> {
        let lxc = which::which("lxc").map_err(|_| LxdError::LxcMissing)?;
        Self::with_binary(lxc, conf_dir)
    }

    /// The production client: default project, `LXD_CONF` at [`HostPaths::lxd_conf_dir`].
    pub fn for_host(paths: &HostPaths) -> Result<Self, LxdError> {
        Self::new(paths.lxd_conf_dir())
    }

    /// As [`LxcCli::new`] with an explicit `lxc` binary.
    pub fn with_binary(lxc: PathBuf, conf_dir: impl Into<PathBuf>) -> Result<Self, LxdError> {
        let conf_dir = conf_dir.into();
        create_private_dir(&conf_dir).map_err(|e| LxdError::Io {
            operation: "config".into(),
            reason: format!("cannot create LXD_CONF dir {}: {e}", conf_dir.display()),
        })?;
        Ok(LxcCli {
            lxc,
            conf_dir,
            project: None,
            daemon_env: daemon_env(),
        })
    }

    /// Every call goes to `project` (tests use their own; production uses the default one).
    pub fn in_project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    pub fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.lxc);
        cmd.env_clear()
            .env("PATH", HOST_PROGRAM_PATH)
            .env("LXD_CONF", &self.conf_dir)
            .env("HOME", &self.conf_dir)
            .env("LANG", "C.UTF-8");
        for (k, v) in &self.daemon_env {
            cmd.env(k, v);
        }
        if let Some(project) = &self.project {
            cmd.arg("--project").arg(project);
        }
        cmd.args(args);
        cmd
    }

    /// Runs `lxc args...` with stdin fed from `stdin`, killed after `timeout`.
    fn run(
        &self,
        operation: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Captured, LxdError> {
        self.run_capped(operation, args, stdin, timeout, LXD_OUTPUT_CAP)
    }

    /// As [`LxcCli::run`]; `lxc` is killed as soon as stdout or stderr passes `output_cap`.
    fn run_capped(
        &self,
        operation: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
        output_cap: usize,
    ) -> Result<Captured, LxdError> {
        let io_err = |reason: String| LxdError::Io {
            operation: operation.to_string(),
            reason,
        };
        let mut cmd = self.command(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| io_err(format!("cannot run lxc: {e}")))?;
        let stdin_writer = match (stdin, child.stdin.take()) {
            (Some(bytes), Some(mut pipe)) => {
                let bytes = bytes.to_vec();
                // A command that never reads its stdin closes the pipe: ignore that error.
                Some(std::thread::spawn(move || {
                    let _ = pipe.write_all(&bytes);
                }))
            }
            _ => None,
        };
        let collected = collect_capped(&mut child, timeout, output_cap);
        if let Some(writer) = stdin_writer {
            let _ = writer.join();
        }
        match collected.map_err(|e| io_err(e.to_string()))? {
            Collection::Done(done) => Ok(Captured {
                code: done.status.code().unwrap_or(-1),
                stdout: done.stdout,
                stderr: String::from_utf8_lossy(&done.stderr).into_owned(),
            }),
            Collection::TimedOut => Err(LxdError::Timeout {
                operation: operation.to_string(),
                seconds: timeout.as_secs(),
            }),
            Collection::TooLarge => Err(LxdError::OutputTooLarge {
                operation: operation.to_string(),
                cap: output_cap,
            }),
        }
    }

    /// `lxc query` (which refuses `--project`): the project goes into the URL instead.
    pub(super) fn query(
        &self,
        operation: &str,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<QueryAnswer, LxdError> {
        let url = self.project_url(path);
        let body_text = body.map(|b| b.to_string());
        let mut args = vec!["query", "-X", method];
        if let Some(text) = &body_text {
            args.push("--data");
            args.push(text);
        }
        args.push(&url);
        // `lxc query` refuses --project, so run it without: the project is in the URL.
        let mut cli = self.clone();
        cli.project = None;
        let out = cli.run(operation, &args, None, DEFAULT_COMMAND_TIMEOUT)?;
        if out.code == 0 {
            return Ok(QueryAnswer::Found(out.stdout));
        }
        let message = lxd_message(&out.stderr);
        if is_not_found(&message) {
            Ok(QueryAnswer::NotFound(message))
        } else {
            Err(LxdError::Command {
                operation: operation.to_string(),
                message,
            })
        }
    }

    fn project_url(&self, path: &str) -> String {
        match &self.project {
            Some(p) => {
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{path}{sep}project={p}")
            }
            None => path.to_string(),
        }
    }

    fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        operation: &str,
        path: &str,
    ) -> Result<Option<T>, LxdError> {
        match self.query(operation, "GET", path, None)? {
            QueryAnswer::Found(bytes) => parse_json(operation, &bytes).map(Some),
            QueryAnswer::NotFound(_) => Ok(None),
        }
    }

    /// All instances of the project, owned or not (the owner filter is [`Lxd::list_owned_instances`]).
    pub fn list_all_instances(&self) -> Result<Vec<Instance>, LxdError> {
        // `GET /1.0/instances?recursion=1` has name, status, type, config and profiles but not
        // the runtime state that `lxc list --format json` gathers per instance (from each VM's
        // agent): ~12x faster with 10 containers, and no hang on a VM whose agent is down.
        let raw: Vec<instances::RawInstance> = self
            .get_json("list", "/1.0/instances?recursion=1")?
            .ok_or_else(|| LxdError::Command {
                operation: "list".into(),
                message: "GET /1.0/instances answered not found".into(),
            })?;
        raw.into_iter()
            .map(instances::RawInstance::into_instance)
            .collect()
    }

    /// Every instance of every project (`all-projects=true`), or of this client's project
    /// when it is bound to one; with the limits each runs with (`expanded_config`).
    pub fn list_machine_instances(&self) -> Result<Vec<MachineInstance>, LxdError> {
        let path = match &self.project {
            Some(_) => "/1.0/instances?recursion=1",
            None => "/1.0/instances?recursion=1&all-projects=true",
        };
        let raw: Vec<instances::RawMachineInstance> = self
            .get_json("list machine instances", path)?
            .ok_or_else(|| LxdError::Command {
                operation: "list machine instances".into(),
                message: "GET /1.0/instances answered not found".into(),
            })?;
        Ok(raw
            .into_iter()
            .map(instances::RawMachineInstance::into_machine_instance)
            .collect())
    }
}

pub(super) enum QueryAnswer {
    Found(Vec<u8>),
    NotFound(String),
}

/// Where a relocated daemon is (tests, or LXD not in its default place), from our own
/// environment: every program that talks to LXD gets these, so all find the same daemon.
pub(crate) fn daemon_env() -> Vec<(String, String)> {
    ["LXD_DIR", "LXD_SOCKET"]
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect()
}

/// LXD's own words from `lxc` stderr: the `Error: ...` line(s), else everything trimmed.
pub(crate) fn lxd_message(stderr: &str) -> String {
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Error: "))
        .collect();
    if errors.is_empty() {
        let trimmed = stderr.trim();
        if trimmed.is_empty() {
            "lxc failed without a message".to_string()
        } else {
            trimmed.to_string()
        }
    } else {
        errors.join("; ")
    }
}

fn is_not_found(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not found") || m.contains("couldn't be found")
}

/// True when `lxc exec` failed in LXD rather than the command exiting with that code.
pub(crate) fn exec_failed_in_lxd(code: i32, stderr: &str) -> bool {
    code == 1
        && stderr
            .lines()
            .any(|l| EXEC_FAILURE_MARKERS.iter().any(|m| l.trim().starts_with(m)))
}

pub(super) fn parse_json<T: for<'de> Deserialize<'de>>(
    operation: &str,
    bytes: &[u8],
) -> Result<T, LxdError> {
    serde_json::from_slice(bytes).map_err(|e| LxdError::Parse {
        operation: operation.to_string(),
        reason: e.to_string(),
    })
}

impl Lxd for LxcCli {
    fn list_owned_instances(&self, owner_value: &str) -> Result<Vec<Instance>, LxdError> {
        instances::list_owned_instances(self, owner_value)
    }

    fn list_machine_instances(&self) -> Result<Vec<MachineInstance>, LxdError> {
        LxcCli::list_machine_instances(self)
    }

    fn list_project_instances(&self) -> Result<Vec<Instance>, LxdError> {
        self.list_all_instances()
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<(), LxdError> {
        instances::launch(self, spec)
    }

    /// `argv` and `env` become `lxc` arguments (visible in `ps` on the host): secrets go
    /// through `stdin` or a pushed file. On timeout the `lxc` client is killed; the command
    /// inside may run on until the instance is deleted.
    fn exec(&self, instance: &str, spec: &ExecSpec) -> Result<ExecOutput, LxdError> {
        instances::exec(self, instance, spec)
    }

    fn push_file(&self, instance: &str, spec: &PushSpec) -> Result<(), LxdError> {
        instances::push_file(self, instance, spec)
    }

    fn stop(&self, instance: &str, force: bool, timeout: Duration) -> Result<(), LxdError> {
        instances::stop(self, instance, force, timeout)
    }

    fn delete(&self, instance: &str, force: bool) -> Result<(), LxdError> {
        instances::delete(self, instance, force)
    }

    fn set_instance_config(&self, instance: &str, key: &str, value: &str) -> Result<(), LxdError> {
        self.patch_instance_config(instance, key, value)
    }

    fn image_exists(&self, alias: &str) -> Result<bool, LxdError> {
        resources::image_exists(self, alias)
    }

    fn ensure_storage_pool(&self, name: &str, driver: &str, source: &str) -> Result<(), LxdError> {
        resources::ensure_storage_pool(self, name, driver, source)
    }

    fn ensure_profile(&self, spec: &ProfileSpec) -> Result<(), LxdError> {
        resources::ensure_profile(self, spec)
    }

    fn list_profiles(&self) -> Result<Vec<ProfileUse>, LxdError> {
        resources::list_profiles(self)
    }

    fn delete_profile(&self, name: &str) -> Result<(), LxdError> {
        resources::delete_profile(self, name)
    }

    fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    fn storage_pool_free_bytes(&self, name: &str) -> Result<Option<u64>, LxdError> {
        resources::storage_pool_free_bytes(self, name)
    }

    fn delete_storage_pool(&self, name: &str) -> Result<(), LxdError> {
        resources::delete_storage_pool(self, name)
    }

    fn server_info(&self) -> Result<ServerInfo, LxdError> {
        resources::server_info(self)
    }
}

/// Names reach URLs verbatim; LXD names are restricted to URL-safe characters, but refuse
/// anything else rather than build a different URL.
pub(super) fn url_segment(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c.to_string()
            } else {
                format!("%{:02X}", c as u32 & 0xff)
            }
        })
        .collect()
}
