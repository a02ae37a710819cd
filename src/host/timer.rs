//! The periodic reconcile: a systemd timer and oneshot service dispatching the
//! `reconcile-runners` event through `juju-exec`, so it runs with a full hook context and
//! serialised with hooks by Juju's machine lock.
//!
//! Unit names are the Python charm's, so an upgrade replaces its units in place. Unlike it,
//! the service runs under `timeout` (a hung reconcile cannot block the timer forever) and
//! carries no environment: no token, no proxy settings.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::host::child::{collect_with_deadline, Collected};
use crate::host::file::replace_if_changed;
use crate::paths::HostPaths;

/// The unit-less names of older charms (and the Python charm's): one timer per machine.
pub const SERVICE_UNIT: &str = "ghro.reconcile-runners.service";
pub const TIMER_UNIT: &str = "ghro.reconcile-runners.timer";

/// The systemd unit names of one charm unit's timer and service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitNames {
    pub service: String,
    pub timer: String,
}

/// `ghro.reconcile-runners-<unit folder>.{service,timer}` for a unit's paths, so units
/// sharing a machine never overwrite or delete each other's timer; the unit-less names for
/// unit-less paths.
pub fn unit_names(paths: &HostPaths) -> UnitNames {
    match paths.unit_folder() {
        Some(unit) => UnitNames {
            service: crate::naming::reconcile_unit(unit, "service"),
            timer: crate::naming::reconcile_unit(unit, "timer"),
        },
        None => UnitNames {
            service: SERVICE_UNIT.into(),
            timer: TIMER_UNIT.into(),
        },
    }
}
/// The custom event the service dispatches.
pub const EVENT: &str = "reconcile-runners";
/// The reconcile may run this many intervals before `timeout` ends it.
pub const TIMEOUT_INTERVALS: u64 = 10;

/// What the unit files depend on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerSpec {
    /// `app/N`, as juju-exec takes it.
    pub unit_name: String,
    /// The charm directory (where `./dispatch` is).
    pub charm_dir: PathBuf,
    pub interval_minutes: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    #[error("unit name {0:?} cannot go into a systemd unit: expected <application>/<number> made of a-z, 0-9 and -")]
    BadUnitName(String),
    #[error("charm directory {0:?} cannot go into a systemd unit: it must be absolute, without spaces, quotes, % or control characters")]
    BadCharmDir(PathBuf),
    #[error("could not write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("could not remove {path}: {reason}")]
    Remove { path: PathBuf, reason: String },
    #[error(transparent)]
    Systemd(#[from] SystemdError),
}

/// The service and timer file contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedUnits {
    pub service: String,
    pub timer: String,
}

/// `app/N` made of a-z, 0-9 and `-`, safe inside a unit file and a shell word.
pub fn checked_unit_name(unit: &str) -> Result<&str, TimerError> {
    let unit_ok = unit.split_once('/').is_some_and(|(app, num)| {
        !app.is_empty()
            && app
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !num.is_empty()
            && num.bytes().all(|b| b.is_ascii_digit())
    });
    if unit_ok {
        Ok(unit)
    } else {
        Err(TimerError::BadUnitName(unit.to_string()))
    }
}

/// An absolute path without spaces, quotes, `%` or control characters.
pub fn checked_charm_dir(dir: &Path) -> Result<&str, TimerError> {
    dir.to_str()
        .filter(|d| {
            d.starts_with('/')
                && !d
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "'\"\\%$`".contains(c))
        })
        .ok_or_else(|| TimerError::BadCharmDir(dir.to_path_buf()))
}

/// Render both unit files, under the unit-less names. Pure.
pub fn render(spec: &TimerSpec) -> Result<RenderedUnits, TimerError> {
    render_named(
        spec,
        &UnitNames {
            service: SERVICE_UNIT.into(),
            timer: TIMER_UNIT.into(),
        },
    )
}

/// Render both unit files; the timer starts `names.service`. Pure.
pub fn render_named(spec: &TimerSpec, names: &UnitNames) -> Result<RenderedUnits, TimerError> {
    let unit = checked_unit_name(&spec.unit_name)?;
    let dir = checked_charm_dir(&spec.charm_dir)?;
    let interval = u64::from(spec.interval_minutes.max(1));
    let timeout_secs = interval * 60 * TIMEOUT_INTERVALS;
    let dispatch = format!("\"JUJU_DISPATCH_PATH={EVENT} ./dispatch\"");
    let service = format!(
        "[Unit]\n\
         Description=Dispatch the {EVENT} event on {unit}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         WorkingDirectory={dir}\n\
         # juju-exec is Juju 3's name for Juju 2.9's juju-run.\n\
         ExecStart=/usr/bin/run-one /usr/bin/timeout --kill-after=60 {timeout_secs} /usr/bin/bash -c \
         'if [ -x /usr/bin/juju-exec ]; then exec /usr/bin/juju-exec \"{unit}\" {dispatch}; \
         else exec /usr/bin/juju-run \"{unit}\" {dispatch}; fi'\n"
    );
    let timer = format!(
        "[Unit]\n\
         Description=Trigger the {EVENT} event on {unit} every {interval} minutes\n\
         \n\
         [Timer]\n\
         # OnActiveSec starts the cycle: OnUnitInactiveSec alone never fires for a service\n\
         # that has not run yet.\n\
         OnActiveSec={interval}m\n\
         OnUnitInactiveSec={interval}m\n\
         RandomizedDelaySec={delay}s\n\
         Unit={service_unit}\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n",
        delay = interval * 60 / 4,
        service_unit = names.service,
    );
    Ok(RenderedUnits { service, timer })
}

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("could not run {program} {args}: {reason}")]
    Spawn {
        program: String,
        args: String,
        reason: String,
    },
    #[error("{program} {args} exited with {code}: {stderr}")]
    Failed {
        program: String,
        args: String,
        code: i32,
        stderr: String,
    },
    #[error("{program} {args} did not finish within {seconds} s and was killed; check that systemd answers (systemctl status)")]
    Timeout {
        program: String,
        args: String,
        seconds: u64,
    },
}

/// Longest a systemctl call may take: systemd's own D-Bus calls give up after 25 s, and a
/// wedged systemctl must not hold a hook (and the unit's lock) forever.
pub const SYSTEMCTL_TIMEOUT: Duration = Duration::from_secs(90);

/// The systemctl operations the timer needs.
pub trait Systemd {
    fn daemon_reload(&self) -> Result<(), SystemdError>;
    fn enable_now(&self, unit: &str) -> Result<(), SystemdError>;
    /// Apply a changed unit file to a running unit.
    fn restart(&self, unit: &str) -> Result<(), SystemdError>;
    fn is_active(&self, unit: &str) -> Result<bool, SystemdError>;
    fn disable_now(&self, unit: &str) -> Result<(), SystemdError>;
}

/// `systemctl` as a child process with an explicit environment (hooks have no HOME).
#[derive(Debug, Clone)]
pub struct Systemctl {
    program: PathBuf,
    env: BTreeMap<String, String>,
    timeout: Duration,
}

impl Systemctl {
    pub fn new() -> Self {
        Systemctl::with_program("/usr/bin/systemctl")
    }

    /// Another binary (tests use a recording stub).
    pub fn with_program(program: impl Into<PathBuf>) -> Self {
        let env = [
            (
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
            ("LANG", "C.UTF-8"),
            ("SYSTEMD_PAGER", ""),
        ];
        Systemctl {
            program: program.into(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            timeout: SYSTEMCTL_TIMEOUT,
        }
    }

    /// Another deadline per call (tests use a short one).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Exit code and stderr of `systemctl <args>`.
    fn run(&self, args: &[&str]) -> Result<(i32, String), SystemdError> {
        let spawn_err = |e: std::io::Error| SystemdError::Spawn {
            program: self.program.display().to_string(),
            args: args.join(" "),
            reason: e.to_string(),
        };
        let mut child = Command::new(&self.program)
            .args(args)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let Some(Collected { status, stderr, .. }) =
            collect_with_deadline(&mut child, self.timeout).map_err(spawn_err)?
        else {
            return Err(SystemdError::Timeout {
                program: self.program.display().to_string(),
                args: args.join(" "),
                seconds: self.timeout.as_secs(),
            });
        };
        // Killed by a signal: no code; -1 keeps it distinct from any exit status.
        let code = status.code().unwrap_or(-1);
        Ok((code, String::from_utf8_lossy(&stderr).trim().to_string()))
    }

    fn run_ok(&self, args: &[&str]) -> Result<(), SystemdError> {
        match self.run(args)? {
            (0, _) => Ok(()),
            (code, stderr) => Err(SystemdError::Failed {
                program: self.program.display().to_string(),
                args: args.join(" "),
                code,
                stderr,
            }),
        }
    }
}

impl Default for Systemctl {
    fn default() -> Self {
        Systemctl::new()
    }
}

impl Systemd for Systemctl {
    fn daemon_reload(&self) -> Result<(), SystemdError> {
        self.run_ok(&["daemon-reload"])
    }

    fn enable_now(&self, unit: &str) -> Result<(), SystemdError> {
        self.run_ok(&["enable", "--now", unit])
    }

    fn restart(&self, unit: &str) -> Result<(), SystemdError> {
        self.run_ok(&["restart", unit])
    }

    /// `is-active` exits 0 when active and non-zero (3, 4) otherwise.
    fn is_active(&self, unit: &str) -> Result<bool, SystemdError> {
        Ok(self.run(&["is-active", "--quiet", unit])?.0 == 0)
    }

    fn disable_now(&self, unit: &str) -> Result<(), SystemdError> {
        self.run_ok(&["disable", "--now", unit])
    }
}

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallOutcome {
    /// Files were written (new or changed) and the timer (re)started.
    Updated,
    /// Files were current but the timer was not active: started it.
    Repaired,
    /// Nothing to do.
    Unchanged,
}

impl fmt::Display for InstallOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstallOutcome::Updated => "timer installed",
            InstallOutcome::Repaired => "timer restarted",
            InstallOutcome::Unchanged => "timer unchanged",
        })
    }
}

/// Write the unit files when their content differs and make sure the timer runs.
/// Idempotent: install, config-changed and update-status all call it.
pub fn install(
    paths: &HostPaths,
    spec: &TimerSpec,
    systemd: &dyn Systemd,
) -> Result<InstallOutcome, TimerError> {
    let names = unit_names(paths);
    let units = render_named(spec, &names)?;
    let dir = paths.systemd_dir();
    let legacy_removed = remove_legacy_timer_of(paths, &spec.unit_name, systemd)?;
    let service_changed = write_if_changed(&dir.join(&names.service), &units.service)?;
    let timer_changed = write_if_changed(&dir.join(&names.timer), &units.timer)?;
    if service_changed || timer_changed || legacy_removed {
        systemd.daemon_reload()?;
        systemd.enable_now(&names.timer)?;
        if timer_changed {
            // enable --now leaves an already running timer on its old schedule.
            systemd.restart(&names.timer)?;
        }
        tracing::info!(
            interval = spec.interval_minutes,
            "reconcile timer installed"
        );
        return Ok(InstallOutcome::Updated);
    }
    if !systemd.is_active(&names.timer)? {
        tracing::warn!("reconcile timer was not active; starting it");
        systemd.enable_now(&names.timer)?;
        return Ok(InstallOutcome::Repaired);
    }
    Ok(InstallOutcome::Unchanged)
}

/// Stop the timer and delete both unit files (stop and remove hooks). Idempotent.
pub fn remove(paths: &HostPaths, systemd: &dyn Systemd) -> Result<(), TimerError> {
    if remove_units(paths, &unit_names(paths), systemd)? {
        systemd.daemon_reload()?;
        tracing::info!("reconcile timer removed");
    }
    Ok(())
}

/// An older charm's unit-less timer, when it dispatches to `unit_name`: removed once the
/// unit has its own (another unit's is left to that unit). Answers whether it removed it.
fn remove_legacy_timer_of(
    paths: &HostPaths,
    unit_name: &str,
    systemd: &dyn Systemd,
) -> Result<bool, TimerError> {
    let legacy = unit_names(&paths.legacy());
    if paths.unit_folder().is_none() {
        return Ok(false);
    }
    let service = std::fs::read_to_string(paths.systemd_dir().join(&legacy.service));
    if !service.is_ok_and(|text| text.contains(&format!("juju-exec \"{unit_name}\""))) {
        return Ok(false);
    }
    remove_units(paths, &legacy, systemd)
}

/// Disables the timer and deletes both files; answers whether there was anything.
fn remove_units(
    paths: &HostPaths,
    names: &UnitNames,
    systemd: &dyn Systemd,
) -> Result<bool, TimerError> {
    let dir = paths.systemd_dir();
    let timer = dir.join(&names.timer);
    let service = dir.join(&names.service);
    if !timer.exists() && !service.exists() {
        return Ok(false);
    }
    if timer.exists() {
        systemd.disable_now(&names.timer)?;
    }
    for path in [timer, service] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(TimerError::Remove {
                    path,
                    reason: e.to_string(),
                })
            }
        }
    }
    Ok(true)
}

/// Replace `path` atomically with `content` (0644) unless it already holds exactly that.
/// Returns whether it wrote.
fn write_if_changed(path: &Path, content: &str) -> Result<bool, TimerError> {
    replace_if_changed(path, content, 0o644).map_err(|e| TimerError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
#[path = "timer_tests.rs"]
mod tests;
