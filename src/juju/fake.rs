//! The state directory shared by the fake hook tools (`src/bin/fake-jujuc.rs`) and the test
//! harness (`tests/support/juju_harness`): one schema, so the two cannot drift apart.
//!
//! `world.json` holds what Juju would know (config, leadership, relations, storage, secrets,
//! unit state, action parameters, tools told to fail); tools that change it (state-set,
//! relation-set) write it back, and the harness rolls those changes back when the hook
//! fails, as Juju does. Histories are JSON lines, one file each.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

/// The fake tools find their state directory here.
pub const STATE_DIR_ENV: &str = "FAKE_JUJU_STATE_DIR";

pub const WORLD_FILE: &str = "world.json";
pub const CALLS_FILE: &str = "calls.jsonl";
pub const STATUS_FILE: &str = "status.jsonl";
pub const LOG_FILE: &str = "juju-log.jsonl";
pub const APP_VERSION_FILE: &str = "application-version.jsonl";
pub const ACTION_FILE: &str = "action.json";
pub const ACTION_LOG_FILE: &str = "action-log.jsonl";
pub const REBOOT_FILE: &str = "juju-reboot.jsonl";

/// Every hook tool the fake answers to (the harness links each name to it).
pub const TOOL_NAMES: [&str; 22] = [
    "config-get",
    "status-set",
    "status-get",
    "application-version-set",
    "juju-log",
    "action-get",
    "action-set",
    "action-fail",
    "action-log",
    "relation-ids",
    "relation-list",
    "relation-get",
    "relation-set",
    "is-leader",
    "storage-list",
    "storage-get",
    "state-get",
    "state-set",
    "state-delete",
    "juju-reboot",
    "secret-get",
    "opened-ports",
];

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct World {
    /// Options set by the operator; the rest come from the charm's config.yaml defaults.
    pub config: Map<String, Value>,
    pub leader: bool,
    pub relations: Vec<FakeRelation>,
    /// By storage id (`runner/0`).
    pub storage: BTreeMap<String, FakeStorage>,
    /// By secret id (`secret:abc`): the owner's latest revision.
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// By secret id: the revision this unit tracks as a consumer (set by its first
    /// `secret-get`, moved to the latest by `--refresh`), as Juju keeps it.
    pub secrets_tracked: BTreeMap<String, BTreeMap<String, String>>,
    /// Secret ids that exist but were not granted to this application (a user secret
    /// before `juju grant-secret`): `secret-get` answers "permission denied", as Juju does.
    pub secrets_not_granted: std::collections::BTreeSet<String>,
    pub unit_state: BTreeMap<String, String>,
    pub action_params: Map<String, Value>,
    /// Tool name -> how it fails.
    pub failing: BTreeMap<String, FakeFailure>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FakeRelation {
    /// `endpoint:n`.
    pub id: String,
    pub remote_app: String,
    /// Remote unit name -> its data.
    pub remote_units: BTreeMap<String, BTreeMap<String, String>>,
    pub remote_app_data: BTreeMap<String, String>,
    pub local_unit_data: BTreeMap<String, String>,
    pub local_app_data: BTreeMap<String, String>,
}

impl FakeRelation {
    pub fn endpoint(&self) -> &str {
        self.id.split(':').next().unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeStorage {
    pub kind: String,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FakeFailure {
    pub code: i32,
    pub stderr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    pub tool: String,
    pub args: Vec<String>,
    pub exit: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    pub status: String,
    pub message: String,
    pub application: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    pub level: String,
    pub message: String,
}

/// What an action reported: nested results (`a.b=v` -> `{"a":{"b":"v"}}`) and its failure.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ActionRecord {
    pub results: Map<String, Value>,
    pub failure: Option<String>,
}

fn invalid_data(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

pub fn read_json<T: DeserializeOwned + Default>(path: &Path) -> io::Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(invalid_data),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e),
    }
}

/// Write via a temp file and rename, so a reader never sees half a file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(invalid_data)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
}

/// One line per record, in one `write` so concurrent writers do not interleave.
pub fn append_jsonl<T: Serialize>(path: &Path, record: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(record).map_err(invalid_data)?;
    line.push(b'\n');
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(&line)
}

pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> io::Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(invalid_data))
        .collect()
}
