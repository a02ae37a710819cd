//! Is a runner alive? At most one exec per instance: is a process named `Runner.Listener`
//! running (the real runner's listener binary; the test runner's script of that name)?

use crate::lxd::{ExecSpec, Instance, InstanceState, Lxd};
use std::time::Duration;

/// The listener's process name (its `comm`, at most 15 characters: this one fits exactly).
pub const LISTENER_PROCESS: &str = "Runner.Listener";
/// The start script's process name as the kernel truncates it (15 characters).
const START_SCRIPT_PROCESS: &str = "github-runner-s";

/// Exit codes of [`probe_script`].
const PROBE_LISTENER: i32 = 0;
const PROBE_NOTHING: i32 = 1;
const PROBE_STARTING: i32 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The listener runs: the runner waits for or runs its job.
    Healthy,
    /// The start script runs but the listener is not up yet (or has just exited and the
    /// instance is powering off): neither healthy nor to be removed this round.
    Starting,
    Unhealthy(UnhealthyReason),
    /// Could not tell (transitional LXD state, exec failure): leave it alone this round.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnhealthyReason {
    /// Stopped or in LXD's Error state.
    NotRunning(InstanceState),
    /// Running, but neither the listener nor the start script is.
    ListenerNotRunning,
}

/// POSIX sh scanning /proc/*/comm: works on the Ubuntu image and on busybox alike.
pub fn probe_script() -> String {
    format!(
        "starting=0; for f in /proc/[0-9]*/comm; do \
           c=$(cat \"$f\" 2>/dev/null) || continue; \
           [ \"$c\" = {LISTENER_PROCESS} ] && exit {PROBE_LISTENER}; \
           [ \"$c\" = {START_SCRIPT_PROCESS} ] && starting=1; \
         done; [ $starting = 1 ] && exit {PROBE_STARTING}; exit {PROBE_NOTHING}"
    )
}

/// What the instance state alone decides (None: an exec must tell).
pub fn health_from_state(state: &InstanceState) -> Option<Health> {
    match state {
        InstanceState::Running => None,
        InstanceState::Stopped | InstanceState::Error => Some(Health::Unhealthy(
            UnhealthyReason::NotRunning(state.clone()),
        )),
        InstanceState::Other(s) => Some(Health::Unknown(format!("instance is {s}"))),
    }
}

/// What the probe's exit code means.
pub fn health_from_probe(exit_code: i32, stderr: &str) -> Health {
    match exit_code {
        PROBE_LISTENER => Health::Healthy,
        PROBE_STARTING => Health::Starting,
        PROBE_NOTHING => Health::Unhealthy(UnhealthyReason::ListenerNotRunning),
        other => Health::Unknown(format!(
            "health probe exited with {other}: {}",
            stderr.trim()
        )),
    }
}

/// Checks one instance with at most one exec.
pub fn check_health(lxd: &dyn Lxd, instance: &Instance, timeout: Duration) -> Health {
    if let Some(h) = health_from_state(&instance.state) {
        return h;
    }
    let spec = ExecSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), probe_script()],
        timeout,
        ..ExecSpec::default()
    };
    match lxd.exec(&instance.name, &spec) {
        Ok(out) => health_from_probe(out.exit_code, &out.stderr),
        Err(e) => Health::Unknown(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lxd::InstanceType;
    use crate::runner::create::tests::ScriptedLxd;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    fn instance(state: InstanceState) -> Instance {
        Instance {
            name: "a-0-0123456789ab".into(),
            state,
            instance_type: InstanceType::Container,
            created_at_epoch: 0,
            config: BTreeMap::new(),
            profiles: vec![],
        }
    }

    #[test]
    fn state_decides_without_exec_unless_running() {
        assert_eq!(health_from_state(&InstanceState::Running), None);
        assert_eq!(
            health_from_state(&InstanceState::Stopped),
            Some(Health::Unhealthy(UnhealthyReason::NotRunning(
                InstanceState::Stopped
            )))
        );
        assert_eq!(
            health_from_state(&InstanceState::Error),
            Some(Health::Unhealthy(UnhealthyReason::NotRunning(
                InstanceState::Error
            )))
        );
        assert!(matches!(
            health_from_state(&InstanceState::Other("Frozen".into())),
            Some(Health::Unknown(_))
        ));
    }

    #[test]
    fn probe_exit_codes_map_to_health() {
        assert_eq!(health_from_probe(0, ""), Health::Healthy);
        assert_eq!(health_from_probe(2, ""), Health::Starting);
        assert_eq!(
            health_from_probe(1, ""),
            Health::Unhealthy(UnhealthyReason::ListenerNotRunning)
        );
        assert!(
            matches!(health_from_probe(127, "sh: not found"), Health::Unknown(m) if m.contains("127"))
        );
    }

    #[test]
    fn process_names_fit_the_kernel_comm_limit() {
        assert!(LISTENER_PROCESS.len() <= 15);
        assert_eq!(START_SCRIPT_PROCESS.len(), 15);
        assert!(crate::runner::files::START_SCRIPT.ends_with("github-runner-start.sh"));
    }

    /// Runs the probe against a fake /proc holding processes with the given comm names, so
    /// the host's own processes (other tests' runners show up in the host's /proc) never
    /// decide the outcome.
    fn probe_with_processes(comms: &[&str]) -> Option<i32> {
        let proc_dir = tempfile::tempdir().unwrap();
        for (pid, comm) in comms.iter().enumerate() {
            let dir = proc_dir.path().join((pid + 1).to_string());
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        }
        let script = probe_script().replace("/proc/", &format!("{}/", proc_dir.path().display()));
        assert_ne!(script, probe_script(), "the probe scans /proc/");
        std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .status()
            .unwrap()
            .code()
    }

    #[test]
    fn probe_script_finds_processes_by_comm() {
        assert_eq!(probe_with_processes(&[]), Some(PROBE_NOTHING));
        assert_eq!(probe_with_processes(&["sh", "sleep"]), Some(PROBE_NOTHING));
        assert_eq!(
            probe_with_processes(&["sh", START_SCRIPT_PROCESS]),
            Some(PROBE_STARTING)
        );
        assert_eq!(
            probe_with_processes(&[START_SCRIPT_PROCESS, LISTENER_PROCESS]),
            Some(PROBE_LISTENER)
        );
    }

    #[test]
    fn one_exec_per_check_at_most() {
        let lxd = ScriptedLxd {
            exec_exit: Mutex::new(vec![]),
            ..Default::default()
        };
        assert_eq!(
            check_health(
                &lxd,
                &instance(InstanceState::Running),
                Duration::from_secs(5)
            ),
            Health::Healthy
        );
        assert_eq!(lxd.calls().len(), 1);
        let _ = check_health(
            &lxd,
            &instance(InstanceState::Stopped),
            Duration::from_secs(5),
        );
        assert_eq!(lxd.calls().len(), 1, "a stopped instance needs no exec");
        let failing = ScriptedLxd {
            fail: vec!["exec"],
            ..Default::default()
        };
        assert!(matches!(
            check_health(
                &failing,
                &instance(InstanceState::Running),
                Duration::from_secs(5)
            ),
            Health::Unknown(_)
        ));
    }
}
