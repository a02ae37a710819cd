//! Pure decisions of the host setup: each takes what was observed and answers what to do.

use super::lxd_host::Devices;
use crate::runner::guards::DeploySettings;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The bridge `lxd init --auto` creates.
pub const BRIDGE: &str = "lxdbr0";
/// The NIC `lxd init --auto` puts in the default profile.
pub const DEFAULT_NIC: &str = "eth0";
/// NIC keys that stop a runner from spoofing addresses or talking to its neighbours.
pub const NIC_FILTERING_KEYS: [&str; 4] = [
    "security.ipv4_filtering",
    "security.ipv6_filtering",
    "security.mac_filtering",
    "security.port_isolation",
];

/// How to get a usable LXD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LxdInstall {
    /// `lxc` is there: nothing to install.
    Present,
    /// `snap install lxd`, then `lxd init --auto` (decided after the daemon answers).
    SnapInstall,
    /// No `lxc` and no `snap`: the operator must install LXD.
    Impossible,
}

pub fn lxd_install(lxc_present: bool, snap_present: bool) -> LxdInstall {
    match (lxc_present, snap_present) {
        (true, _) => LxdInstall::Present,
        (false, true) => LxdInstall::SnapInstall,
        (false, false) => LxdInstall::Impossible,
    }
}

/// `lxd init --auto` only on a server that has never been initialised (no storage pool):
/// a rerun after a hook killed between `snap install` and `lxd init` still initialises, and
/// an initialised server is never re-initialised.
pub fn lxd_init_needed(storage_pool_count: usize) -> bool {
    storage_pool_count == 0
}

/// Runners get no IPv6 (the denylist firewall is IPv4 only): `ipv6.address=none` on the
/// bridge when it exists and still has IPv6.
pub fn bridge_ipv6_change(
    bridge_config: Option<&BTreeMap<String, String>>,
) -> Option<BTreeMap<String, String>> {
    let config = bridge_config?;
    if config.get("ipv6.address").map(String::as_str) == Some("none") {
        return None;
    }
    Some([("ipv6.address".to_string(), "none".to_string())].into())
}

/// The filtering keys still to set on the default profile's `eth0`, when it has a NIC there.
pub fn nic_filtering_change(default_devices: Option<&Devices>) -> Option<BTreeMap<String, String>> {
    let nic = default_devices?.get(DEFAULT_NIC)?;
    if nic.get("type").map(String::as_str) != Some("nic") {
        return None;
    }
    let missing: BTreeMap<String, String> = NIC_FILTERING_KEYS
        .iter()
        .filter(|k| nic.get(**k).map(String::as_str) != Some("true"))
        .map(|k| (k.to_string(), "true".to_string()))
        .collect();
    (!missing.is_empty()).then_some(missing)
}

/// What to do with the deploy-time runner-storage/base-image record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeployRecord {
    /// First setup: remember the current values.
    Record,
    /// Remembered: the guard compares against these.
    Check(DeploySettings),
}

/// An unparsable stored value is treated as absent and re-recorded: the guard is there to
/// protect live runners, and a value this code cannot read protects nothing.
pub fn deploy_record(stored: Option<&str>) -> DeployRecord {
    match stored.and_then(DeploySettings::from_state_value) {
        Some(s) => DeployRecord::Check(s),
        None => DeployRecord::Record,
    }
}

/// Where the Juju storage `runner` is mounted: the hook's own storage when this is a
/// `runner-storage-*` hook, else the first `runner` instance storage-get reports.
pub fn juju_storage_location(
    hook_storage: Option<(&str, Option<&str>)>,
    listed: &[(String, String)],
) -> Option<PathBuf> {
    if let Some((id, Some(location))) = hook_storage {
        if id.starts_with("runner/") && !location.is_empty() {
            return Some(PathBuf::from(location));
        }
    }
    listed
        .iter()
        .find(|(id, loc)| id.starts_with("runner/") && !loc.is_empty())
        .map(|(_, loc)| PathBuf::from(loc))
}

/// What update-status does about the reconcile timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerRepair {
    /// Never installed (install has not run, or stop/remove took it away): leave it.
    NotInstalled,
    /// Installed and active.
    Healthy,
    /// Installed but not active: re-install (rewrites files if needed, restarts).
    Repair,
}

pub fn timer_repair(unit_files_present: bool, active: bool) -> TimerRepair {
    match (unit_files_present, active) {
        (false, _) => TimerRepair::NotInstalled,
        (true, true) => TimerRepair::Healthy,
        (true, false) => TimerRepair::Repair,
    }
}

/// Directory under the Juju storage that holds the pool when the storage root is not empty.
pub const POOL_SUBDIR: &str = "lxd-runner-pool";

/// Where the `dir` pool lives on the Juju storage. LXD refuses to create a `dir` pool on a
/// non-empty directory, and a filesystem on a block device has `lost+found` at its root: an
/// empty storage root is used as is (as the Python charm did), else a subdirectory. An
/// existing pool on either keeps its place (a pool cannot move).
pub fn pool_source(location: &Path, location_empty: bool, existing: Option<&str>) -> PathBuf {
    let nested = location.join(POOL_SUBDIR);
    if let Some(existing) = existing.map(Path::new) {
        if existing == location || existing == nested {
            return existing.to_path_buf();
        }
    }
    if location_empty {
        location.to_path_buf()
    } else {
        nested
    }
}

/// True when `dir` has the two unit files of the reconcile timer.
pub fn timer_files_present(paths: &crate::paths::HostPaths) -> bool {
    let names = crate::host::timer::unit_names(paths);
    [names.timer, names.service]
        .iter()
        .all(|f| paths.systemd_dir().join(f).exists())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BaseImage, RunnerStorage};
    use crate::juju::state::string_map as map;

    #[test]
    fn lxd_is_installed_only_when_lxc_is_missing_and_snap_is_there() {
        assert_eq!(lxd_install(true, true), LxdInstall::Present);
        assert_eq!(lxd_install(true, false), LxdInstall::Present);
        assert_eq!(lxd_install(false, true), LxdInstall::SnapInstall);
        assert_eq!(lxd_install(false, false), LxdInstall::Impossible);
    }

    #[test]
    fn lxd_init_runs_only_on_a_server_without_pools() {
        assert!(lxd_init_needed(0));
        assert!(!lxd_init_needed(1));
        assert!(!lxd_init_needed(3));
    }

    #[test]
    fn ipv6_goes_off_only_on_an_existing_bridge_that_still_has_it() {
        assert_eq!(bridge_ipv6_change(None), None, "no bridge: nothing");
        let want = Some(map(&[("ipv6.address", "none")]));
        assert_eq!(
            bridge_ipv6_change(Some(&map(&[("ipv6.address", "auto")]))),
            want
        );
        assert_eq!(
            bridge_ipv6_change(Some(&map(&[("ipv4.address", "10.0.0.1/24")]))),
            want,
            "unset means LXD's default (auto)"
        );
        assert_eq!(
            bridge_ipv6_change(Some(&map(&[("ipv6.address", "none")]))),
            None
        );
    }

    fn devices(eth0: Option<&[(&str, &str)]>) -> Devices {
        let mut d: Devices = [(
            "root".to_string(),
            map(&[("type", "disk"), ("path", "/"), ("pool", "default")]),
        )]
        .into();
        if let Some(keys) = eth0 {
            d.insert("eth0".to_string(), map(keys));
        }
        d
    }

    #[test]
    fn nic_filtering_applies_to_the_default_profiles_eth0_only() {
        assert_eq!(nic_filtering_change(None), None, "no profile");
        assert_eq!(nic_filtering_change(Some(&devices(None))), None, "no eth0");
        let not_a_nic = devices(Some(&[("type", "disk"), ("path", "/x")]));
        assert_eq!(nic_filtering_change(Some(&not_a_nic)), None);
        let bare = devices(Some(&[("type", "nic"), ("network", "lxdbr0")]));
        let all: BTreeMap<String, String> = NIC_FILTERING_KEYS
            .iter()
            .map(|k| (k.to_string(), "true".to_string()))
            .collect();
        assert_eq!(nic_filtering_change(Some(&bare)), Some(all));
        let partly = devices(Some(&[
            ("type", "nic"),
            ("security.ipv4_filtering", "true"),
            ("security.ipv6_filtering", "true"),
            ("security.mac_filtering", "false"),
        ]));
        assert_eq!(
            nic_filtering_change(Some(&partly)),
            Some(map(&[
                ("security.mac_filtering", "true"),
                ("security.port_isolation", "true")
            ]))
        );
        let mut done: Vec<(&str, &str)> = vec![("type", "nic")];
        done.extend(NIC_FILTERING_KEYS.iter().map(|k| (*k, "true")));
        assert_eq!(nic_filtering_change(Some(&devices(Some(&done)))), None);
    }

    #[test]
    fn deploy_settings_are_recorded_once_then_checked() {
        assert_eq!(deploy_record(None), DeployRecord::Record);
        assert_eq!(deploy_record(Some("garbage")), DeployRecord::Record);
        let s = DeploySettings {
            runner_storage: RunnerStorage::Memory,
            base_image: BaseImage::Noble,
        };
        assert_eq!(
            deploy_record(Some(&s.to_state_value())),
            DeployRecord::Check(s)
        );
    }

    #[test]
    fn juju_storage_comes_from_the_hook_then_storage_get() {
        let listed = vec![
            ("other/0".to_string(), "/other".to_string()),
            ("runner/1".to_string(), "/storage/juju".to_string()),
        ];
        assert_eq!(
            juju_storage_location(Some(("runner/3", Some("/mnt/r3"))), &listed),
            Some(PathBuf::from("/mnt/r3"))
        );
        assert_eq!(
            juju_storage_location(Some(("runner/3", None)), &listed),
            Some(PathBuf::from("/storage/juju"))
        );
        assert_eq!(
            juju_storage_location(Some(("other/0", Some("/x"))), &listed),
            Some(PathBuf::from("/storage/juju"))
        );
        assert_eq!(juju_storage_location(None, &listed[..1]), None);
        assert_eq!(juju_storage_location(None, &[]), None);
    }

    #[test]
    fn timer_is_repaired_only_when_installed_and_inactive() {
        assert_eq!(timer_repair(false, false), TimerRepair::NotInstalled);
        assert_eq!(timer_repair(false, true), TimerRepair::NotInstalled);
        assert_eq!(timer_repair(true, true), TimerRepair::Healthy);
        assert_eq!(timer_repair(true, false), TimerRepair::Repair);
    }

    #[test]
    fn the_pool_goes_on_an_empty_storage_root_else_in_a_subdirectory() {
        let loc = Path::new("/storage/juju");
        let nested = PathBuf::from("/storage/juju/lxd-runner-pool");
        assert_eq!(pool_source(loc, true, None), loc);
        assert_eq!(pool_source(loc, false, None), nested, "lost+found there");
        assert_eq!(
            pool_source(loc, false, Some("/storage/juju")),
            loc,
            "a pool made on the root (by the Python charm) stays there"
        );
        assert_eq!(
            pool_source(loc, true, Some("/storage/juju/lxd-runner-pool")),
            nested
        );
        assert_eq!(
            pool_source(loc, false, Some("/elsewhere")),
            nested,
            "a foreign pool: LXD's own check reports the conflict"
        );
    }

    #[test]
    fn timer_files_need_both_units() {
        let dir = tempfile::tempdir().unwrap();
        let paths = crate::paths::HostPaths::for_unit(dir.path(), "app/0");
        let names = crate::host::timer::unit_names(&paths);
        std::fs::create_dir_all(paths.systemd_dir()).unwrap();
        assert!(!timer_files_present(&paths));
        std::fs::write(paths.systemd_dir().join(&names.timer), "").unwrap();
        assert!(!timer_files_present(&paths));
        std::fs::write(paths.systemd_dir().join(&names.service), "").unwrap();
        assert!(timer_files_present(&paths));
        // Another unit's timer is not this unit's.
        assert!(!timer_files_present(&paths.legacy().with_unit("app/1")));
    }
}
