use super::*;
use crate::observability::testing::RecordingSystemd as Recorder;

fn spec(unit: &str) -> ExporterSpec {
    ExporterSpec {
        unit_name: unit.into(),
        charm_dir: "/var/lib/juju/agents/unit-gr-0/charm".into(),
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
