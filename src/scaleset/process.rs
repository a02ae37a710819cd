//! What the charm and its scale-set listener process share: the listener's argv, its
//! folders (a [`UnitDirs`] of its own, one slot: a unit holds one session), the 0600
//! settings file the charm writes and the listener reads, and what the listener publishes
//! in its slot file for the status and the exporter. The listener is a mode of the worker
//! binary (`github-runner-worker --scale-set --dir D --logs L --slot 0`), started detached
//! and counted by its slot lock exactly as reactive workers are (`reactive::workers`).

use super::listener_state::ListenerPhase;
use super::Statistics;
use crate::identity::UnitIdentity;
use crate::paths::HostPaths;
use crate::reactive::workers::UnitDirs;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// The worker binary's flag that selects the listener.
pub const LISTENER_FLAG: &str = "--scale-set";
/// The listener's one slot.
pub const LISTENER_SLOT: u32 = 0;

/// The unit's scale-set folders.
pub fn unit_dirs(paths: &HostPaths, identity: &UnitIdentity) -> UnitDirs {
    let key = crate::reactive::mode::unit_key(identity);
    UnitDirs::new(paths.scale_set_dir(&key), paths.scale_set_log_dir(&key))
}

/// The listener's `lastMessageId`, kept across restarts (`listener_state::FileCursor`).
pub fn cursor_file(dirs: &UnitDirs) -> PathBuf {
    dirs.state.join("cursor")
}

/// The scale sets the unit's listener has held (see [`super::ledger`]).
pub fn ledger_file(dirs: &UnitDirs) -> PathBuf {
    dirs.state.join("scale-sets")
}

/// What the listener needs, written by the charm into the 0600 settings file (the same
/// file name as the workers': `UnitDirs::settings_file`). No secret in it: the credential
/// comes from the unit's credential file (`crate::credential`), as the workers' does. A
/// change of the bytes restarts the listener (its slot shows the fingerprint).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ListenerSettings {
    pub unit_name: String,
    pub model_uuid: String,
    /// `config-get` as the hook read it, minus the options only hooks read
    /// (`reactive::run::HOOK_ONLY_OPTIONS` less `virtual-machines`, which the listener
    /// sends as its maximum capacity). `token` is never in it.
    pub config: serde_json::Map<String, serde_json::Value>,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub charm_dir: PathBuf,
    pub lxd_project: Option<String>,
    /// The worker binary's path and modification time: a new binary restarts the listener.
    #[serde(default)]
    pub binary: String,
    /// The debug-ssh relation's tmate servers, for new runners.
    #[serde(default)]
    pub debug_ssh: Vec<crate::network::debug_ssh::TmateServer>,
}

impl ListenerSettings {
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What the listener publishes besides the slot's common fields
/// (`reactive::workers::SlotStatus::listener`): read by the status and the exporter.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenerSnapshot {
    /// The scale set's name (`<scale-set-name>-<unit number>`).
    pub scale_set: String,
    /// None until the listener reported its first phase.
    #[serde(default)]
    pub phase: Option<ListenerPhase>,
    /// The last statistics the service sent (None before the first message).
    #[serde(default)]
    pub statistics: Option<Statistics>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_snapshot_round_trips_through_the_slot_file_format() {
        let snapshot = ListenerSnapshot {
            scale_set: "linux-0".into(),
            phase: Some(ListenerPhase::WaitingForSession {
                attempt: 2,
                retry_in: Duration::from_secs(30),
            }),
            statistics: Some(Statistics {
                total_assigned_jobs: 3,
                ..Statistics::default()
            }),
        };
        let text = serde_json::to_string(&snapshot).unwrap();
        assert!(text.contains("\"phase\":\"waiting-for-session\""), "{text}");
        let back: ListenerSnapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back, snapshot);
    }

    #[test]
    fn the_listeners_folders_are_the_units_own() {
        let paths = HostPaths::new("/tmp/x");
        let a = unit_dirs(&paths, &UnitIdentity::parse("app/0", "m").unwrap());
        let b = unit_dirs(&paths, &UnitIdentity::parse("app/1", "m").unwrap());
        assert_ne!(a.state, b.state);
        assert_ne!(a.logs, b.logs);
        assert_ne!(
            a.state,
            crate::reactive::mode::unit_dirs(&paths, &UnitIdentity::parse("app/0", "m").unwrap())
                .state
        );
    }
}
