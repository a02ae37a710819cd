//! What the charm remembers between hooks, in Juju unit state (`state-get`/`state-set`).
//!
//! Unit state lives on the controller, so it survives the loss of the unit's disk, and Juju
//! commits it only when the hook succeeds. Never a secret in here: the token is kept as its
//! SHA-256 fingerprint, enough to notice that it changed.
//!
//! To add a key: a field, its constant, and a line in `from_map` and `to_map`.

use super::{HookToolError, HookTools};
use crate::secret::Secret;
use std::collections::BTreeMap;

pub const TOKEN_FINGERPRINT_KEY: &str = "token-fingerprint";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// [`Secret::fingerprint`] of the token the last successful config-changed saw.
    pub token_fingerprint: Option<String>,
}

/// Keys to set and keys to delete to go from one stored map to another.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateChanges {
    pub set: BTreeMap<String, String>,
    pub delete: Vec<String>,
}

impl StateChanges {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.delete.is_empty()
    }
}

/// Only what differs: a hook that changes nothing spawns no state tool.
pub fn state_changes(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> StateChanges {
    StateChanges {
        set: after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        delete: before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .cloned()
            .collect(),
    }
}

impl UnitState {
    /// Keys this type does not know are ignored here and left untouched by [`UnitState::save`].
    pub fn from_map(map: &BTreeMap<String, String>) -> Self {
        UnitState {
            token_fingerprint: map.get(TOKEN_FINGERPRINT_KEY).cloned(),
        }
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        if let Some(fp) = &self.token_fingerprint {
            map.insert(TOKEN_FINGERPRINT_KEY.to_string(), fp.clone());
        }
        map
    }

    pub fn load(tools: &dyn HookTools) -> Result<Self, HookToolError> {
        Ok(UnitState::from_map(&tools.state_get()?))
    }

    /// Write what changed since `before` (what [`UnitState::load`] returned).
    pub fn save(&self, before: &UnitState, tools: &dyn HookTools) -> Result<(), HookToolError> {
        let changes = state_changes(&before.to_map(), &self.to_map());
        if !changes.set.is_empty() {
            tools.state_set(&changes.set)?;
        }
        for key in &changes.delete {
            tools.state_delete(key)?;
        }
        Ok(())
    }

    /// True when `token` differs from the one remembered (or none is remembered).
    pub fn token_changed(&self, token: &Secret) -> bool {
        self.token_fingerprint.as_deref() != Some(token.fingerprint().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::juju::memory::MemoryHookTools;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn changes_are_minimal() {
        let before = map(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let after = map(&[("a", "1"), ("b", "9"), ("d", "4")]);
        let changes = state_changes(&before, &after);
        assert_eq!(changes.set, map(&[("b", "9"), ("d", "4")]));
        assert_eq!(changes.delete, vec!["c".to_string()]);
        assert!(state_changes(&before, &before).is_empty());
    }

    #[test]
    fn round_trips_and_keeps_unknown_keys() {
        let tools = MemoryHookTools::default();
        tools.lock().unit_state = map(&[("someone-else", "x")]);
        let before = UnitState::load(&tools).unwrap();
        assert_eq!(before, UnitState::default());
        let token = Secret::new("ghp_abc");
        let after = UnitState {
            token_fingerprint: Some(token.fingerprint()),
        };
        after.save(&before, &tools).unwrap();
        let stored = tools.lock().unit_state.clone();
        assert_eq!(stored.get("someone-else").map(String::as_str), Some("x"));
        assert_eq!(
            stored.get(TOKEN_FINGERPRINT_KEY),
            Some(&token.fingerprint())
        );
        assert!(!stored.values().any(|v| v.contains("ghp_abc")));
        assert_eq!(UnitState::load(&tools).unwrap(), after);
    }

    #[test]
    fn saving_nothing_new_calls_no_tool() {
        let tools = MemoryHookTools::default();
        let s = UnitState {
            token_fingerprint: Some("f".into()),
        };
        s.save(&s, &tools).unwrap();
        assert!(tools.lock().calls.is_empty());
    }

    #[test]
    fn clearing_a_field_deletes_its_key() {
        let tools = MemoryHookTools::default();
        tools.lock().unit_state = map(&[(TOKEN_FINGERPRINT_KEY, "f")]);
        let before = UnitState::load(&tools).unwrap();
        UnitState::default().save(&before, &tools).unwrap();
        assert!(tools.lock().unit_state.is_empty());
    }

    #[test]
    fn token_change_detection() {
        let token = Secret::new("t1");
        let none = UnitState::default();
        assert!(none.token_changed(&token));
        let seen = UnitState {
            token_fingerprint: Some(token.fingerprint()),
        };
        assert!(!seen.token_changed(&token));
        assert!(seen.token_changed(&Secret::new("t2")));
    }
}
