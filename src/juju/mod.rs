//! The Juju edge: hook tools (jujuc) as a trait, the event a dispatch path names, and the
//! tracing layer that forwards logs to juju-log.

pub mod context;
pub mod event;
#[cfg(feature = "testkit")]
pub mod fake;
pub mod log;
#[cfg(any(test, feature = "testkit"))]
pub mod memory;
pub mod process;
pub mod state;

use serde_json::Value;
use std::collections::BTreeMap;

/// Workload status as `status-set` takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Maintenance(String),
    Blocked(String),
    Waiting(String),
    Active(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageInfo {
    pub kind: String,
    pub location: String,
}

/// A hook tool failed. Carries the tool's stderr, which is how Juju explains itself.
#[derive(Debug, thiserror::Error)]
pub enum HookToolError {
    #[error("hook tool {tool} not found on PATH (is this running inside a Juju hook?)")]
    Missing { tool: String },
    #[error("{tool} exited with {code}: {stderr}")]
    Failed {
        tool: String,
        code: i32,
        stderr: String,
    },
    #[error("could not parse {tool} output: {reason}")]
    Parse { tool: String, reason: String },
    #[error("invalid action result key {key:?}: each dot-separated part must match ^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$ and not be reserved")]
    InvalidActionKey { key: String },
    #[error("could not run {tool}: {reason}")]
    Io { tool: String, reason: String },
    #[error("{tool} did not answer within {seconds} s and was killed; check that the unit agent (jujud) is running and responsive")]
    Timeout { tool: String, seconds: f64 },
}

/// jujuc, one method per tool, with exactly its syntax.
/// `Sync`: progress from the executor's worker threads goes to `action-log` as it happens.
pub trait HookTools: Sync {
    /// `config-get --format=json --all`.
    fn config_get(&self) -> Result<serde_json::Map<String, Value>, HookToolError>;
    fn status_set(&self, status: &Status) -> Result<(), HookToolError>;
    fn application_version_set(&self, version: &str) -> Result<(), HookToolError>;
    fn juju_log(&self, level: LogLevel, message: &str) -> Result<(), HookToolError>;
    fn action_get(&self) -> Result<serde_json::Map<String, Value>, HookToolError>;
    /// Keys may be dotted (`delta.virtual-machines`); validated before `action-set` runs.
    fn action_set(&self, results: &BTreeMap<String, String>) -> Result<(), HookToolError>;
    fn action_fail(&self, message: &str) -> Result<(), HookToolError>;
    fn action_log(&self, message: &str) -> Result<(), HookToolError>;
    fn relation_ids(&self, endpoint: &str) -> Result<Vec<String>, HookToolError>;
    fn relation_list(&self, relation_id: &str) -> Result<Vec<String>, HookToolError>;
    /// All data of `unit_or_app` on the relation (`--app` when `app`).
    fn relation_get(
        &self,
        relation_id: &str,
        unit_or_app: &str,
        app: bool,
    ) -> Result<BTreeMap<String, String>, HookToolError>;
    fn relation_set(
        &self,
        relation_id: &str,
        app: bool,
        data: &BTreeMap<String, String>,
    ) -> Result<(), HookToolError>;
    fn is_leader(&self) -> Result<bool, HookToolError>;
    fn storage_list(&self, name: Option<&str>) -> Result<Vec<String>, HookToolError>;
    fn storage_get(&self, storage_id: &str) -> Result<StorageInfo, HookToolError>;
    fn state_get(&self) -> Result<BTreeMap<String, String>, HookToolError>;
    fn state_set(&self, values: &BTreeMap<String, String>) -> Result<(), HookToolError>;
    fn state_delete(&self, key: &str) -> Result<(), HookToolError>;
    fn juju_reboot(&self, now: bool) -> Result<(), HookToolError>;
    /// `secret-get`: the revision this unit tracks ([`SecretRead`] says which).
    fn secret_get(
        &self,
        secret_id: &str,
        read: SecretRead,
    ) -> Result<BTreeMap<String, String>, HookToolError>;
}

/// Which revision of a secret another application owns `secret-get` answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretRead {
    /// The revision this unit tracks (the first read starts tracking the latest).
    Tracked,
    /// `--refresh`: the latest, which this unit then tracks (after `secret-changed`).
    Refresh,
    /// `--peek`: the latest, without tracking it.
    Peek,
}

impl SecretRead {
    /// The `secret-get` flag.
    pub fn flag(self) -> Option<&'static str> {
        match self {
            SecretRead::Tracked => None,
            SecretRead::Refresh => Some("--refresh"),
            SecretRead::Peek => Some("--peek"),
        }
    }

    /// How a hook reads `secret_id`: `--refresh` in the `secret-changed` hook about it
    /// (`changed`, from `JUJU_SECRET_ID`), so this unit follows the new revision; the
    /// tracked revision otherwise. One rule for every secret the charm reads.
    pub fn in_hook(changed: Option<&str>, secret_id: &str) -> SecretRead {
        match changed {
            Some(changed) if same_secret(changed, secret_id) => SecretRead::Refresh,
            _ => SecretRead::Tracked,
        }
    }
}

/// True when two secret URIs name the same secret: Juju writes `secret:<id>` in one place
/// and `secret://<model-uuid>/<id>` in another.
pub fn same_secret(a: &str, b: &str) -> bool {
    let id = |uri: &str| {
        uri.rsplit(['/', ':'])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    !id(a).is_empty() && id(a) == id(b)
}

/// Keys Juju keeps for itself in action results.
const RESERVED_ACTION_KEYS: [&str; 4] = ["stdout", "stdout-encoding", "stderr", "stderr-encoding"];

/// True when `action-set` accepts `key`: every dot-separated part matches
/// `^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$` and the key is not one Juju reserves.
pub fn validate_action_key(key: &str) -> bool {
    let part_ok = |part: &str| {
        let bytes = part.as_bytes();
        let inner_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
        let end_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                end_ok(first) && end_ok(last) && bytes.iter().all(inner_ok)
            }
            _ => false,
        }
    };
    !RESERVED_ACTION_KEYS.contains(&key) && key.split('.').all(part_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_keys_follow_juju_rules() {
        for good in [
            "online",
            "delta.virtual-machines",
            "a",
            "0",
            "a-b.c-d.e",
            "x1",
            "stdoutx",
        ] {
            assert!(validate_action_key(good), "{good}");
        }
        for bad in [
            "",
            "A",
            "a_b",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "delta.-x",
            "ünï",
            "a b",
            "stdout",
            "stderr",
            "stdout-encoding",
            "stderr-encoding",
        ] {
            assert!(!validate_action_key(bad), "{bad}");
        }
    }
}
