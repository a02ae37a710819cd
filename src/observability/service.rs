//! The exporter's systemd service, one per unit: written when it differs, (re)started, and
//! repaired when found inactive, like the reconcile timer (`host::timer`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::host::file::replace_if_changed;
use crate::host::timer::{
    checked_charm_dir, checked_unit_name, InstallOutcome, Systemd, TimerError,
};
use crate::paths::HostPaths;

use super::server::SUBCOMMAND;

/// Port of unit number 0; unit N listens on `BASE_PORT + N % PORT_SPAN`, so the units of one
/// application on a machine never collide.
pub const BASE_PORT: u16 = 9470;
pub const PORT_SPAN: u16 = 500;

/// What the unit file depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterSpec {
    /// `app/N`.
    pub unit_name: String,
    pub charm_dir: PathBuf,
    /// Which binary file the service runs ([`crate::host::file::binary_identity`]): a `juju refresh` puts a new
    /// file in place, so the unit text changes and [`install`] restarts the service, from
    /// whichever converge comes first (upgrade-charm's own restart may have failed).
    pub binary_id: String,
}

impl ExporterSpec {
    /// The loopback address the exporter listens on (the grafana agent is a subordinate on
    /// the same machine and scrapes `localhost`).
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, exporter_port(&self.unit_name)))
    }

    /// `ghro.metrics-exporter.<app>-<N>.service` ([`crate::naming::exporter_service`]).
    pub fn service_name(&self) -> String {
        crate::naming::exporter_service(&self.unit_name)
    }
}

/// The path of the binary the service runs.
pub fn binary_path(charm_dir: &Path) -> PathBuf {
    charm_dir.join("bin/github-runner-charm")
}

/// The unit's port (see [`BASE_PORT`]). Pure.
pub fn exporter_port(unit_name: &str) -> u16 {
    let number: u16 = unit_name
        .rsplit_once('/')
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .map_or(0, |n| (n % u64::from(PORT_SPAN)) as u16);
    BASE_PORT + number
}

/// The service file. Pure.
pub fn render(spec: &ExporterSpec) -> Result<String, TimerError> {
    let unit = checked_unit_name(&spec.unit_name)?;
    let dir = checked_charm_dir(&spec.charm_dir)?;
    let listen = spec.listen();
    // Only what binary_identity writes; anything else could break the unit text.
    let binary: String = spec
        .binary_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '.'))
        .collect();
    Ok(format!(
        "[Unit]\n\
         Description=Prometheus metrics of {unit} (github-runner charm)\n\
         After=network.target\n\
         \n\
         [Service]\n\
         # Binary file {binary}: another file (a refresh) restarts the service.\n\
         ExecStart={dir}/bin/github-runner-charm {SUBCOMMAND} --listen {listen} --unit {unit}\n\
         Restart=always\n\
         RestartSec=5\n\
         # Reads two root-owned files; needs no capability and writes nothing.\n\
         CapabilityBoundingSet=\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         MemoryMax=64M\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n"
    ))
}

/// Write the service when it differs and make sure it runs. Idempotent.
pub fn install(
    paths: &HostPaths,
    spec: &ExporterSpec,
    systemd: &dyn Systemd,
) -> Result<InstallOutcome, TimerError> {
    let service = spec.service_name();
    let path = paths.systemd_dir().join(&service);
    let changed =
        replace_if_changed(&path, &render(spec)?, 0o644).map_err(|e| TimerError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if changed {
        systemd.daemon_reload()?;
        systemd.enable_now(&service)?;
        // A running exporter keeps its old command line until restarted.
        systemd.restart(&service)?;
        tracing::info!(listen = %spec.listen(), "metrics exporter installed");
        return Ok(InstallOutcome::Updated);
    }
    if !systemd.is_active(&service)? {
        tracing::warn!("metrics exporter was not active; starting it");
        systemd.enable_now(&service)?;
        return Ok(InstallOutcome::Repaired);
    }
    Ok(InstallOutcome::Unchanged)
}

/// Stop the service and delete its file (stop and remove hooks). Idempotent.
pub fn remove(
    paths: &HostPaths,
    spec: &ExporterSpec,
    systemd: &dyn Systemd,
) -> Result<(), TimerError> {
    let service = spec.service_name();
    let path = paths.systemd_dir().join(&service);
    if !Path::new(&path).exists() {
        return Ok(());
    }
    systemd.disable_now(&service)?;
    std::fs::remove_file(&path).map_err(|e| TimerError::Remove {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    systemd.daemon_reload()?;
    Ok(())
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
