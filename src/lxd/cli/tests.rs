use super::instances::*;
use super::resources::*;
use super::*;
use std::time::Instant;

#[test]
fn lxd_message_keeps_only_error_lines() {
    let stderr = "Creating c1\nThe instance you are starting doesn't have any network\nError: Image not found\n";
    assert_eq!(lxd_message(stderr), "Image not found");
    assert_eq!(lxd_message("  boom \n"), "boom");
    assert_eq!(lxd_message(""), "lxc failed without a message");
}

#[test]
fn exec_failure_is_told_apart_from_a_failing_command() {
    assert!(exec_failed_in_lxd(1, "Error: Instance is not running\n"));
    assert!(exec_failed_in_lxd(1, "Error: Instance not found"));
    assert!(
        !exec_failed_in_lxd(1, "Error: x\n"),
        "a command printing Error: is still the command"
    );
    assert!(!exec_failed_in_lxd(2, "Error: Instance is not running"));
    assert!(!exec_failed_in_lxd(127, "Error: Command not found"));
}

#[test]
fn parses_lxd_timestamps() {
    assert_eq!(rfc3339_to_epoch("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        rfc3339_to_epoch("2026-11-27T17:53:22.05554362Z"),
        Some(1_795_802_002)
    );
    assert_eq!(
        rfc3339_to_epoch("2000-03-01T00:00:00+01:00"),
        Some(951_865_200)
    );
    assert_eq!(
        rfc3339_to_epoch("2024-02-29T12:00:00Z"),
        Some(1_709_208_000)
    );
    assert_eq!(
        rfc3339_to_epoch("0001-01-01T00:00:00Z"),
        None,
        "before the epoch"
    );
    assert_eq!(rfc3339_to_epoch("garbage"), None);
    assert_eq!(rfc3339_to_epoch("2024-13-01T00:00:00Z"), None);
}

#[test]
fn states_and_types_map_from_lxd_words() {
    assert_eq!(parse_state("Running"), InstanceState::Running);
    assert_eq!(parse_state("Stopped"), InstanceState::Stopped);
    assert_eq!(parse_state("Error"), InstanceState::Error);
    assert_eq!(parse_state("Frozen"), InstanceState::Other("Frozen".into()));
    assert_eq!(
        parse_instance_type("virtual-machine"),
        Some(InstanceType::VirtualMachine)
    );
    assert_eq!(
        parse_instance_type("container"),
        Some(InstanceType::Container)
    );
    assert_eq!(parse_instance_type("vm"), None);
}

#[test]
fn raw_instance_json_maps_to_instance() {
    let json = r#"[{"name":"a-0-0123456789ab","status":"Running","type":"container",
        "created_at":"1970-01-01T00:01:00Z","config":{"user.github-runner.owner":"u/a/0"},
        "profiles":["default","runner"],"state":{"status":"Running"}}]"#;
    let raw: Vec<RawInstance> = parse_json("list", json.as_bytes()).unwrap();
    let inst = raw.into_iter().next().unwrap().into_instance().unwrap();
    assert_eq!(inst.name, "a-0-0123456789ab");
    assert_eq!(inst.created_at_epoch, 60);
    assert_eq!(inst.instance_type, InstanceType::Container);
    assert_eq!(inst.profiles, vec!["default", "runner"]);
    assert_eq!(
        inst.config.get(OWNER_CONFIG_KEY).map(String::as_str),
        Some("u/a/0")
    );
}

#[test]
fn production_client_uses_the_host_lxd_conf_dir() {
    let dir = tempfile::tempdir().unwrap();
    let paths = HostPaths::new(dir.path());
    match LxcCli::for_host(&paths) {
        Ok(cli) => {
            assert_eq!(cli.conf_dir(), paths.lxd_conf_dir());
            assert_eq!(cli.project(), None);
        }
        // Without lxc on PATH the error says what to install.
        Err(e) => assert!(matches!(e, LxdError::LxcMissing), "{e}"),
    }
}

#[test]
fn project_goes_into_query_urls() {
    let dir = tempfile::tempdir().unwrap();
    let cli = LxcCli::with_binary("/bin/false".into(), dir.path().join("conf")).unwrap();
    assert_eq!(cli.project_url("/1.0/profiles"), "/1.0/profiles");
    let cli = cli.in_project("t1");
    assert_eq!(cli.project_url("/1.0/profiles"), "/1.0/profiles?project=t1");
    assert_eq!(
        cli.project_url("/1.0/instances?recursion=1"),
        "/1.0/instances?recursion=1&project=t1"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "LXD_CONF holds client keys: private");
}

#[test]
fn instance_types_come_from_drivers_on_lxd_5_0() {
    let env = |types: &[&str], driver: &str| RawServerEnvironment {
        server_version: "5.0.2".into(),
        instance_types: types.iter().map(|t| t.to_string()).collect(),
        driver: driver.into(),
    };
    assert_eq!(
        server_instance_types(&env(&[], "lxc")),
        vec![InstanceType::Container]
    );
    assert_eq!(
        server_instance_types(&env(&[], "lxc | qemu")),
        vec![InstanceType::Container, InstanceType::VirtualMachine]
    );
    assert_eq!(
        server_instance_types(&env(&["virtual-machine"], "lxc")),
        vec![InstanceType::VirtualMachine]
    );
}

#[test]
fn url_segments_escape_anything_unusual() {
    assert_eq!(url_segment("cpu-2-mem-7GiB"), "cpu-2-mem-7GiB");
    assert_eq!(url_segment("a/b?c"), "a%2Fb%3Fc");
}

#[test]
fn a_command_over_its_deadline_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    // `sleep` stands in for a hung lxc: the call must come back with Timeout, not hang.
    let sleep = which::which("sleep").unwrap();
    let cli = LxcCli::with_binary(sleep, dir.path().join("conf")).unwrap();
    let started = Instant::now();
    let err = cli
        .run("probe", &["30"], None, Duration::from_millis(200))
        .err()
        .unwrap();
    assert!(matches!(err, LxdError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn spawned_lxc_gets_only_the_explicit_environment() {
    let dir = tempfile::tempdir().unwrap();
    let env = which::which("env").unwrap();
    let cli = LxcCli::with_binary(env, dir.path().join("conf")).unwrap();
    let out = cli
        .run("probe", &[], None, Duration::from_secs(10))
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    for k in &keys {
        assert!(
            ["PATH", "LXD_CONF", "HOME", "LANG", "LXD_DIR", "LXD_SOCKET"].contains(k),
            "leaked {k}"
        );
    }
    assert!(text.contains(&format!("LXD_CONF={}", dir.path().join("conf").display())));
}
