//! The Juju edge: hook tools (jujuc) as a trait, the event a dispatch path names, and the
//! tracing layer that forwards logs to juju-log.

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
}

/// jujuc, one method per tool, with exactly its syntax.
pub trait HookTools {
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
    fn secret_get(&self, secret_id: &str) -> Result<BTreeMap<String, String>, HookToolError>;
}
