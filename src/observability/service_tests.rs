use super::*;
use crate::observability::testing::RecordingSystemd as Recorder;

fn spec(unit: &str) -> ExporterSpec {
    ExporterSpec {
        unit_name: unit.into(),
        charm_dir: "/var/lib/juju/agents/unit-gr-0/charm".into(),
        binary_id: "2049:1234:9000000:1796600000.000000001".into(),
    }
}

#[test]
fn each_unit_of_an_application_gets_its_own_port_and_service() {
    assert_eq!(exporter_port("gr/0"), 9470);
    assert_eq!(exporter_port("gr/7"), 9477);
    assert_eq!(exporter_port("gr/507"), 9477);
    assert_eq!(spec("gr/3").listen().to_string(), "127.0.0.1:9473");
    assert_eq!(
        spec("gr/3").service_name(),
        "ghro.metrics-exporter.gr-3.service"
    );
}

#[test]
fn the_service_runs_the_charm_binary_on_loopback_with_no_secret_and_no_capability() {
    let text = render(&spec("gr/2")).unwrap();
    assert!(text.contains(
        "ExecStart=/var/lib/juju/agents/unit-gr-0/charm/bin/github-runner-charm metrics-exporter --listen 127.0.0.1:9472 --unit gr/2\n"
    ), "{text}");
    for line in [
        "Restart=always",
        "CapabilityBoundingSet=",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}: {text}");
    }
    assert!(render(&spec("gr/x")).is_err());
    let mut bad = spec("gr/0");
    bad.charm_dir = "/a b".into();
    assert!(render(&bad).is_err());
}

#[test]
fn install_writes_once_repairs_an_inactive_service_and_remove_cleans_up() {
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    let s = spec("gr/1");
    let systemd = Recorder::default();
    assert_eq!(
        install(&paths, &s, &systemd).unwrap(),
        InstallOutcome::Updated
    );
    let name = s.service_name();
    assert_eq!(
        systemd.calls(),
        vec![
            "daemon-reload".to_string(),
            format!("enable --now {name}"),
            format!("restart {name}")
        ]
    );
    assert_eq!(
        install(&paths, &s, &systemd).unwrap(),
        InstallOutcome::Repaired
    );
    assert_eq!(
        systemd.calls()[3..],
        [format!("is-active {name}"), format!("enable --now {name}")]
    );
    let active = Recorder {
        active: true,
        ..Recorder::default()
    };
    assert_eq!(
        install(&paths, &s, &active).unwrap(),
        InstallOutcome::Unchanged
    );
    assert_eq!(active.calls(), vec![format!("is-active {name}")]);
    remove(&paths, &s, &active).unwrap();
    assert!(!paths.systemd_dir().join(&name).exists());
    remove(&paths, &s, &active).unwrap();
    assert_eq!(
        active.calls()[1..],
        [format!("disable --now {name}"), "daemon-reload".to_string()]
    );
}

/// `juju refresh` puts another binary file in place: the unit text changes, so the next
/// install restarts a running exporter (it still executes the old file otherwise).
#[test]
fn another_binary_file_restarts_a_running_exporter() {
    let root = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(root.path());
    let old = spec("gr/1");
    let active = Recorder {
        active: true,
        ..Recorder::default()
    };
    install(&paths, &old, &active).unwrap();
    let refreshed = ExporterSpec {
        binary_id: "2049:5678:9100000:1796700000.000000002".into(),
        ..old.clone()
    };
    let name = old.service_name();
    let before = active.calls().len();
    assert_eq!(
        install(&paths, &refreshed, &active).unwrap(),
        InstallOutcome::Updated
    );
    assert_eq!(
        active.calls()[before..],
        [
            "daemon-reload".to_string(),
            format!("enable --now {name}"),
            format!("restart {name}")
        ]
    );
    assert!(render(&refreshed).unwrap().contains("# Binary file 2049:5678:9100000:1796700000.000000002:"));
}

#[test]
fn binary_identity_follows_the_file_not_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::write(&bin, b"revision 1").unwrap();
    let first = binary_identity(&bin);
    assert_eq!(binary_identity(&bin), first, "stable for one file");
    // As a refresh does: a new file renamed over the old name.
    let new = dir.path().join("bin.new");
    std::fs::write(&new, b"revision 2").unwrap();
    std::fs::rename(&new, &bin).unwrap();
    assert_ne!(binary_identity(&bin), first);
    assert_eq!(binary_identity(&dir.path().join("absent")), "missing");
    // Nothing but what binary_identity writes reaches the unit text.
    let hostile = ExporterSpec {
        binary_id: "1:2\nExecStartPre=/bin/sh".into(),
        ..spec("gr/1")
    };
    let text = render(&hostile).unwrap();
    assert!(!text.contains("\nExecStartPre"), "{text}");
}
