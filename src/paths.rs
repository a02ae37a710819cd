//! Every path the charm writes on the machine, derived from one root.
//!
//! Juju never sets `GITHUB_RUNNER_HOST_ROOT`; tests set it to a temp dir so hooks write there.

use std::path::{Path, PathBuf};

pub const HOST_ROOT_ENV: &str = "GITHUB_RUNNER_HOST_ROOT";

/// Host paths, all below `root` (`/` in production), and per unit once [`HostPaths::for_unit`]
/// or [`HostPaths::with_unit`] named it: several units of this charm (of one application or
/// of several) may share a machine, and none may read, lock or delete another's files.
///
/// Per unit (below a folder named by [`unit_folder_name`], or a file name ending in it): the
/// state folder (previous credentials, started-runners record), the runner tarball,
/// `LXD_CONF`, the lock, crashed runners' logs, the rebuild cron file, the metrics log and
/// its logrotate rule, and the systemd unit names (`host::timer`).
/// Machine-wide: what belongs to objects the units share: the image build log (the image is
/// shared), the tmpfs mount (the storage pool is shared) and the machine lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    root: PathBuf,
    /// [`unit_folder_name`] of the unit, or None for the unit-less layout of older charms
    /// (still used to find what they left).
    unit: Option<String>,
}

/// `github-runner/0` -> `github-runner-0`: a file and systemd-unit name part. Juju unit
/// names are `<application>/<number>` with a-z, 0-9 and `-`; anything else is replaced
/// by `_` so a name can never climb out of its folder, and a long application name is cut
/// ([`crate::naming::unit_folder`]) so every file name holding it stays within the limit.
pub fn unit_folder_name(unit_name: &str) -> String {
    crate::naming::unit_folder(unit_name)
}

impl HostPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HostPaths {
            root: root.into(),
            unit: None,
        }
    }

    /// Paths of unit `unit_name` (`app/N`) below `root`.
    pub fn for_unit(root: impl Into<PathBuf>, unit_name: &str) -> Self {
        HostPaths::new(root).with_unit(unit_name)
    }

    /// The same root, for unit `unit_name` (`app/N`).
    pub fn with_unit(mut self, unit_name: &str) -> Self {
        self.unit = Some(unit_folder_name(unit_name));
        self
    }

    /// `/`, or `$GITHUB_RUNNER_HOST_ROOT` when set and non-empty.
    pub fn from_env() -> Self {
        match std::env::var_os(HOST_ROOT_ENV) {
            Some(v) if !v.is_empty() => HostPaths::new(PathBuf::from(v)),
            _ => HostPaths::new("/"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The unit's [`unit_folder_name`], if these paths are a unit's.
    pub fn unit_folder(&self) -> Option<&str> {
        self.unit.as_deref()
    }

    /// The unit-less layout of older charms (to find and clean what they left).
    pub fn legacy(&self) -> HostPaths {
        HostPaths::new(self.root.clone())
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `rel`, below the unit's own folder `rel/<unit>` when these paths are a unit's.
    fn per_unit(&self, rel: &str) -> PathBuf {
        match &self.unit {
            Some(unit) => self.root.join(rel).join(unit),
            None => self.root.join(rel),
        }
    }

    /// `base`, or `base-<unit>` when these paths are a unit's (file names in shared folders).
    fn unit_file_name(&self, base: &str) -> String {
        match &self.unit {
            Some(unit) => format!("{base}-{unit}"),
            None => base.to_string(),
        }
    }

    /// systemd unit files (timer and service of the periodic reconcile).
    pub fn systemd_dir(&self) -> PathBuf {
        self.at("etc/systemd/system")
    }

    pub fn logrotate_dir(&self) -> PathBuf {
        self.at("etc/logrotate.d")
    }

    pub fn cron_dir(&self) -> PathBuf {
        self.at("etc/cron.d")
    }

    /// The unit's daily image rebuild rule in [`HostPaths::cron_dir`].
    pub fn rebuild_cron_file(&self) -> PathBuf {
        self.cron_dir()
            .join(self.unit_file_name("github-runner-image"))
    }

    /// The unit's JSON-lines metrics events, `github-runner-metrics-<unit>.log` in
    /// `/var/log` where the log shipper reads (the unit-less layout: the Python charm's
    /// `github-runner-metrics.log`). Per unit, so a unit's exporter counts only its events.
    pub fn metrics_log(&self) -> PathBuf {
        self.at("var/log").join(format!(
            "{}.log",
            self.unit_file_name("github-runner-metrics")
        ))
    }

    /// The logrotate rule of [`HostPaths::metrics_log`].
    pub fn metrics_logrotate_rule(&self) -> PathBuf {
        self.logrotate_dir()
            .join(self.unit_file_name("github-runner-metrics"))
    }

    /// Logs pulled from crashed runners, one folder each.
    pub fn runner_logs_dir(&self) -> PathBuf {
        self.per_unit("var/log/github-runner-logs")
    }

    /// The unit's own state on the machine (0700; the previous credentials live here).
    pub fn state_dir(&self) -> PathBuf {
        match &self.unit {
            Some(unit) => self.at("var/lib/github-runner-charm/units").join(unit),
            None => self.at("var/lib/github-runner-charm"),
        }
    }

    /// The verified runner application tarball cache.
    pub fn runner_binary_dir(&self) -> PathBuf {
        self.state_dir().join("runner-binary")
    }

    /// The unit's reconcile/flush lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.per_unit("run/github-runner-charm")
            .join("reconcile.lock")
    }

    /// The machine's lock around LXD objects all units share (storage pool, bridge, image).
    pub fn machine_lock_file(&self) -> PathBuf {
        self.at("run/github-runner-charm/machine.lock")
    }

    /// Held by every runner creation on the machine (every unit's hooks and reactive
    /// workers) from its admission check until its instance exists (`host::admission`), so
    /// the check always sees the instances of every creation before it.
    pub fn creation_lock_file(&self) -> PathBuf {
        self.at("run/github-runner-charm/creation.lock")
    }

    /// `LXD_CONF` for the `lxc` client: hooks run without HOME.
    pub fn lxd_conf_dir(&self) -> PathBuf {
        self.state_dir().join("lxc-config")
    }

    /// Output of the runner image build (install-time and the daily cron rebuild).
    pub fn image_build_log(&self) -> PathBuf {
        self.at("var/log/github-runner-image-build.log")
    }

    /// The unit's nft ruleset redirecting its runners' web traffic to aproxy (kept for
    /// operators to read); `aproxy-<unit>.nft`, the unit-less layout's `aproxy.nft` being the
    /// machine-wide one of earlier revisions.
    pub fn aproxy_nft_file(&self) -> PathBuf {
        self.at("var/lib/github-runner-charm")
            .join(format!("{}.nft", self.unit_file_name("aproxy")))
    }

    /// Held by the runner image build script (every unit's daily cron and the install-time
    /// build): one build at a time on the machine.
    pub fn image_build_lock_file(&self) -> PathBuf {
        self.at("run/github-runner-charm/image-build.lock")
    }

    /// The kernel's /proc (machine facts: memory, CPUs); tests give a root without one.
    pub fn proc_dir(&self) -> PathBuf {
        self.at("proc")
    }

    /// Numbers the unit's metrics exporter serves that only a hook knows (0640, no
    /// secrets); in the unit's state folder.
    pub fn exporter_state(&self) -> PathBuf {
        self.state_dir().join("exporter-state.json")
    }

    /// Reactive mode of one unit (`{app}-{n}`): worker settings (0600), slots, job claims.
    pub fn reactive_dir(&self, unit_key: &str) -> PathBuf {
        self.at("var/lib/github-runner-charm/reactive")
            .join(unit_key)
    }

    /// Logs of one unit's reactive workers.
    pub fn reactive_log_dir(&self, unit_key: &str) -> PathBuf {
        self.at("var/log/github-runner-reactive").join(unit_key)
    }

    /// One unit's scale-set listener: its settings (0600), slot file and message cursor.
    pub fn scale_set_dir(&self, unit_key: &str) -> PathBuf {
        self.at("var/lib/github-runner-charm/scale-set")
            .join(unit_key)
    }

    /// Logs of one unit's scale-set listener.
    pub fn scale_set_log_dir(&self, unit_key: &str) -> PathBuf {
        self.at("var/log/github-runner-scale-set").join(unit_key)
    }

    /// Present (a directory) when systemd runs the machine (`sd_booted`); tests make it in
    /// their root to say so.
    pub fn systemd_booted_marker(&self) -> PathBuf {
        self.at("run/systemd/system")
    }

    /// The Python charm's repo-policy-compliance unit file (`crate::legacy::cleanup`).
    pub fn python_policy_service_unit(&self) -> PathBuf {
        self.systemd_dir()
            .join(crate::legacy::cleanup::POLICY_SERVICE)
    }

    /// The Python charm's image rebuild cron file.
    pub fn python_rebuild_cron_file(&self) -> PathBuf {
        self.cron_dir().join("build-runner-image")
    }

    /// The Python charm's runner binary cache.
    pub fn python_runner_binary_dir(&self) -> PathBuf {
        self.at("home/ubuntu/github-runner-app")
    }

    /// The Python charm's runner-fs: one loop-mounted image per runner below it.
    pub fn python_runner_fs_dir(&self) -> PathBuf {
        self.at("home/ubuntu/runner-fs")
    }

    /// The Python charm's runner-fs loop images and quarantined metrics files.
    pub fn python_runner_fs_extra_dirs(&self) -> [PathBuf; 2] {
        [
            self.at("home/ubuntu/runner-fs-images"),
            self.at("home/ubuntu/runner-fs-quarantine"),
        ]
    }

    /// The kernel's mount table.
    pub fn mount_table(&self) -> PathBuf {
        self.proc_dir().join("mounts")
    }

    /// Present once the unit found nothing of the Python charm left (its runners drained,
    /// its files removed): later rounds skip the search.
    pub fn python_charm_cleared_marker(&self) -> PathBuf {
        self.state_dir().join("python-charm-cleared")
    }

    /// Present once the unit saw the Python charm's traces (its runners, service, files or
    /// folders): only then is an ACL named like its own taken for the Python charm's, also
    /// in a round after the rest is gone (a rerun after a kill). Else it is an operator's.
    pub fn python_charm_seen_marker(&self) -> PathBuf {
        self.state_dir().join("python-charm-seen")
    }

    /// Mount point of the tmpfs used when runner-storage=memory.
    pub fn ram_storage_dir(&self) -> PathBuf {
        self.at("storage/ram")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_is_below_the_root() {
        let p = HostPaths::new("/tmp/x");
        for path in [
            p.systemd_dir(),
            p.logrotate_dir(),
            p.cron_dir(),
            p.metrics_log(),
            p.runner_logs_dir(),
            p.state_dir(),
            p.runner_binary_dir(),
            p.lock_file(),
            p.lxd_conf_dir(),
            p.ram_storage_dir(),
            p.image_build_log(),
            p.rebuild_cron_file(),
            p.machine_lock_file(),
            p.creation_lock_file(),
            p.image_build_lock_file(),
            p.exporter_state(),
            p.aproxy_nft_file(),
            p.reactive_dir("app-0"),
            p.reactive_log_dir("app-0"),
            p.scale_set_dir("app-0"),
            p.scale_set_log_dir("app-0"),
            p.systemd_booted_marker(),
            p.python_policy_service_unit(),
            p.python_rebuild_cron_file(),
            p.python_runner_binary_dir(),
            p.python_runner_fs_dir(),
            p.python_runner_fs_extra_dirs()[0].clone(),
            p.python_runner_fs_extra_dirs()[1].clone(),
            p.mount_table(),
            p.python_charm_cleared_marker(),
            p.python_charm_seen_marker(),
        ] {
            assert!(path.starts_with("/tmp/x"), "{path:?}");
        }
        assert_eq!(
            HostPaths::new("/").systemd_dir(),
            PathBuf::from("/etc/systemd/system")
        );
    }

    #[test]
    fn two_units_share_no_unit_path() {
        let a = HostPaths::for_unit("/", "github-runner/0");
        let b = HostPaths::for_unit("/", "other-app/0");
        let per_unit = |p: &HostPaths| {
            vec![
                p.state_dir(),
                p.runner_binary_dir(),
                p.lock_file(),
                p.lxd_conf_dir(),
                p.runner_logs_dir(),
                p.rebuild_cron_file(),
                p.metrics_log(),
                p.metrics_logrotate_rule(),
                p.aproxy_nft_file(),
            ]
        };
        for (x, y) in per_unit(&a).iter().zip(per_unit(&b).iter()) {
            assert_ne!(x, y);
            assert!(!x.starts_with(y) && !y.starts_with(x), "{x:?} {y:?}");
        }
        assert_eq!(
            a.state_dir(),
            PathBuf::from("/var/lib/github-runner-charm/units/github-runner-0")
        );
        assert_eq!(
            a.lock_file(),
            PathBuf::from("/run/github-runner-charm/github-runner-0/reconcile.lock")
        );
        assert_eq!(
            a.rebuild_cron_file(),
            PathBuf::from("/etc/cron.d/github-runner-image-github-runner-0")
        );
        assert_eq!(
            a.metrics_log(),
            PathBuf::from("/var/log/github-runner-metrics-github-runner-0.log")
        );
        assert_eq!(
            a.legacy().metrics_log(),
            PathBuf::from("/var/log/github-runner-metrics.log")
        );
        assert_eq!(
            a.metrics_logrotate_rule(),
            PathBuf::from("/etc/logrotate.d/github-runner-metrics-github-runner-0")
        );
        assert_eq!(a.machine_lock_file(), b.machine_lock_file());
        assert_eq!(a.creation_lock_file(), b.creation_lock_file());
        assert!(!a
            .lock_file()
            .starts_with(a.machine_lock_file().parent().unwrap().join("x")));
        // A hostile or odd unit name never climbs out of its folder.
        assert_eq!(unit_folder_name("../../etc/x"), "__-__-etc-x");
        assert_eq!(unit_folder_name("App/1"), "_pp-1");
    }
}
