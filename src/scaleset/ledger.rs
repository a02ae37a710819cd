//! The scale sets this unit's listener has held a session on, with what it asked for each
//! (name, runner group, labels), kept across restarts in the unit's scale-set folder.
//!
//! It says three things nothing else can: that a scale set found by name is this unit's
//! (one another deployment holds is never recorded: a scale set goes in only once a session
//! on it opened), that the configuration changed since (the service's own labels cannot
//! tell: GHES drops extra labels silently), and which earlier scale sets are still to drain
//! and delete (after a change of name, group or labels, and at `remove`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a scale set was created or taken with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldScaleSet {
    pub name: String,
    pub runner_group: String,
    /// Labels besides the name, as configured.
    pub labels: Vec<String>,
}

impl HeldScaleSet {
    /// Whether `other` asks for the same scale set: the group and labels compared as
    /// GitHub does, case-insensitively (`""` and `default` are the same group).
    pub fn same_request(&self, other: &HeldScaleSet) -> bool {
        let group = |g: &str| {
            if g.is_empty() {
                "default".to_string()
            } else {
                g.to_ascii_lowercase()
            }
        };
        let labels = |l: &[String]| {
            let mut l: Vec<String> = l.iter().map(|s| s.to_ascii_lowercase()).collect();
            l.sort();
            l.dedup();
            l
        };
        self.name.eq_ignore_ascii_case(&other.name)
            && group(&self.runner_group) == group(&other.runner_group)
            && labels(&self.labels) == labels(&other.labels)
    }
}

/// The name a scale set is given when it is retired, freeing its name for the new one.
pub fn retired_name(id: u64) -> String {
    format!("retired-{id}")
}

/// Scale set id -> what it was held with.
pub type Held = BTreeMap<u64, HeldScaleSet>;

/// Where the ledger is kept.
pub trait ScaleSetLedger: Send + Sync {
    /// Empty when nothing was kept (or what was kept is unreadable).
    fn load(&self) -> Held;
    fn store(&self, held: &Held) -> std::io::Result<()>;
}

/// The ledger in a 0600 JSON file, replaced atomically.
#[derive(Debug, Clone)]
pub struct FileLedger {
    pub path: PathBuf,
}

/// A ledger larger than this is not this charm's (a few entries of short strings).
const MAX_LEDGER_BYTES: u64 = 64 * 1024;

impl ScaleSetLedger for FileLedger {
    fn load(&self) -> Held {
        let text = match crate::host::file::read_capped(&self.path, MAX_LEDGER_BYTES) {
            Ok(text) => text,
            Err(_) => return Held::new(),
        };
        serde_json::from_str(&text).unwrap_or_else(|e| {
            tracing::warn!(path = %self.path.display(), error = %e, "the scale-set ledger is unreadable; starting a new one");
            Held::new()
        })
    }

    fn store(&self, held: &Held) -> std::io::Result<()> {
        // A map of plain strings always serialises.
        let text = serde_json::to_string(held).unwrap_or_default();
        crate::host::file::replace_if_changed(&self.path, &text, 0o600).map(|_| ())
    }
}

/// The ledger in memory, for tests.
#[cfg(any(test, feature = "testkit"))]
#[derive(Debug, Default)]
pub struct MemoryLedger(pub std::sync::Mutex<Held>);

#[cfg(any(test, feature = "testkit"))]
impl ScaleSetLedger for MemoryLedger {
    fn load(&self) -> Held {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn store(&self, held: &Held) -> std::io::Result<()> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = held.clone();
        Ok(())
    }
}

/// remove: every scale set the unit held goes, its registrations first (its runners' LXD
/// instances went with the unit's flush). Returns what is left, each as a sentence naming
/// the scale set, for the operator to delete by hand; the ledger keeps only those.
pub fn delete_every_held(
    api: &dyn super::api::ScaleSetApi,
    ledger: &dyn ScaleSetLedger,
) -> Vec<String> {
    let mut held = ledger.load();
    if held.is_empty() {
        return Vec::new();
    }
    let registrations = api.registrations().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot list the runner registrations; deleting the scale sets with them");
        Vec::new()
    });
    let mut left = Vec::new();
    for (id, set) in held.clone() {
        for r in registrations.iter().filter(|r| r.runner_scale_set_id == id) {
            if let Err(e) = api.remove_runner(r.id) {
                tracing::warn!(error = %e, runner = %r.name, "runner registration not removed");
            }
        }
        match api.delete_scale_set(id) {
            Ok(()) => {
                tracing::info!(scale_set_id = id, name = %set.name, "scale set deleted");
                held.remove(&id);
            }
            Err(e) => left.push(format!(
                "scale set {:?} (id {id}) not deleted: {e}; delete it in the repository's or \
                 organisation's runner settings",
                set.name
            )),
        }
    }
    if let Err(e) = ledger.store(&held) {
        tracing::warn!(error = %e, "could not keep the scale-set ledger");
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(name: &str, group: &str, labels: &[&str]) -> HeldScaleSet {
        HeldScaleSet {
            name: name.into(),
            runner_group: group.into(),
            labels: labels.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn the_same_request_ignores_case_order_and_the_default_groups_spelling() {
        let a = held("lxd-0", "", &["large", "jammy"]);
        assert!(a.same_request(&held("LXD-0", "Default", &["JAMMY", "large", "large"])));
        assert!(
            !a.same_request(&held("lxd-1", "", &["large", "jammy"])),
            "name"
        );
        assert!(
            !a.same_request(&held("lxd-0", "gpu", &["large", "jammy"])),
            "group"
        );
        assert!(!a.same_request(&held("lxd-0", "", &["large"])), "labels");
    }

    #[test]
    fn the_file_ledger_round_trips_privately_and_starts_over_when_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = FileLedger {
            path: dir.path().join("state/scale-sets"),
        };
        assert!(ledger.load().is_empty(), "no file yet");
        let mut h = Held::new();
        h.insert(41, held("lxd-0", "default", &["jammy"]));
        h.insert(7, held(&retired_name(7), "default", &[]));
        ledger.store(&h).unwrap();
        assert_eq!(ledger.load(), h);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ledger.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&ledger.path, "{not json").unwrap();
        assert!(ledger.load().is_empty());
    }
}
