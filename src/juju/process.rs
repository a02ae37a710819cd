//! [`HookTools`] by running Juju's hook tools (jujuc), with exactly their syntax.
//!
//! Free text always follows `--` so a message starting with `-` is never taken for a flag.
//! Data that may be large or sensitive (unit state, relation data) goes through stdin
//! (`--file -`), never through argv, which every user of the machine can read in `ps`.

use super::context::HookEnv;
use super::{
    validate_action_key, HookToolError, HookTools, LogLevel, SecretRead, Status, StorageInfo,
};
use crate::host::child::{collect_with_deadline, kill_and_reap, Collected};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest a hook tool may take. They answer in milliseconds; one that hangs (a wedged unit
/// agent) fails the hook, which Juju retries, instead of holding the unit's lock forever.
pub const HOOK_TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs each hook tool as a child process with the hook's own environment.
#[derive(Debug)]
pub struct ProcessHookTools {
    env: HookEnv,
    timeout: Duration,
    tool_nanos: AtomicU64,
    tool_calls: AtomicU64,
}

/// Time spent waiting on hook tools, so the charm can tell its own cost from Juju's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolTime {
    pub total: Duration,
    pub calls: u64,
}

impl ProcessHookTools {
    pub fn new(env: HookEnv) -> Self {
        ProcessHookTools {
            env,
            timeout: HOOK_TOOL_TIMEOUT,
            tool_nanos: AtomicU64::new(0),
            tool_calls: AtomicU64::new(0),
        }
    }

    /// Another deadline per tool call (tests use a short one).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn tool_time(&self) -> ToolTime {
        ToolTime {
            total: Duration::from_nanos(self.tool_nanos.load(Ordering::Relaxed)),
            calls: self.tool_calls.load(Ordering::Relaxed),
        }
    }

    /// The tool's absolute path on the hook's PATH: with one, std spawns with posix_spawn
    /// instead of fork+exec. Not found: the bare name, so the spawn reports it missing.
    fn resolve(&self, tool: &str) -> PathBuf {
        let path = self
            .env
            .vars()
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|candidate| {
                candidate
                    .metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .unwrap_or_else(|| PathBuf::from(tool))
    }

    fn run(
        &self,
        tool: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<String, HookToolError> {
        let started = Instant::now();
        let result = self.spawn_and_wait(tool, args, stdin);
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.tool_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.tool_calls.fetch_add(1, Ordering::Relaxed);
        result
    }

    fn spawn_and_wait(
        &self,
        tool: &str,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> Result<String, HookToolError> {
        let io_err = |e: std::io::Error| HookToolError::Io {
            tool: tool.to_string(),
            reason: e.to_string(),
        };
        let mut command = Command::new(self.resolve(tool));
        // The hook's environment, explicitly: PATH (with the tools dir) and JUJU_CONTEXT_ID
        // are what jujuc needs; nothing else leaks in.
        command
            .env_clear()
            .envs(self.env.vars().iter().map(|(k, v)| (k, v)))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HookToolError::Missing {
                    tool: tool.to_string(),
                })
            }
            Err(e) => return Err(io_err(e)),
        };
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Our inputs are small (state maps); the tool reads all of stdin before writing,
            // so writing first cannot deadlock on a full stdout pipe. A tool that exits without
            // reading (a syntax error) closes the pipe: its status and stderr tell why.
            match pipe.write_all(input) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => {
                    kill_and_reap(&mut child);
                    return Err(io_err(e));
                }
            }
        }
        let Some(Collected {
            status,
            stdout,
            stderr,
        }) = collect_with_deadline(&mut child, self.timeout).map_err(io_err)?
        else {
            return Err(HookToolError::Timeout {
                tool: tool.to_string(),
                seconds: self.timeout.as_secs_f64(),
            });
        };
        if !status.success() {
            return Err(HookToolError::Failed {
                tool: tool.to_string(),
                // None: killed by a signal; -1 keeps the type simple and is never a real code.
                code: status.code().unwrap_or(-1),
                stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
            });
        }
        String::from_utf8(stdout).map_err(|_| HookToolError::Parse {
            tool: tool.to_string(),
            reason: "output is not UTF-8".into(),
        })
    }

    fn run_json<T: DeserializeOwned>(&self, tool: &str, args: &[&str]) -> Result<T, HookToolError> {
        let out = self.run(tool, args, None)?;
        parse_json(tool, &out)
    }
}

fn parse_json<T: DeserializeOwned>(tool: &str, out: &str) -> Result<T, HookToolError> {
    serde_json::from_str(out.trim()).map_err(|e| HookToolError::Parse {
        tool: tool.to_string(),
        reason: e.to_string(),
    })
}

/// Values Juju prints as JSON strings; `null` (no data) becomes empty.
fn string_map(
    tool: &str,
    value: Option<Map<String, Value>>,
) -> Result<BTreeMap<String, String>, HookToolError> {
    value
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            other => Err(HookToolError::Parse {
                tool: tool.to_string(),
                reason: format!("value of {k:?} is {other}, expected a string"),
            }),
        })
        .collect()
}

fn status_args(status: &Status) -> (&'static str, &str) {
    match status {
        Status::Maintenance(m) => ("maintenance", m),
        Status::Blocked(m) => ("blocked", m),
        Status::Waiting(m) => ("waiting", m),
        Status::Active(m) => ("active", m),
    }
}

fn level_arg(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Trace => "TRACE",
        LogLevel::Debug => "DEBUG",
        LogLevel::Info => "INFO",
        LogLevel::Warning => "WARNING",
        LogLevel::Error => "ERROR",
    }
}

fn to_json_bytes(map: &BTreeMap<String, String>) -> Vec<u8> {
    // A map of strings always serialises.
    serde_json::to_vec(map).unwrap_or_default()
}

impl HookTools for ProcessHookTools {
    fn config_get(&self) -> Result<Map<String, Value>, HookToolError> {
        let map: Option<Map<String, Value>> =
            self.run_json("config-get", &["--format=json", "--all"])?;
        Ok(map.unwrap_or_default())
    }

    fn status_set(&self, status: &Status) -> Result<(), HookToolError> {
        let (name, message) = status_args(status);
        self.run("status-set", &[name, "--", message], None)
            .map(drop)
    }

    fn application_version_set(&self, version: &str) -> Result<(), HookToolError> {
        self.run("application-version-set", &["--", version], None)
            .map(drop)
    }

    fn juju_log(&self, level: LogLevel, message: &str) -> Result<(), HookToolError> {
        self.run("juju-log", &["-l", level_arg(level), "--", message], None)
            .map(drop)
    }

    fn action_get(&self) -> Result<Map<String, Value>, HookToolError> {
        let map: Option<Map<String, Value>> = self.run_json("action-get", &["--format=json"])?;
        Ok(map.unwrap_or_default())
    }

    fn action_set(&self, results: &BTreeMap<String, String>) -> Result<(), HookToolError> {
        if results.is_empty() {
            return Ok(());
        }
        let mut args = Vec::with_capacity(results.len());
        for (key, value) in results {
            if !validate_action_key(key) {
                return Err(HookToolError::InvalidActionKey { key: key.clone() });
            }
            args.push(format!("{key}={value}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("action-set", &args, None).map(drop)
    }

    fn action_fail(&self, message: &str) -> Result<(), HookToolError> {
        self.run("action-fail", &["--", message], None).map(drop)
    }

    fn action_log(&self, message: &str) -> Result<(), HookToolError> {
        self.run("action-log", &["--", message], None).map(drop)
    }

    fn relation_ids(&self, endpoint: &str) -> Result<Vec<String>, HookToolError> {
        let ids: Option<Vec<String>> =
            self.run_json("relation-ids", &["--format=json", "--", endpoint])?;
        Ok(ids.unwrap_or_default())
    }

    fn relation_list(&self, relation_id: &str) -> Result<Vec<String>, HookToolError> {
        let units: Option<Vec<String>> =
            self.run_json("relation-list", &["--format=json", "-r", relation_id])?;
        Ok(units.unwrap_or_default())
    }

    fn relation_get(
        &self,
        relation_id: &str,
        unit_or_app: &str,
        app: bool,
    ) -> Result<BTreeMap<String, String>, HookToolError> {
        let mut args = vec!["--format=json", "-r", relation_id];
        if app {
            args.push("--app");
        }
        // `-` = every key.
        args.extend(["--", "-", unit_or_app]);
        let map: Option<Map<String, Value>> = self.run_json("relation-get", &args)?;
        string_map("relation-get", map)
    }

    fn relation_set(
        &self,
        relation_id: &str,
        app: bool,
        data: &BTreeMap<String, String>,
    ) -> Result<(), HookToolError> {
        let mut args = vec!["-r", relation_id];
        if app {
            args.push("--app");
        }
        args.extend(["--file", "-"]);
        self.run("relation-set", &args, Some(&to_json_bytes(data)))
            .map(drop)
    }

    fn is_leader(&self) -> Result<bool, HookToolError> {
        self.run_json("is-leader", &["--format=json"])
    }

    fn storage_list(&self, name: Option<&str>) -> Result<Vec<String>, HookToolError> {
        let mut args = vec!["--format=json"];
        if let Some(name) = name {
            args.extend(["--", name]);
        }
        let ids: Option<Vec<String>> = self.run_json("storage-list", &args)?;
        Ok(ids.unwrap_or_default())
    }

    fn storage_get(&self, storage_id: &str) -> Result<StorageInfo, HookToolError> {
        let map: Option<Map<String, Value>> =
            self.run_json("storage-get", &["--format=json", "-s", storage_id])?;
        let map = map.unwrap_or_default();
        let field = |name: &str| -> Result<String, HookToolError> {
            map.get(name)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| HookToolError::Parse {
                    tool: "storage-get".into(),
                    reason: format!("no {name:?} for storage {storage_id}"),
                })
        };
        Ok(StorageInfo {
            kind: field("kind")?,
            location: field("location")?,
        })
    }

    fn state_get(&self) -> Result<BTreeMap<String, String>, HookToolError> {
        let map: Option<Map<String, Value>> = self.run_json("state-get", &["--format=json"])?;
        string_map("state-get", map)
    }

    fn state_set(&self, values: &BTreeMap<String, String>) -> Result<(), HookToolError> {
        if values.is_empty() {
            return Ok(());
        }
        self.run("state-set", &["--file", "-"], Some(&to_json_bytes(values)))
            .map(drop)
    }

    fn state_delete(&self, key: &str) -> Result<(), HookToolError> {
        self.run("state-delete", &["--", key], None).map(drop)
    }

    fn juju_reboot(&self, now: bool) -> Result<(), HookToolError> {
        let args: &[&str] = if now { &["--now"] } else { &[] };
        self.run("juju-reboot", args, None).map(drop)
    }

    fn secret_read(
        &self,
        secret_id: &str,
        read: SecretRead,
    ) -> Result<BTreeMap<String, String>, HookToolError> {
        let mut args = vec!["--format=json"];
        args.extend(read.flag());
        args.extend(["--", secret_id]);
        let map: Option<Map<String, Value>> = self.run_json("secret-get", &args)?;
        string_map("secret-get", map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_maps_accept_null_and_reject_non_strings() {
        assert_eq!(string_map("t", None).unwrap(), BTreeMap::new());
        let map: Map<String, Value> = serde_json::from_str(r#"{"a":"1"}"#).unwrap();
        assert_eq!(
            string_map("t", Some(map)).unwrap(),
            BTreeMap::from([("a".to_string(), "1".to_string())])
        );
        let map: Map<String, Value> = serde_json::from_str(r#"{"a":1}"#).unwrap();
        assert!(matches!(
            string_map("t", Some(map)),
            Err(HookToolError::Parse { .. })
        ));
    }

    #[test]
    fn missing_tool_is_reported_as_missing() {
        let tools = ProcessHookTools::new(HookEnv::from_pairs([("PATH", "/nonexistent")]));
        assert!(matches!(
            tools.is_leader(),
            Err(HookToolError::Missing { tool }) if tool == "is-leader"
        ));
        assert_eq!(tools.tool_time().calls, 1);
    }

    #[test]
    fn invalid_action_keys_never_reach_the_tool() {
        // PATH points nowhere: reaching the tool would give Missing, not InvalidActionKey.
        let tools = ProcessHookTools::new(HookEnv::from_pairs([("PATH", "/nonexistent")]));
        let results = BTreeMap::from([("Bad_Key".to_string(), "v".to_string())]);
        assert!(matches!(
            tools.action_set(&results),
            Err(HookToolError::InvalidActionKey { key }) if key == "Bad_Key"
        ));
        assert_eq!(tools.tool_time().calls, 0);
    }

    #[test]
    fn a_hung_tool_is_killed_at_the_deadline_and_fails_the_call() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        crate::test_executable::write_executable(
            &dir.path().join("is-leader"),
            &format!(
                "#!/bin/sh\necho $$ > {}\nexec /bin/sleep 30\n",
                pid_file.display()
            ),
        );
        let tools = ProcessHookTools::new(HookEnv::from_pairs([(
            "PATH",
            dir.path().to_str().unwrap(),
        )]))
        .with_timeout(Duration::from_millis(300));
        let err = tools.is_leader().unwrap_err();
        assert!(
            matches!(&err, HookToolError::Timeout { tool, .. } if tool == "is-leader"),
            "{err}"
        );
        assert!(err.to_string().contains("unit agent"), "{err}");
        // Killed and reaped, not left behind: its pid no longer exists (no pid file: killed
        // before it wrote one, on a very loaded machine).
        if let Ok(pid) = std::fs::read_to_string(&pid_file) {
            assert!(!std::path::Path::new(&format!("/proc/{}", pid.trim())).exists());
        }
    }
}
