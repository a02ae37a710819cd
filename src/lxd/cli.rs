//! [`Lxd`] driving the `lxc` command: JSON output, `lxc query` for REST calls, an `LXD_CONF`
//! of its own and an explicit environment for every spawn (Juju hooks run without HOME).

use super::{
    ExecOutput, ExecSpec, Instance, InstanceState, InstanceType, LaunchSpec, Lxd, LxdError,
    ProfileSpec, ProfileUse, PushSource, PushSpec, ServerInfo, MANAGED_PROFILE_DESCRIPTION,
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
        let raw: Vec<RawInstance> = self
            .get_json("list", "/1.0/instances?recursion=1")?
            .ok_or_else(|| LxdError::Command {
                operation: "list".into(),
                message: "GET /1.0/instances answered not found".into(),
            })?;
        raw.into_iter().map(RawInstance::into_instance).collect()
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

#[derive(Deserialize)]
struct RawInstance {
    name: String,
    status: String,
    #[serde(rename = "type")]
    instance_type: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    profiles: Vec<String>,
}

impl RawInstance {
    fn into_instance(self) -> Result<Instance, LxdError> {
        let instance_type =
            parse_instance_type(&self.instance_type).ok_or_else(|| LxdError::Parse {
                operation: "list".into(),
                reason: format!(
                    "instance {} has unknown type {:?}",
                    self.name, self.instance_type
                ),
            })?;
        Ok(Instance {
            state: parse_state(&self.status),
            instance_type,
            created_at_epoch: rfc3339_to_epoch(&self.created_at).unwrap_or(0),
            name: self.name,
            config: self.config,
            profiles: self.profiles,
        })
    }
}

pub(crate) fn parse_state(status: &str) -> InstanceState {
    match status {
        "Running" => InstanceState::Running,
        "Stopped" => InstanceState::Stopped,
        "Error" => InstanceState::Error,
        other => InstanceState::Other(other.to_string()),
    }
}

fn parse_instance_type(t: &str) -> Option<InstanceType> {
    match t {
        "container" => Some(InstanceType::Container),
        "virtual-machine" => Some(InstanceType::VirtualMachine),
        _ => None,
    }
}

/// Seconds since the epoch of an RFC 3339 UTC time as LXD writes it (`2024-01-02T03:04:05.6Z`).
pub(crate) fn rfc3339_to_epoch(s: &str) -> Option<u64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let time = rest.get(..8)?;
    let mut t = time.split(':');
    let (h, mi, se): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Offset: LXD writes UTC ("Z"); honour an explicit +hh:mm / -hh:mm too.
    let tail = rest.get(8..)?;
    let tail = tail.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match tail {
        "Z" | "z" | "" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o.get(1..3)?.parse::<i64>().ok()? * 3600
                + o.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, da);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(secs).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[derive(Deserialize, Serialize, PartialEq, Debug, Default)]
struct RawProfile {
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    devices: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct RawProfileUse {
    name: String,
    #[serde(default)]
    description: String,
    /// `null` on a profile nothing uses, in some LXD versions.
    #[serde(default, deserialize_with = "null_as_empty")]
    used_by: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct RawPool {
    driver: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct RawServer {
    environment: RawServerEnvironment,
}

#[derive(Deserialize)]
struct RawServerEnvironment {
    server_version: String,
    /// Newer LXD lists instance types; 5.0 only names its drivers (`lxc | qemu`).
    #[serde(default)]
    instance_types: Vec<String>,
    #[serde(default)]
    driver: String,
}

/// Instance types a server supports, from `instance_types` or else its driver names.
fn server_instance_types(env: &RawServerEnvironment) -> Vec<InstanceType> {
    let mut types: Vec<InstanceType> = env
        .instance_types
        .iter()
        .filter_map(|t| parse_instance_type(t))
        .collect();
    if types.is_empty() {
        types = env
            .driver
            .split('|')
            .filter_map(|d| match d.trim() {
                "lxc" => Some(InstanceType::Container),
                "qemu" => Some(InstanceType::VirtualMachine),
                _ => None,
            })
            .collect();
    }
    types
}

/// How an `lxc file push` ended: a missing instance is told apart from other errors.
fn file_transfer_result(out: &Captured, instance: &str, operation: String) -> Result<(), LxdError> {
    if out.code == 0 {
        return Ok(());
    }
    let message = lxd_message(&out.stderr);
    if message.contains("Instance not found") {
        Err(LxdError::InstanceNotFound(instance.to_string()))
    } else {
        Err(LxdError::Command { operation, message })
    }
}

fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Lxd for LxcCli {
    fn list_owned_instances(&self, owner_value: &str) -> Result<Vec<Instance>, LxdError> {
        Ok(self
            .list_all_instances()?
            .into_iter()
            .filter(|i| i.config.get(OWNER_CONFIG_KEY).map(String::as_str) == Some(owner_value))
            .collect())
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<(), LxdError> {
        let mut args: Vec<String> = vec![
            "launch".into(),
            spec.image_alias.clone(),
            spec.name.clone(),
            "--quiet".into(),
        ];
        if spec.instance_type == InstanceType::VirtualMachine {
            args.push("--vm".into());
        }
        if spec.ephemeral {
            args.push("--ephemeral".into());
        }
        for p in &spec.profiles {
            args.push("--profile".into());
            args.push(p.clone());
        }
        for (k, v) in &spec.config {
            args.push("--config".into());
            args.push(format!("{k}={v}"));
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run("launch", &argv, None, DEFAULT_COMMAND_TIMEOUT)?;
        if out.code == 0 {
            return Ok(());
        }
        let message = lxd_message(&out.stderr);
        if message.contains("Image not found") || message.contains("couldn't be found") {
            Err(LxdError::ImageNotFound(spec.image_alias.clone()))
        } else {
            Err(LxdError::Command {
                operation: format!("launch {}", spec.name),
                message,
            })
        }
    }

    /// `argv` and `env` become `lxc` arguments (visible in `ps` on the host): secrets go
    /// through `stdin` or a pushed file. On timeout the `lxc` client is killed; the command
    /// inside may run on until the instance is deleted.
    fn exec(&self, instance: &str, spec: &ExecSpec) -> Result<ExecOutput, LxdError> {
        let (uid, gid) = (spec.uid.to_string(), spec.gid.to_string());
        let mut args: Vec<String> = vec![
            "exec".into(),
            instance.into(),
            "--force-noninteractive".into(),
            "--user".into(),
            uid,
            "--group".into(),
            gid,
        ];
        for (k, v) in &spec.env {
            args.push("--env".into());
            args.push(format!("{k}={v}"));
        }
        args.push("--".into());
        args.extend(spec.argv.iter().cloned());
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let operation = format!("exec in {instance}");
        // Without stdin, lxc gets /dev/null so the command sees EOF, not a hang.
        let stdin = Some(spec.stdin.as_deref().unwrap_or(&[]));
        let out = self.run_capped(&operation, &argv, stdin, spec.timeout, spec.output_cap)?;
        if exec_failed_in_lxd(out.code, &out.stderr) {
            let message = lxd_message(&out.stderr);
            return Err(if message.contains("Instance not found") {
                LxdError::InstanceNotFound(instance.to_string())
            } else {
                LxdError::Command { operation, message }
            });
        }
        Ok(ExecOutput {
            exit_code: out.code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: out.stderr,
        })
    }

    fn push_file(&self, instance: &str, spec: &PushSpec) -> Result<(), LxdError> {
        let operation = format!("file push to {instance}{}", spec.target);
        // In-memory contents go through a 0600 temp file (tempfile's default mode) that only
        // lives for this call, so a secret never sits in a world-readable place or in argv.
        let temp;
        let source: &Path = match &spec.source {
            PushSource::File(path) => path,
            PushSource::Bytes(bytes) => {
                let mut file =
                    crate::host::file::temp_file_in(&self.conf_dir).map_err(|e| LxdError::Io {
                        operation: operation.clone(),
                        reason: e.to_string(),
                    })?;
                file.write_all(bytes)
                    .and_then(|_| file.flush())
                    .map_err(|e| LxdError::Io {
                        operation: operation.clone(),
                        reason: e.to_string(),
                    })?;
                temp = file;
                temp.path()
            }
        };
        let source = source.to_str().ok_or_else(|| LxdError::Io {
            operation: operation.clone(),
            reason: format!("source path {} is not UTF-8", source.display()),
        })?;
        let target = format!("{instance}/{}", spec.target.trim_start_matches('/'));
        let (mode, uid, gid) = (
            format!("{:04o}", spec.mode),
            spec.uid.to_string(),
            spec.gid.to_string(),
        );
        let args = [
            "file",
            "push",
            "--quiet",
            "--create-dirs",
            "--mode",
            &mode,
            "--uid",
            &uid,
            "--gid",
            &gid,
            source,
            &target,
        ];
        let out = self.run(&operation, &args, None, DEFAULT_COMMAND_TIMEOUT)?;
        file_transfer_result(&out, instance, operation)
    }

    fn stop(&self, instance: &str, force: bool, timeout: Duration) -> Result<(), LxdError> {
        let secs = secs_ceil(timeout).max(1).to_string();
        let mut args = vec!["stop", instance, "--timeout", &secs];
        if force {
            args.push("--force");
        }
        let out = self.run(
            &format!("stop {instance}"),
            &args,
            None,
            timeout + STOP_CLIENT_GRACE,
        )?;
        if out.code == 0 {
            return Ok(());
        }
        let message = lxd_message(&out.stderr);
        if message.contains("Instance not found") {
            Err(LxdError::InstanceNotFound(instance.to_string()))
        } else if message.contains("already stopped") || message.contains("is not running") {
            Ok(())
        } else {
            Err(LxdError::Command {
                operation: format!("stop {instance}"),
                message,
            })
        }
    }

    fn delete(&self, instance: &str, force: bool) -> Result<(), LxdError> {
        let mut args = vec!["delete", instance];
        if force {
            args.push("--force");
        }
        let out = self.run(
            &format!("delete {instance}"),
            &args,
            None,
            DEFAULT_COMMAND_TIMEOUT,
        )?;
        if out.code == 0 {
            return Ok(());
        }
        let message = lxd_message(&out.stderr);
        // An ephemeral instance may vanish between our call and LXD's check: already deleted.
        if message.contains("Instance not found") || message.contains("not found") {
            Ok(())
        } else {
            Err(LxdError::Command {
                operation: format!("delete {instance}"),
                message,
            })
        }
    }

    fn set_instance_config(&self, instance: &str, key: &str, value: &str) -> Result<(), LxdError> {
        self.patch_instance_config(instance, key, value)
    }

    fn image_exists(&self, alias: &str) -> Result<bool, LxdError> {
        let found: Option<serde_json::Value> = self.get_json(
            "image alias lookup",
            &format!("/1.0/images/aliases/{}", url_segment(alias)),
        )?;
        Ok(found.is_some())
    }

    fn ensure_storage_pool(&self, name: &str, driver: &str, source: &str) -> Result<(), LxdError> {
        let operation = format!("storage pool {name}");
        let path = format!("/1.0/storage-pools/{}", url_segment(name));
        let check = |pool: RawPool| -> Result<(), LxdError> {
            let live_source = pool.config.get("source").map(String::as_str).unwrap_or("");
            if pool.driver == driver && live_source == source {
                Ok(())
            } else {
                Err(LxdError::Command {
                    operation: operation.clone(),
                    message: format!(
                        "pool exists with driver {} and source {live_source:?}, wanted driver {driver} and source {source:?}; \
                         a pool cannot be moved: delete it (lxc storage delete {name}) or redeploy",
                        pool.driver
                    ),
                })
            }
        };
        if let Some(pool) = self.get_json::<RawPool>(&operation, &path)? {
            return check(pool);
        }
        // Storage pools are global: the project in the URL is ignored for them.
        let body =
            serde_json::json!({"name": name, "driver": driver, "config": {"source": source}});
        match self.query(&operation, "POST", "/1.0/storage-pools", Some(&body)) {
            Ok(_) => Ok(()),
            // Another unit or hook created it meanwhile: accept it if it is the same pool.
            Err(err) => match self.get_json::<RawPool>(&operation, &path)? {
                Some(pool) => check(pool),
                None => Err(err),
            },
        }
    }

    fn ensure_profile(&self, spec: &ProfileSpec) -> Result<(), LxdError> {
        let operation = format!("profile {}", spec.name);
        let path = format!("/1.0/profiles/{}", url_segment(&spec.name));
        let desired = |description: String| RawProfile {
            config: spec.config.clone(),
            devices: spec.devices.clone(),
            description,
        };
        let put = |current: RawProfile| -> Result<(), LxdError> {
            let wanted = desired(current.description.clone());
            if current == wanted {
                return Ok(());
            }
            let body = serde_json::to_value(&wanted).map_err(|e| LxdError::Parse {
                operation: operation.clone(),
                reason: e.to_string(),
            })?;
            match self.query(&operation, "PUT", &path, Some(&body))? {
                QueryAnswer::Found(_) => Ok(()),
                QueryAnswer::NotFound(message) => Err(LxdError::Command {
                    operation: operation.clone(),
                    message,
                }),
            }
        };
        if let Some(current) = self.get_json::<RawProfile>(&operation, &path)? {
            return put(current);
        }
        let body = serde_json::json!({
            "name": spec.name,
            "description": MANAGED_PROFILE_DESCRIPTION,
            "config": spec.config,
            "devices": spec.devices,
        });
        match self.query(&operation, "POST", "/1.0/profiles", Some(&body)) {
            Ok(_) => Ok(()),
            // Created concurrently: converge it.
            Err(err) => match self.get_json::<RawProfile>(&operation, &path)? {
                Some(current) => put(current),
                None => Err(err),
            },
        }
    }

    fn list_profiles(&self) -> Result<Vec<ProfileUse>, LxdError> {
        let raw: Vec<RawProfileUse> = self
            .get_json("profile list", "/1.0/profiles?recursion=1")?
            .ok_or_else(|| LxdError::Command {
                operation: "profile list".into(),
                message: "GET /1.0/profiles answered not found".into(),
            })?;
        Ok(raw
            .into_iter()
            .map(|p| ProfileUse {
                managed: p.description == MANAGED_PROFILE_DESCRIPTION,
                name: p.name,
                used_by: p.used_by.len(),
            })
            .collect())
    }

    fn delete_profile(&self, name: &str) -> Result<(), LxdError> {
        let operation = format!("profile delete {name}");
        let path = format!("/1.0/profiles/{}", url_segment(name));
        // Not found: already gone, which is what was asked.
        self.query(&operation, "DELETE", &path, None).map(drop)
    }

    fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    fn storage_pool_free_bytes(&self, name: &str) -> Result<Option<u64>, LxdError> {
        let operation = format!("storage info {name}");
        let path = format!("/1.0/storage-pools/{}/resources", url_segment(name));
        let Some(resources) = self.get_json::<serde_json::Value>(&operation, &path)? else {
            return Ok(None);
        };
        let space = &resources["space"];
        Ok(match (space["total"].as_u64(), space["used"].as_u64()) {
            (Some(total), Some(used)) if total > 0 => Some(total.saturating_sub(used)),
            _ => None,
        })
    }

    fn delete_storage_pool(&self, name: &str) -> Result<(), LxdError> {
        let operation = format!("storage delete {name}");
        let path = format!("/1.0/storage-pools/{}", url_segment(name));
        self.query(&operation, "DELETE", &path, None).map(drop)
    }

    fn server_info(&self) -> Result<ServerInfo, LxdError> {
        let raw: RawServer =
            self.get_json("server info", "/1.0")?
                .ok_or_else(|| LxdError::Command {
                    operation: "server info".into(),
                    message: "GET /1.0 answered not found".into(),
                })?;
        Ok(ServerInfo {
            instance_types: server_instance_types(&raw.environment),
            server_version: raw.environment.server_version,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn lxd_message_keeps_only_error_lines() {
        let stderr = "Creating c1\nThe instance you are starting doesn't have any network\nError: Image not found\n";
        assert_eq!(lxd_message(stderr), "Image not found");
        assert_eq!(lxd_message("  boom \n"), "boom");
        assert_eq!(lxd_message(""), "lxc failed without a message");
    }

    #[test]
    fn exec_failure_is_told_apart_from_a_failing_command() {
        assert!(exec_failed_in_lxd(1, "Error: Instance is not running\n"));
        assert!(exec_failed_in_lxd(1, "Error: Instance not found"));
        assert!(
            !exec_failed_in_lxd(1, "Error: x\n"),
            "a command printing Error: is still the command"
        );
        assert!(!exec_failed_in_lxd(2, "Error: Instance is not running"));
        assert!(!exec_failed_in_lxd(127, "Error: Command not found"));
    }

    #[test]
    fn parses_lxd_timestamps() {
        assert_eq!(rfc3339_to_epoch("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_to_epoch("2026-11-27T17:53:22.05554362Z"),
            Some(1_795_802_002)
        );
        assert_eq!(
            rfc3339_to_epoch("2000-03-01T00:00:00+01:00"),
            Some(951_865_200)
        );
        assert_eq!(
            rfc3339_to_epoch("2024-02-29T12:00:00Z"),
            Some(1_709_208_000)
        );
        assert_eq!(
            rfc3339_to_epoch("0001-01-01T00:00:00Z"),
            None,
            "before the epoch"
        );
        assert_eq!(rfc3339_to_epoch("garbage"), None);
        assert_eq!(rfc3339_to_epoch("2024-13-01T00:00:00Z"), None);
    }

    #[test]
    fn states_and_types_map_from_lxd_words() {
        assert_eq!(parse_state("Running"), InstanceState::Running);
        assert_eq!(parse_state("Stopped"), InstanceState::Stopped);
        assert_eq!(parse_state("Error"), InstanceState::Error);
        assert_eq!(parse_state("Frozen"), InstanceState::Other("Frozen".into()));
        assert_eq!(
            parse_instance_type("virtual-machine"),
            Some(InstanceType::VirtualMachine)
        );
        assert_eq!(
            parse_instance_type("container"),
            Some(InstanceType::Container)
        );
        assert_eq!(parse_instance_type("vm"), None);
    }

    #[test]
    fn raw_instance_json_maps_to_instance() {
        let json = r#"[{"name":"a-0-0123456789ab","status":"Running","type":"container",
            "created_at":"1970-01-01T00:01:00Z","config":{"user.github-runner.owner":"u/a/0"},
            "profiles":["default","runner"],"state":{"status":"Running"}}]"#;
        let raw: Vec<RawInstance> = parse_json("list", json.as_bytes()).unwrap();
        let inst = raw.into_iter().next().unwrap().into_instance().unwrap();
        assert_eq!(inst.name, "a-0-0123456789ab");
        assert_eq!(inst.created_at_epoch, 60);
        assert_eq!(inst.instance_type, InstanceType::Container);
        assert_eq!(inst.profiles, vec!["default", "runner"]);
        assert_eq!(
            inst.config.get(OWNER_CONFIG_KEY).map(String::as_str),
            Some("u/a/0")
        );
    }

    #[test]
    fn production_client_uses_the_host_lxd_conf_dir() {
        let dir = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(dir.path());
        match LxcCli::for_host(&paths) {
            Ok(cli) => {
                assert_eq!(cli.conf_dir(), paths.lxd_conf_dir());
                assert_eq!(cli.project(), None);
            }
            // Without lxc on PATH the error says what to install.
            Err(e) => assert!(matches!(e, LxdError::LxcMissing), "{e}"),
        }
    }

    #[test]
    fn project_goes_into_query_urls() {
        let dir = tempfile::tempdir().unwrap();
        let cli = LxcCli::with_binary("/bin/false".into(), dir.path().join("conf")).unwrap();
        assert_eq!(cli.project_url("/1.0/profiles"), "/1.0/profiles");
        let cli = cli.in_project("t1");
        assert_eq!(cli.project_url("/1.0/profiles"), "/1.0/profiles?project=t1");
        assert_eq!(
            cli.project_url("/1.0/instances?recursion=1"),
            "/1.0/instances?recursion=1&project=t1"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("conf"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "LXD_CONF holds client keys: private");
    }

    #[test]
    fn instance_types_come_from_drivers_on_lxd_5_0() {
        let env = |types: &[&str], driver: &str| RawServerEnvironment {
            server_version: "5.0.2".into(),
            instance_types: types.iter().map(|t| t.to_string()).collect(),
            driver: driver.into(),
        };
        assert_eq!(
            server_instance_types(&env(&[], "lxc")),
            vec![InstanceType::Container]
        );
        assert_eq!(
            server_instance_types(&env(&[], "lxc | qemu")),
            vec![InstanceType::Container, InstanceType::VirtualMachine]
        );
        assert_eq!(
            server_instance_types(&env(&["virtual-machine"], "lxc")),
            vec![InstanceType::VirtualMachine]
        );
    }

    #[test]
    fn url_segments_escape_anything_unusual() {
        assert_eq!(url_segment("cpu-2-mem-7GiB"), "cpu-2-mem-7GiB");
        assert_eq!(url_segment("a/b?c"), "a%2Fb%3Fc");
    }

    #[test]
    fn a_command_over_its_deadline_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        // `sleep` stands in for a hung lxc: the call must come back with Timeout, not hang.
        let sleep = which::which("sleep").unwrap();
        let cli = LxcCli::with_binary(sleep, dir.path().join("conf")).unwrap();
        let started = Instant::now();
        let err = cli
            .run("probe", &["30"], None, Duration::from_millis(200))
            .err()
            .unwrap();
        assert!(matches!(err, LxdError::Timeout { .. }), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn spawned_lxc_gets_only_the_explicit_environment() {
        let dir = tempfile::tempdir().unwrap();
        let env = which::which("env").unwrap();
        let cli = LxcCli::with_binary(env, dir.path().join("conf")).unwrap();
        let out = cli
            .run("probe", &[], None, Duration::from_secs(10))
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        for k in &keys {
            assert!(
                ["PATH", "LXD_CONF", "HOME", "LANG", "LXD_DIR", "LXD_SOCKET"].contains(k),
                "leaked {k}"
            );
        }
        assert!(text.contains(&format!("LXD_CONF={}", dir.path().join("conf").display())));
    }
}
