use super::*;
use crate::test_executable::write_executable;
use std::cell::RefCell;
use std::os::unix::fs::MetadataExt;
use std::os::unix::fs::PermissionsExt;

const CHARM_DIR: &str = "/var/lib/juju/agents/unit-github-runner-0/charm";

fn spec(interval: u32) -> TimerSpec {
    TimerSpec {
        unit_name: "github-runner/0".into(),
        charm_dir: PathBuf::from(CHARM_DIR),
        interval_minutes: interval,
    }
}

#[test]
fn renders_the_units() {
    let units = render(&spec(10)).unwrap();
    assert_eq!(
        units.service,
        "[Unit]\n\
         Description=Dispatch the reconcile-runners event on github-runner/0\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         WorkingDirectory=/var/lib/juju/agents/unit-github-runner-0/charm\n\
         # juju-exec is Juju 3's name for Juju 2.9's juju-run.\n\
         ExecStart=/usr/bin/run-one /usr/bin/timeout --kill-after=60 6000 /usr/bin/bash -c \
         'if [ -x /usr/bin/juju-exec ]; then exec /usr/bin/juju-exec \"github-runner/0\" \
         \"JUJU_DISPATCH_PATH=reconcile-runners ./dispatch\"; else exec /usr/bin/juju-run \
         \"github-runner/0\" \"JUJU_DISPATCH_PATH=reconcile-runners ./dispatch\"; fi'\n"
    );
    assert_eq!(
        units.timer,
        "[Unit]\n\
         Description=Trigger the reconcile-runners event on github-runner/0 every 10 minutes\n\
         \n\
         [Timer]\n\
         # OnActiveSec starts the cycle: OnUnitInactiveSec alone never fires for a service\n\
         # that has not run yet.\n\
         OnActiveSec=10m\n\
         OnUnitInactiveSec=10m\n\
         RandomizedDelaySec=150s\n\
         Unit=ghro.reconcile-runners.service\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    );
}

#[test]
fn delay_is_a_quarter_of_the_interval_to_the_second() {
    let line = |i| {
        render(&spec(i))
            .unwrap()
            .timer
            .lines()
            .find(|l| l.starts_with("RandomizedDelaySec="))
            .unwrap()
            .to_string()
    };
    assert_eq!(line(2), "RandomizedDelaySec=30s");
    assert_eq!(line(7), "RandomizedDelaySec=105s");
    assert!(render(&spec(3))
        .unwrap()
        .service
        .contains("timeout --kill-after=60 1800 "));
}

#[test]
fn refuses_values_that_could_inject_into_the_unit() {
    for bad in [
        "x/0\"; rm -rf /",
        "X/0",
        "x",
        "x/",
        "/0",
        "x/0\nExecStartPre=/bin/evil",
        "x y/0",
    ] {
        let s = TimerSpec {
            unit_name: bad.into(),
            ..spec(5)
        };
        assert!(
            matches!(render(&s), Err(TimerError::BadUnitName(_))),
            "{bad:?}"
        );
    }
    for bad in [
        "relative/charm",
        "/with space",
        "/q'uote",
        "/new\nline",
        "/pct%i",
    ] {
        let s = TimerSpec {
            charm_dir: bad.into(),
            ..spec(5)
        };
        assert!(
            matches!(render(&s), Err(TimerError::BadCharmDir(_))),
            "{bad:?}"
        );
    }
}

#[test]
fn no_environment_reaches_the_units() {
    let units = render(&spec(5)).unwrap();
    for text in [&units.service, &units.timer] {
        assert!(!text.contains("Environment"), "{text}");
        assert!(!text.to_lowercase().contains("token"), "{text}");
    }
}

/// Records the systemctl calls; `active` answers is-active.
#[derive(Default)]
struct FakeSystemd {
    calls: RefCell<Vec<String>>,
    active: bool,
}

impl FakeSystemd {
    fn take(&self) -> Vec<String> {
        self.calls.take()
    }
}

impl Systemd for FakeSystemd {
    fn daemon_reload(&self) -> Result<(), SystemdError> {
        self.calls.borrow_mut().push("daemon-reload".into());
        Ok(())
    }
    fn enable_now(&self, unit: &str) -> Result<(), SystemdError> {
        self.calls.borrow_mut().push(format!("enable --now {unit}"));
        Ok(())
    }
    fn restart(&self, unit: &str) -> Result<(), SystemdError> {
        self.calls.borrow_mut().push(format!("restart {unit}"));
        Ok(())
    }
    fn is_active(&self, unit: &str) -> Result<bool, SystemdError> {
        self.calls.borrow_mut().push(format!("is-active {unit}"));
        Ok(self.active)
    }
    fn disable_now(&self, unit: &str) -> Result<(), SystemdError> {
        self.calls
            .borrow_mut()
            .push(format!("disable --now {unit}"));
        Ok(())
    }
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn install_writes_once_and_rewrites_only_on_change() {
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    let systemd = FakeSystemd {
        active: true,
        ..FakeSystemd::default()
    };
    let timer_path = paths.systemd_dir().join(TIMER_UNIT);
    let service_path = paths.systemd_dir().join(SERVICE_UNIT);

    assert_eq!(
        install(&paths, &spec(10), &systemd).unwrap(),
        InstallOutcome::Updated
    );
    assert_eq!(
        systemd.take(),
        vec![
            "daemon-reload",
            "enable --now ghro.reconcile-runners.timer",
            "restart ghro.reconcile-runners.timer"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(&timer_path).unwrap(),
        render(&spec(10)).unwrap().timer
    );
    let mode = std::fs::metadata(&service_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o644);
    let (timer_inode, service_inode) = (inode(&timer_path), inode(&service_path));

    assert_eq!(
        install(&paths, &spec(10), &systemd).unwrap(),
        InstallOutcome::Unchanged
    );
    assert_eq!(
        systemd.take(),
        vec!["is-active ghro.reconcile-runners.timer"]
    );
    assert_eq!(
        inode(&timer_path),
        timer_inode,
        "unchanged content is not rewritten"
    );

    assert_eq!(
        install(&paths, &spec(20), &systemd).unwrap(),
        InstallOutcome::Updated
    );
    assert_eq!(
        systemd.take(),
        vec![
            "daemon-reload",
            "enable --now ghro.reconcile-runners.timer",
            "restart ghro.reconcile-runners.timer"
        ]
    );
    assert_ne!(inode(&timer_path), timer_inode);
    assert_ne!(
        inode(&service_path),
        service_inode,
        "the timeout follows the interval"
    );
    assert!(std::fs::read_to_string(&timer_path)
        .unwrap()
        .contains("OnUnitInactiveSec=20m"));
}

#[test]
fn install_repairs_an_inactive_timer() {
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    let systemd = FakeSystemd::default();
    install(&paths, &spec(10), &systemd).unwrap();
    systemd.take();
    assert_eq!(
        install(&paths, &spec(10), &systemd).unwrap(),
        InstallOutcome::Repaired
    );
    assert_eq!(
        systemd.take(),
        vec![
            "is-active ghro.reconcile-runners.timer",
            "enable --now ghro.reconcile-runners.timer"
        ]
    );
}

#[test]
fn install_repairs_a_tampered_file() {
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    let systemd = FakeSystemd {
        active: true,
        ..FakeSystemd::default()
    };
    install(&paths, &spec(10), &systemd).unwrap();
    let service = paths.systemd_dir().join(SERVICE_UNIT);
    std::fs::write(&service, "[Service]\nEnvironment=GITHUB_TOKEN=old\n").unwrap();
    systemd.take();
    assert_eq!(
        install(&paths, &spec(10), &systemd).unwrap(),
        InstallOutcome::Updated
    );
    // Only the service changed: no timer restart needed.
    assert_eq!(
        systemd.take(),
        vec!["daemon-reload", "enable --now ghro.reconcile-runners.timer"]
    );
    assert_eq!(
        std::fs::read_to_string(&service).unwrap(),
        render(&spec(10)).unwrap().service
    );
}

#[test]
fn remove_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    let systemd = FakeSystemd::default();
    install(&paths, &spec(10), &systemd).unwrap();
    systemd.take();
    remove(&paths, &systemd).unwrap();
    assert_eq!(
        systemd.take(),
        vec![
            "disable --now ghro.reconcile-runners.timer",
            "daemon-reload"
        ]
    );
    assert!(!paths.systemd_dir().join(TIMER_UNIT).exists());
    assert!(!paths.systemd_dir().join(SERVICE_UNIT).exists());
    remove(&paths, &systemd).unwrap();
    assert!(systemd.take().is_empty());
}

/// A stand-in `systemctl` that records its argv and environment and answers is-active
/// with the exit status systemctl uses for an inactive unit.
fn stub_systemctl(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("calls.log");
    let script = dir.join("systemctl");
    write_executable(
        &script,
        &format!(
            "#!/bin/sh\n\
             echo \"args=$*\" >> {log}\n\
             echo \"home=${{HOME-unset}} path=$PATH\" >> {log}\n\
             case \"$1\" in\n\
               is-active) [ \"$3\" = active.timer ] && exit 0; exit 3 ;;\n\
               restart) echo 'Unit missing.timer not found.' >&2; exit 5 ;;\n\
             esac\n\
             exit 0\n",
            log = log.display()
        ),
    );
    (script, log)
}

#[test]
fn systemctl_runs_with_an_explicit_environment_and_reports_failures() {
    let dir = tempfile::tempdir().unwrap();
    let (script, log) = stub_systemctl(dir.path());
    let systemctl = Systemctl::with_program(&script);

    systemctl.daemon_reload().unwrap();
    systemctl.enable_now(TIMER_UNIT).unwrap();
    assert!(systemctl.is_active("active.timer").unwrap());
    assert!(!systemctl.is_active(TIMER_UNIT).unwrap());
    systemctl.disable_now(TIMER_UNIT).unwrap();
    let err = systemctl.restart("missing.timer").unwrap_err();
    assert!(
        err.to_string()
            .ends_with("restart missing.timer exited with 5: Unit missing.timer not found."),
        "{err}"
    );

    let calls = std::fs::read_to_string(&log).unwrap();
    let args: Vec<&str> = calls
        .lines()
        .filter_map(|l| l.strip_prefix("args="))
        .collect();
    assert_eq!(
        args,
        vec![
            "daemon-reload",
            "enable --now ghro.reconcile-runners.timer",
            "is-active --quiet active.timer",
            "is-active --quiet ghro.reconcile-runners.timer",
            "disable --now ghro.reconcile-runners.timer",
            "restart missing.timer",
        ]
    );
    assert!(calls.lines().filter(|l| l.starts_with("home=")).all(
        |l| l == "home=unset path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    ));
}

#[test]
fn a_missing_systemctl_is_a_spawn_error() {
    let systemctl = Systemctl::with_program("/nonexistent/systemctl");
    assert!(matches!(
        systemctl.daemon_reload(),
        Err(SystemdError::Spawn { .. })
    ));
}

#[test]
fn a_hung_systemctl_is_killed_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("systemctl");
    write_executable(&script, "#!/bin/sh\nexec /bin/sleep 30\n");
    let systemctl = Systemctl::with_program(&script).with_timeout(Duration::from_millis(200));
    let err = systemctl.daemon_reload().unwrap_err();
    assert!(
        matches!(&err, SystemdError::Timeout { args, .. } if args == "daemon-reload"),
        "{err}"
    );
}

#[test]
fn units_sharing_a_machine_each_have_their_own_timer() {
    let root = tempfile::tempdir().unwrap();
    let a = HostPaths::for_unit(root.path(), "github-runner/0");
    let b = HostPaths::for_unit(root.path(), "other-runners/3");
    let spec_b = TimerSpec {
        unit_name: "other-runners/3".into(),
        ..spec(10)
    };
    let systemd = FakeSystemd {
        active: true,
        ..FakeSystemd::default()
    };
    install(&a, &spec(10), &systemd).unwrap();
    install(&b, &spec_b, &systemd).unwrap();
    let (na, nb) = (unit_names(&a), unit_names(&b));
    assert_eq!(na.timer, "ghro.reconcile-runners-github-runner-0.timer");
    assert_eq!(nb.timer, "ghro.reconcile-runners-other-runners-3.timer");
    let timer_a = std::fs::read_to_string(a.systemd_dir().join(&na.timer)).unwrap();
    assert!(
        timer_a.contains(&format!("Unit={}\n", na.service)),
        "{timer_a}"
    );
    let service_b = std::fs::read_to_string(b.systemd_dir().join(&nb.service)).unwrap();
    assert!(service_b.contains("juju-exec \"other-runners/3\""));
    // Installing b did not touch a's files; removing a leaves b's.
    systemd.take();
    remove(&a, &systemd).unwrap();
    assert_eq!(
        systemd.take(),
        vec![
            format!("disable --now {}", na.timer),
            "daemon-reload".into()
        ]
    );
    assert!(!a.systemd_dir().join(&na.timer).exists());
    assert!(b.systemd_dir().join(&nb.timer).exists());
    assert!(b.systemd_dir().join(&nb.service).exists());
}

#[test]
fn an_older_charms_machine_wide_timer_is_replaced_only_by_its_own_unit() {
    let root = tempfile::tempdir().unwrap();
    let legacy = HostPaths::new(root.path());
    let systemd = FakeSystemd {
        active: true,
        ..FakeSystemd::default()
    };
    install(&legacy, &spec(10), &systemd).unwrap();
    // Another unit upgrades first: the old timer dispatches to github-runner/0, so it stays.
    let other = TimerSpec {
        unit_name: "other/1".into(),
        ..spec(10)
    };
    install(&legacy.clone().with_unit("other/1"), &other, &systemd).unwrap();
    assert!(legacy.systemd_dir().join(TIMER_UNIT).exists());
    systemd.take();
    install(
        &legacy.clone().with_unit("github-runner/0"),
        &spec(10),
        &systemd,
    )
    .unwrap();
    assert!(!legacy.systemd_dir().join(TIMER_UNIT).exists());
    assert!(!legacy.systemd_dir().join(SERVICE_UNIT).exists());
    assert!(systemd
        .take()
        .contains(&"disable --now ghro.reconcile-runners.timer".to_string()));
}
