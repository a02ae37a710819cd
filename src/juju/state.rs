//! What the charm remembers between hooks, in Juju unit state (`state-get`/`state-set`).
//!
//! Unit state lives on the controller, so it survives the loss of the unit's disk, and Juju
//! commits it only when the hook succeeds. Never a secret in here: the token is kept as its
//! SHA-256 fingerprint, enough to notice that it changed. (The previous token itself, needed
//! to flush runners after a token change, is in a root-only file: `charm::credentials`.)
//!
//! To add a key: a field, its constant, and a line in `from_map` and `to_map`.

use super::{HookToolError, HookTools, Status};
use crate::config::CharmConfig;
use crate::github::download::StoredTarball;
use crate::runner::guards::DeploySettings;
use crate::secret::Secret;
use std::collections::BTreeMap;

pub const TOKEN_FINGERPRINT_KEY: &str = "token-fingerprint";
/// `path`, `group`, `labels` and `github-url` of the configuration the charm last acted on.
pub const PATH_KEY: &str = "acted-path";
pub const GROUP_KEY: &str = "acted-group";
pub const LABELS_KEY: &str = "acted-labels";
pub const GITHUB_URL_KEY: &str = "acted-github-url";
/// runner-storage and base-image as deployed ([`DeploySettings::to_state_value`]).
pub const DEPLOY_SETTINGS_KEY: &str = "deploy-settings";
/// The last status a reconcile or flush set, for hooks that must not call GitHub.
pub const LAST_STATUS_KEY: &str = "last-status";
/// When (epoch seconds) the periodic event last asked GitHub for the runner binary.
pub const BINARY_CHECKED_AT_KEY: &str = "runner-binary-checked-at";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// [`Secret::fingerprint`] of the token the last successful config-changed saw.
    pub token_fingerprint: Option<String>,
    /// The GitHub scope the charm last acted on (None before the first time).
    pub path: Option<String>,
    pub group: Option<String>,
    /// Custom labels, comma-joined.
    pub labels: Option<String>,
    pub github_url: Option<String>,
    pub deploy_settings: Option<DeploySettings>,
    /// The runner tarball in place (`runner-binary-url`, `runner-binary-sha256`).
    pub runner_binary: StoredTarball,
    pub last_status: Option<Status>,
    pub binary_checked_at: Option<u64>,
}

/// Who the runners are registered with and as what: a change of the scope (path, group,
/// labels, github-url) needs the old runners flushed with the credentials they were made
/// with. The credential's fingerprint is kept to find those credentials, but it is no part
/// of the scope: a registration belongs to the path, not to the credential that made it, so
/// a new token or App (the old one maybe revoked already) keeps every runner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActedScope {
    pub token_fingerprint: Option<String>,
    pub path: Option<String>,
    pub group: Option<String>,
    pub labels: Option<String>,
    pub github_url: Option<String>,
}

impl ActedScope {
    pub fn of(config: &CharmConfig) -> Self {
        ActedScope {
            token_fingerprint: config.credential.as_ref().map(|c| c.fingerprint()),
            path: Some(config.path.display()),
            group: Some(config.group.clone()),
            labels: Some(config.labels.join(",")),
            github_url: Some(config.github_url.clone()),
        }
    }

    /// A short digest of the scope, without the credential. Runners carry the one they were
    /// made for (`manager::replacement`).
    pub fn fingerprint(&self) -> String {
        let field = |v: &Option<String>| v.clone().unwrap_or_default();
        let joined = [
            field(&self.path),
            field(&self.group),
            field(&self.labels),
            field(&self.github_url),
        ]
        .join("\n");
        let mut digest = crate::secret::Secret::new(joined).fingerprint();
        digest.truncate(16);
        digest
    }

    /// True before the charm ever acted on a configuration.
    pub fn is_unknown(&self) -> bool {
        self == &ActedScope::default()
    }

    /// The scope options (as `juju config` names them) that differ from `now`; a field never
    /// recorded counts as unchanged (no flush for a state written by an older charm).
    pub fn changed_options(&self, now: &ActedScope) -> Vec<&'static str> {
        let fields = [
            ("path", &self.path, &now.path),
            ("group", &self.group, &now.group),
            ("labels", &self.labels, &now.labels),
            ("github-url", &self.github_url, &now.github_url),
        ];
        fields
            .into_iter()
            .filter(|(_, before, after)| before.is_some() && before != after)
            .map(|(name, _, _)| name)
            .collect()
    }
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
        let get = |k: &str| map.get(k).cloned();
        UnitState {
            token_fingerprint: get(TOKEN_FINGERPRINT_KEY),
            path: get(PATH_KEY),
            group: get(GROUP_KEY),
            labels: get(LABELS_KEY),
            github_url: get(GITHUB_URL_KEY),
            deploy_settings: map
                .get(DEPLOY_SETTINGS_KEY)
                .and_then(|v| DeploySettings::from_state_value(v)),
            runner_binary: StoredTarball::from_state(map),
            last_status: map.get(LAST_STATUS_KEY).and_then(|v| decode_status(v)),
            binary_checked_at: map.get(BINARY_CHECKED_AT_KEY).and_then(|v| v.parse().ok()),
        }
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        let mut put = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                map.insert(k.to_string(), v.clone());
            }
        };
        put(TOKEN_FINGERPRINT_KEY, &self.token_fingerprint);
        put(PATH_KEY, &self.path);
        put(GROUP_KEY, &self.group);
        put(LABELS_KEY, &self.labels);
        put(GITHUB_URL_KEY, &self.github_url);
        put(
            DEPLOY_SETTINGS_KEY,
            &self.deploy_settings.map(|d| d.to_state_value()),
        );
        put(
            LAST_STATUS_KEY,
            &self.last_status.as_ref().map(encode_status),
        );
        put(
            BINARY_CHECKED_AT_KEY,
            &self.binary_checked_at.map(|t| t.to_string()),
        );
        for (k, v) in self.runner_binary.to_state() {
            if !v.is_empty() {
                map.insert(k, v);
            }
        }
        map
    }

    /// The scope the charm last acted on.
    pub fn acted_scope(&self) -> ActedScope {
        ActedScope {
            token_fingerprint: self.token_fingerprint.clone(),
            path: self.path.clone(),
            group: self.group.clone(),
            labels: self.labels.clone(),
            github_url: self.github_url.clone(),
        }
    }

    /// Remember `scope` as the one acted on.
    pub fn set_acted_scope(&mut self, scope: ActedScope) {
        self.token_fingerprint = scope.token_fingerprint;
        self.path = scope.path;
        self.group = scope.group;
        self.labels = scope.labels;
        self.github_url = scope.github_url;
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

/// `active: 3/3 runners: ...`: the kind, then the message.
pub fn encode_status(status: &Status) -> String {
    let (kind, message) = match status {
        Status::Maintenance(m) => ("maintenance", m),
        Status::Blocked(m) => ("blocked", m),
        Status::Waiting(m) => ("waiting", m),
        Status::Active(m) => ("active", m),
    };
    format!("{kind}: {message}")
}

pub fn decode_status(text: &str) -> Option<Status> {
    let (kind, message) = text.split_once(": ").unwrap_or((text, ""));
    let message = message.to_string();
    Some(match kind {
        "maintenance" => Status::Maintenance(message),
        "blocked" => Status::Blocked(message),
        "waiting" => Status::Waiting(message),
        "active" => Status::Active(message),
        _ => return None,
    })
}

/// Test input: a string map (unit state, relation data, hook variables) from literal pairs.
#[cfg(test)]
pub(crate) fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::string_map as map;
    use super::*;
    use crate::juju::memory::MemoryHookTools;

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
            ..UnitState::default()
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
            ..UnitState::default()
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
            ..UnitState::default()
        };
        assert!(!seen.token_changed(&token));
        assert!(seen.token_changed(&Secret::new("t2")));
    }

    #[test]
    fn every_typed_key_round_trips() {
        use crate::config::{BaseImage, RunnerStorage};
        let full = UnitState {
            token_fingerprint: Some("fp".into()),
            path: Some("o/r".into()),
            group: Some("default".into()),
            labels: Some("a,b".into()),
            github_url: Some("https://github.com".into()),
            deploy_settings: Some(DeploySettings {
                runner_storage: RunnerStorage::Memory,
                base_image: BaseImage::Noble,
            }),
            runner_binary: StoredTarball {
                url: Some("https://x/runner.tgz".into()),
                sha256: Some("ab".repeat(32)),
            },
            last_status: Some(Status::Active("1/1 runners: 1 idle, 0 busy".into())),
            binary_checked_at: Some(1_700_000_000),
        };
        let map = full.to_map();
        assert_eq!(map.len(), 10);
        assert_eq!(UnitState::from_map(&map), full);
        assert!(UnitState::default().to_map().is_empty());
    }

    #[test]
    fn statuses_encode_and_decode() {
        for status in [
            Status::Active("3/3 runners: 2 idle, 1 busy".into()),
            Status::Blocked("a: b: c".into()),
            Status::Waiting(String::new()),
            Status::Maintenance("x".into()),
        ] {
            assert_eq!(decode_status(&encode_status(&status)), Some(status));
        }
        assert_eq!(decode_status("error: x"), None);
        assert_eq!(decode_status(""), None);
    }

    #[test]
    fn scope_changes_name_the_options() {
        let scope = |token: &str, path: &str| ActedScope {
            token_fingerprint: Some(token.into()),
            path: Some(path.into()),
            group: Some("g".into()),
            labels: Some(String::new()),
            github_url: Some("u".into()),
        };
        assert!(scope("a", "p").changed_options(&scope("a", "p")).is_empty());
        // A new credential is no scope change.
        assert!(scope("a", "p").changed_options(&scope("b", "p")).is_empty());
        assert_eq!(
            scope("a", "p").changed_options(&scope("b", "q")),
            vec!["path"]
        );
        assert!(ActedScope::default().is_unknown());
        let a = scope("ghp_a", "o/r");
        assert_eq!(a.fingerprint(), scope("ghp_a", "o/r").fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        assert_eq!(a.fingerprint(), scope("ghp_b", "o/r").fingerprint());
        assert_ne!(a.fingerprint(), scope("ghp_a", "o/s").fingerprint());
        assert!(ActedScope::default()
            .changed_options(&scope("a", "p"))
            .is_empty());
        let mut state = UnitState::default();
        state.set_acted_scope(scope("a", "p"));
        assert_eq!(state.acted_scope(), scope("a", "p"));
    }
}
