//! An in-memory [`HookTools`] for unit tests of code that talks to Juju.
//!
//! Integration tests use the real binary with the fake jujuc instead (tests/support/juju_harness);
//! this double is for fast unit tests of handlers and layers. It mimics jujuc's behaviour
//! where code depends on it: action tools fail outside an action, invalid action keys fail,
//! an unknown relation fails, and any tool can be made to fail.

use super::{
    validate_action_key, HookToolError, HookTools, LogLevel, SecretRead, Status, StorageInfo,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryRelation {
    /// Remote units (`app/0`).
    pub units: Vec<String>,
    /// Data by unit or application name.
    pub data: BTreeMap<String, BTreeMap<String, String>>,
}

/// Inputs (config, leader, ...) and histories (statuses, logs, action results, ...).
#[derive(Debug, Clone, Default)]
pub struct MemoryState {
    pub config: Map<String, Value>,
    pub leader: bool,
    /// Set to run as an action: action-* tools fail otherwise, as with jujuc.
    pub action_params: Option<Map<String, Value>>,
    pub unit_state: BTreeMap<String, String>,
    /// By relation id (`mongodb:3`).
    pub relations: BTreeMap<String, MemoryRelation>,
    pub storage: BTreeMap<String, StorageInfo>,
    /// By secret id: the latest content (no revisions here; fake-jujuc models them).
    pub secrets: BTreeMap<String, BTreeMap<String, String>>,
    /// Secrets this application was not granted ("permission denied", as Juju answers).
    pub secrets_not_granted: std::collections::BTreeSet<String>,
    /// Every `secret-get`: which secret, read how.
    pub secret_reads: Vec<(String, SecretRead)>,
    /// Tool name -> (exit code, stderr) it fails with.
    pub failing: BTreeMap<String, (i32, String)>,
    pub statuses: Vec<Status>,
    pub logs: Vec<(LogLevel, String)>,
    pub app_versions: Vec<String>,
    pub action_results: BTreeMap<String, String>,
    pub action_failure: Option<String>,
    pub action_logs: Vec<String>,
    pub reboots: Vec<bool>,
    /// Every tool called, in order.
    pub calls: Vec<String>,
}

#[derive(Debug, Default)]
pub struct MemoryHookTools {
    state: Mutex<MemoryState>,
}

impl MemoryHookTools {
    pub fn new(state: MemoryState) -> Self {
        MemoryHookTools {
            state: Mutex::new(state),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, MemoryState> {
        // A test that panicked mid-call already failed; keep its state readable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fail_tool(&self, tool: &str, code: i32, stderr: &str) {
        self.lock()
            .failing
            .insert(tool.to_string(), (code, stderr.to_string()));
    }

    pub fn logs(&self) -> Vec<(LogLevel, String)> {
        self.lock().logs.clone()
    }

    pub fn statuses(&self) -> Vec<Status> {
        self.lock().statuses.clone()
    }

    /// Record the call; fail if the tool was told to.
    fn call(&self, tool: &str) -> Result<MutexGuard<'_, MemoryState>, HookToolError> {
        let mut state = self.lock();
        state.calls.push(tool.to_string());
        if let Some((code, stderr)) = state.failing.get(tool) {
            return Err(HookToolError::Failed {
                tool: tool.to_string(),
                code: *code,
                stderr: stderr.clone(),
            });
        }
        Ok(state)
    }

    fn action_call(&self, tool: &str) -> Result<MutexGuard<'_, MemoryState>, HookToolError> {
        let state = self.call(tool)?;
        if state.action_params.is_none() {
            return Err(HookToolError::Failed {
                tool: tool.to_string(),
                code: 1,
                stderr: "ERROR not running an action".into(),
            });
        }
        Ok(state)
    }
}

fn relation_not_found(tool: &str, id: &str) -> HookToolError {
    HookToolError::Failed {
        tool: tool.to_string(),
        code: 2,
        stderr: format!("ERROR invalid value {id:?} for option -r: relation not found"),
    }
}

impl HookTools for MemoryHookTools {
    fn config_get(&self) -> Result<Map<String, Value>, HookToolError> {
        Ok(self.call("config-get")?.config.clone())
    }

    fn status_set(&self, status: &Status) -> Result<(), HookToolError> {
        self.call("status-set")?.statuses.push(status.clone());
        Ok(())
    }

    fn application_version_set(&self, version: &str) -> Result<(), HookToolError> {
        self.call("application-version-set")?
            .app_versions
            .push(version.to_string());
        Ok(())
    }

    fn juju_log(&self, level: LogLevel, message: &str) -> Result<(), HookToolError> {
        self.call("juju-log")?
            .logs
            .push((level, message.to_string()));
        Ok(())
    }

    fn action_get(&self) -> Result<Map<String, Value>, HookToolError> {
        Ok(self
            .action_call("action-get")?
            .action_params
            .clone()
            .unwrap_or_default())
    }

    fn action_set(&self, results: &BTreeMap<String, String>) -> Result<(), HookToolError> {
        if let Some(key) = results.keys().find(|k| !validate_action_key(k)) {
            return Err(HookToolError::InvalidActionKey { key: key.clone() });
        }
        let mut state = self.action_call("action-set")?;
        state
            .action_results
            .extend(results.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    fn action_fail(&self, message: &str) -> Result<(), HookToolError> {
        self.action_call("action-fail")?.action_failure = Some(message.to_string());
        Ok(())
    }

    fn action_log(&self, message: &str) -> Result<(), HookToolError> {
        self.action_call("action-log")?
            .action_logs
            .push(message.to_string());
        Ok(())
    }

    fn relation_ids(&self, endpoint: &str) -> Result<Vec<String>, HookToolError> {
        let state = self.call("relation-ids")?;
        let prefix = format!("{endpoint}:");
        Ok(state
            .relations
            .keys()
            .filter(|id| id.starts_with(&prefix))
            .cloned()
            .collect())
    }

    fn relation_list(&self, relation_id: &str) -> Result<Vec<String>, HookToolError> {
        let state = self.call("relation-list")?;
        state
            .relations
            .get(relation_id)
            .map(|r| r.units.clone())
            .ok_or_else(|| relation_not_found("relation-list", relation_id))
    }

    fn relation_get(
        &self,
        relation_id: &str,
        unit_or_app: &str,
        app: bool,
    ) -> Result<BTreeMap<String, String>, HookToolError> {
        let state = self.call("relation-get")?;
        let relation = state
            .relations
            .get(relation_id)
            .ok_or_else(|| relation_not_found("relation-get", relation_id))?;
        // As jujuc: with --app, a unit name stands for its application.
        let key = match app {
            true => unit_or_app.split('/').next().unwrap_or(unit_or_app),
            false => unit_or_app,
        };
        Ok(relation.data.get(key).cloned().unwrap_or_default())
    }

    fn relation_set(
        &self,
        relation_id: &str,
        app: bool,
        data: &BTreeMap<String, String>,
    ) -> Result<(), HookToolError> {
        let mut state = self.call("relation-set")?;
        if app && !state.leader {
            return Err(HookToolError::Failed {
                tool: "relation-set".into(),
                code: 1,
                stderr: "ERROR cannot write relation settings: this unit is not the leader".into(),
            });
        }
        let relation = state
            .relations
            .get_mut(relation_id)
            .ok_or_else(|| relation_not_found("relation-set", relation_id))?;
        let bag = relation
            .data
            .entry(if app { "<local-app>" } else { "<local-unit>" }.to_string())
            .or_default();
        for (k, v) in data {
            if v.is_empty() {
                bag.remove(k);
            } else {
                bag.insert(k.clone(), v.clone());
            }
        }
        Ok(())
    }

    fn is_leader(&self) -> Result<bool, HookToolError> {
        Ok(self.call("is-leader")?.leader)
    }

    fn storage_list(&self, name: Option<&str>) -> Result<Vec<String>, HookToolError> {
        let state = self.call("storage-list")?;
        Ok(state
            .storage
            .keys()
            .filter(|id| name.is_none_or(|n| id.split('/').next() == Some(n)))
            .cloned()
            .collect())
    }

    fn storage_get(&self, storage_id: &str) -> Result<StorageInfo, HookToolError> {
        let state = self.call("storage-get")?;
        state
            .storage
            .get(storage_id)
            .cloned()
            .ok_or_else(|| HookToolError::Failed {
                tool: "storage-get".into(),
                code: 2,
                stderr: format!(
                    "ERROR invalid value {storage_id:?} for option -s: storage not found"
                ),
            })
    }

    fn state_get(&self) -> Result<BTreeMap<String, String>, HookToolError> {
        Ok(self.call("state-get")?.unit_state.clone())
    }

    fn state_set(&self, values: &BTreeMap<String, String>) -> Result<(), HookToolError> {
        let mut state = self.call("state-set")?;
        state
            .unit_state
            .extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
        Ok(())
    }

    fn state_delete(&self, key: &str) -> Result<(), HookToolError> {
        self.call("state-delete")?.unit_state.remove(key);
        Ok(())
    }

    fn juju_reboot(&self, now: bool) -> Result<(), HookToolError> {
        let mut state = self.call("juju-reboot")?;
        if state.action_params.is_some() {
            return Err(HookToolError::Failed {
                tool: "juju-reboot".into(),
                code: 1,
                stderr: "ERROR juju-reboot is not supported when running an action".into(),
            });
        }
        state.reboots.push(now);
        Ok(())
    }

    /// Always the latest content (unit tests need no revisions; fake-jujuc models them); a
    /// secret in `secrets_not_granted` answers "permission denied" as Juju does.
    fn secret_get(
        &self,
        secret_id: &str,
        read: SecretRead,
    ) -> Result<BTreeMap<String, String>, HookToolError> {
        let mut state = self.call("secret-get")?;
        state.secret_reads.push((secret_id.to_string(), read));
        if state.secrets_not_granted.contains(secret_id) {
            return Err(HookToolError::Failed {
                tool: "secret-get".into(),
                code: 1,
                stderr: "ERROR permission denied".into(),
            });
        }
        state
            .secrets
            .get(secret_id)
            .cloned()
            .ok_or_else(|| HookToolError::Failed {
                tool: "secret-get".into(),
                code: 1,
                stderr: format!("ERROR secret {secret_id:?} not found"),
            })
    }
}
