//! Every path the charm writes on the machine, derived from one root.
//!
//! Juju never sets `GITHUB_RUNNER_HOST_ROOT`; tests set it to a temp dir so hooks write there.

use std::path::{Path, PathBuf};

pub const HOST_ROOT_ENV: &str = "GITHUB_RUNNER_HOST_ROOT";

/// Host paths, all below `root` (`/` in production).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    root: PathBuf,
}

impl HostPaths {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HostPaths { root: root.into() }
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

    fn at(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
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

    /// JSON-lines metrics events.
    pub fn metrics_log(&self) -> PathBuf {
        self.at("var/log/github-runner-metrics.log")
    }

    /// Logs pulled from crashed runners, one folder each.
    pub fn runner_logs_dir(&self) -> PathBuf {
        self.at("var/log/github-runner-logs")
    }

    /// The charm's own state on the machine (not secrets).
    pub fn state_dir(&self) -> PathBuf {
        self.at("var/lib/github-runner-charm")
    }

    /// The verified runner application tarball cache.
    pub fn runner_binary_dir(&self) -> PathBuf {
        self.at("var/lib/github-runner-charm/runner-binary")
    }

    /// The unit's reconcile/flush lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.at("run/github-runner-charm/reconcile.lock")
    }

    /// `LXD_CONF` for the `lxc` client: hooks run without HOME.
    pub fn lxd_conf_dir(&self) -> PathBuf {
        self.at("var/lib/github-runner-charm/lxc-config")
    }

    /// Output of the runner image build (install-time and the daily cron rebuild).
    pub fn image_build_log(&self) -> PathBuf {
        self.at("var/log/github-runner-image-build.log")
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
            p.reactive_dir("app-0"),
            p.reactive_log_dir("app-0"),
        ] {
            assert!(path.starts_with("/tmp/x"), "{path:?}");
        }
        assert_eq!(
            HostPaths::new("/").systemd_dir(),
            PathBuf::from("/etc/systemd/system")
        );
    }
}
