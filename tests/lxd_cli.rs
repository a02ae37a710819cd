//! `LxcCli` against the real LXD daemon, each test in an LXD project of its own.

#[path = "support/executable.rs"]
mod executable;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use github_runner::identity::OWNER_CONFIG_KEY;
use github_runner::lxd::{
    ExecSpec, InstanceState, InstanceType, LaunchSpec, Lxd, LxdError, ProfileSpec, PushSource,
    PushSpec,
};
use lxd_fixture::{LxdFixture, IMAGE_ALIAS};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn launch_spec(name: &str, owner: &str) -> LaunchSpec {
    LaunchSpec {
        name: name.to_string(),
        image_alias: IMAGE_ALIAS.to_string(),
        instance_type: InstanceType::Container,
        profiles: vec!["default".to_string()],
        config: [(OWNER_CONFIG_KEY.to_string(), owner.to_string())]
            .into_iter()
            .collect(),
        ephemeral: true,
    }
}

fn sh(script: &str) -> ExecSpec {
    ExecSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        timeout: Duration::from_secs(30),
        ..ExecSpec::default()
    }
}

#[test]
fn launch_list_exec_and_delete_an_owned_instance() {
    let fx = LxdFixture::new();
    let lxd = fx.lxd();
    lxd.launch(&launch_spec("app-0-0123456789ab", "model/app/0"))
        .unwrap();
    // A look-alike: same name shape, other owner; and one with no owner key at all.
    lxd.launch(&launch_spec("app-0-ba9876543210", "model/app-0/1"))
        .unwrap();
    fx.lxc_ok(&["launch", IMAGE_ALIAS, "app-0-aaaaaaaaaaaa", "--quiet"]);

    let owned = lxd.list_owned_instances("model/app/0").unwrap();
    assert_eq!(owned.len(), 1, "{owned:?}");
    let inst = &owned[0];
    assert_eq!(inst.name, "app-0-0123456789ab");
    assert_eq!(inst.state, InstanceState::Running);
    assert_eq!(inst.instance_type, InstanceType::Container);
    assert_eq!(inst.profiles, vec!["default"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        inst.created_at_epoch + 600 > now && inst.created_at_epoch <= now + 5,
        "{}",
        inst.created_at_epoch
    );

    // LXD 5.0 can drop the output of a command that exits at once on a loaded machine
    // (canonical/lxd#11422): the exit code is right, a stream comes back empty. Up to three
    // tries tell that apart from a wrapper that loses or mixes up the streams, which fails
    // every time.
    let expected = (3, "0\nout\n".to_string(), "err\n".to_string());
    let mut got = Vec::new();
    for _ in 0..3 {
        let out = lxd
            .exec(&inst.name, &sh("id -u; echo out; echo err >&2; exit 3"))
            .unwrap();
        got.push((out.exit_code, out.stdout, out.stderr));
        if got.last() == Some(&expected) {
            break;
        }
    }
    assert_eq!(got.last(), Some(&expected), "every try: {got:?}");

    let mut spec = sh("id -u; id -g; echo \"$GREETING\"; cat");
    spec.uid = 1000;
    spec.gid = 1000;
    spec.env.insert("GREETING".into(), "hello world".into());
    spec.stdin = Some(b"from stdin".to_vec());
    let out = lxd.exec(&inst.name, &spec).unwrap();
    assert_eq!(out.stdout, "1000\n1000\nhello world\nfrom stdin");

    lxd.delete(&inst.name, true).unwrap();
    lxd.delete(&inst.name, true).unwrap(); // idempotent
    assert_eq!(
        fx.instance_names(),
        vec!["app-0-aaaaaaaaaaaa", "app-0-ba9876543210"]
    );
    assert!(lxd.list_owned_instances("model/app/0").unwrap().is_empty());
}

#[test]
fn exec_times_out_and_reports_lxd_failures_as_errors() {
    let fx = LxdFixture::new();
    let lxd = fx.lxd();
    lxd.launch(&launch_spec("t-0-000000000001", "o")).unwrap();
    let mut spec = sh("sleep 60");
    spec.timeout = Duration::from_millis(500);
    let started = Instant::now();
    match lxd.exec("t-0-000000000001", &spec) {
        Err(LxdError::Timeout { .. }) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(20));

    match lxd.exec("t-0-nosuchinstance", &sh("true")) {
        Err(LxdError::InstanceNotFound(name)) => assert_eq!(name, "t-0-nosuchinstance"),
        other => panic!("expected InstanceNotFound, got {other:?}"),
    }
    // A command that prints an LXD-looking error is still the command's exit status.
    let out = lxd
        .exec("t-0-000000000001", &sh("echo 'Error: x' >&2; exit 1"))
        .unwrap();
    assert_eq!(out.exit_code, 1);
}

/// A command printing without end is stopped at the cap, not buffered until the timeout.
#[test]
fn exec_output_past_the_cap_kills_the_command() {
    let fx = LxdFixture::new();
    let lxd = fx.lxd();
    lxd.launch(&launch_spec("c-0-000000000001", "o")).unwrap();
    for script in ["cat /dev/zero", "cat /dev/zero >&2"] {
        let mut spec = sh(script);
        spec.timeout = Duration::from_secs(120);
        spec.output_cap = 4096;
        match lxd.exec("c-0-000000000001", &spec) {
            Err(LxdError::OutputTooLarge { cap, .. }) => assert_eq!(cap, 4096),
            other => panic!("{script}: expected OutputTooLarge, got {other:?}"),
        }
    }
    // Output at the cap passes whole.
    let mut spec = sh("head -c 4096 /dev/zero");
    spec.output_cap = 4096;
    let out = lxd.exec("c-0-000000000001", &spec).unwrap();
    assert_eq!(out.stdout.len(), 4096);
}

/// The case without a daemon: an `lxc` that prints without end (what a job can make
/// `lxc exec` print) is killed at the cap, long before the timeout, with bounded memory.
#[test]
fn an_lxc_printing_without_end_is_killed_at_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let lxc = dir.path().join("lxc");
    executable::write_executable(&lxc, "#!/bin/sh\nexec cat /dev/zero\n");
    let cli = github_runner::lxd::LxcCli::with_binary(lxc, dir.path().join("conf")).unwrap();
    let mut spec = sh("cat pre-job.json");
    spec.timeout = Duration::from_secs(600);
    let started = Instant::now();
    match cli.exec("any", &spec) {
        Err(LxdError::OutputTooLarge { cap, .. }) => {
            assert_eq!(cap, github_runner::lxd::DEFAULT_EXEC_OUTPUT_CAP)
        }
        other => panic!("expected OutputTooLarge, got {other:?}"),
    }
    // Not a speed target: only that the cap, not the 600 s deadline, ended it.
    assert!(started.elapsed() < Duration::from_secs(300));
}

#[test]
fn push_writes_mode_and_owner_from_bytes_and_files() {
    let fx = LxdFixture::new();
    let lxd = fx.lxd();
    lxd.launch(&launch_spec("p-0-000000000001", "o")).unwrap();
    lxd.push_file(
        "p-0-000000000001",
        &PushSpec {
            source: PushSource::Bytes(b"secret-ish".to_vec()),
            target: "/root/deep/dir/start.sh".into(),
            mode: 0o700,
            uid: 0,
            gid: 0,
        },
    )
    .unwrap();
    let host_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(host_file.path(), b"tarball").unwrap();
    lxd.push_file(
        "p-0-000000000001",
        &PushSpec {
            source: PushSource::File(host_file.path().to_path_buf()),
            target: "/home/ubuntu/app.tar.gz".into(),
            mode: 0o600,
            uid: 1000,
            gid: 1000,
        },
    )
    .unwrap();
    let out = lxd
        .exec("p-0-000000000001", &sh("stat -c '%a %u %g' /root/deep/dir/start.sh /home/ubuntu/app.tar.gz; cat /root/deep/dir/start.sh"))
        .unwrap();
    assert_eq!(out.stdout, "700 0 0\n600 1000 1000\nsecret-ish");
    // The temp copy of in-memory contents is gone from the host.
    let leftovers: Vec<_> = std::fs::read_dir(lxd.conf_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(github_runner::host::file::TEMP_PREFIX)
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let err = lxd
        .push_file(
            "p-0-nosuch",
            &PushSpec {
                source: PushSource::Bytes(vec![]),
                target: "/x".into(),
                mode: 0o600,
                uid: 0,
                gid: 0,
            },
        )
        .unwrap_err();
    assert!(matches!(err, LxdError::InstanceNotFound(_)), "{err:?}");
}

#[test]
fn stopping_an_ephemeral_instance_deletes_it() {
    let fx = LxdFixture::new();
    let lxd = fx.lxd();
    lxd.launch(&launch_spec("s-0-000000000001", "o")).unwrap();
    let mut persistent = launch_spec("s-0-000000000002", "o");
    persistent.ephemeral = false;
    lxd.launch(&persistent).unwrap();
    lxd.stop("s-0-000000000001", false, Duration::from_secs(30))
        .unwrap();
    lxd.stop("s-0-000000000002", true, Duration::from_secs(30))
        .unwrap();
    let left = lxd.list_owned_instances("o").unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].state, InstanceState::Stopped);
    assert!(matches!(
        lxd.stop("s-0-000000000001", true, Duration::from_secs(5)),
        Err(LxdError::InstanceNotFound(_))
    ));
}

/// A flush marks a busy runner in place: one key set on the running instance, the others
/// (its owner key) kept; a gone instance is InstanceNotFound.
#[test]
fn one_config_key_is_set_on_a_running_instance_and_the_rest_kept() {
    let fx = LxdFixture::new();
    let lxd = fx.lxd();
    lxd.launch(&launch_spec("m-0-000000000001", "o")).unwrap();
    lxd.set_instance_config("m-0-000000000001", "user.github-runner.replace", "abc123")
        .unwrap();
    let listed = lxd.list_owned_instances("o").unwrap();
    assert_eq!(listed.len(), 1, "the owner key survived: {listed:?}");
    assert_eq!(listed[0].state, InstanceState::Running);
    assert_eq!(
        listed[0]
            .config
            .get("user.github-runner.replace")
            .map(String::as_str),
        Some("abc123")
    );
    assert!(matches!(
        lxd.set_instance_config("m-0-000000000009", "user.x", "1"),
        Err(LxdError::InstanceNotFound(_))
    ));
}

#[test]
fn launch_of_a_missing_image_is_image_not_found() {
    let fx = LxdFixture::new();
    let mut spec = launch_spec("m-0-000000000001", "o");
    spec.image_alias = "noble".into();
    match fx.lxd().launch(&spec) {
        Err(LxdError::ImageNotFound(alias)) => assert_eq!(alias, "noble"),
        other => panic!("expected ImageNotFound, got {other:?}"),
    }
    assert!(fx.lxd().image_exists(IMAGE_ALIAS).unwrap());
    assert!(!fx.lxd().image_exists("noble").unwrap());
}

#[test]
fn ensure_profile_creates_then_converges() {
    let fx = LxdFixture::new();
    let lxd = fx.lxd();
    let mut spec = ProfileSpec {
        name: "cpu-1-mem-1GiB-disk-1GiB".into(),
        config: [
            ("limits.cpu".to_string(), "1".to_string()),
            ("limits.memory".to_string(), "1GiB".to_string()),
        ]
        .into_iter()
        .collect(),
        devices: BTreeMap::new(),
    };
    lxd.ensure_profile(&spec).unwrap();
    lxd.ensure_profile(&spec).unwrap(); // idempotent
    spec.config.remove("limits.cpu");
    spec.config.insert("limits.memory".into(), "2GiB".into());
    spec.devices.insert(
        "root".into(),
        [
            ("type", "disk"),
            ("path", "/"),
            ("pool", fx.pool.as_str()),
            ("size", "1GiB"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    );
    lxd.ensure_profile(&spec).unwrap();
    let shown: serde_json::Value = serde_json::from_str(&fx.lxc_ok(&[
        "query",
        &format!("/1.0/profiles/{}?project={}", spec.name, fx.project),
    ]))
    .unwrap();
    assert_eq!(
        shown["config"],
        serde_json::json!({"limits.memory": "2GiB"})
    );
    assert_eq!(shown["devices"]["root"]["size"], "1GiB");
    assert_eq!(shown["devices"]["root"]["pool"], fx.pool.as_str());
}

#[test]
fn profiles_are_listed_with_their_use_and_only_unused_ones_can_be_deleted() {
    let fx = LxdFixture::new();
    let lxd = fx.lxd();
    for name in ["cpu-1-mem-1GiB-disk-1GiB", "cpu-2-mem-1GiB-disk-1GiB"] {
        lxd.ensure_profile(&ProfileSpec {
            name: name.into(),
            ..ProfileSpec::default()
        })
        .unwrap();
    }
    let mut spec = launch_spec("r-0-000000000001", "o");
    spec.profiles.push("cpu-1-mem-1GiB-disk-1GiB".into());
    lxd.launch(&spec).unwrap();
    let mut listed = lxd.list_profiles().unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let uses: Vec<(&str, usize, bool)> = listed
        .iter()
        .map(|p| (p.name.as_str(), p.used_by, p.managed))
        .collect();
    assert_eq!(
        uses,
        [
            ("cpu-1-mem-1GiB-disk-1GiB", 1, true),
            ("cpu-2-mem-1GiB-disk-1GiB", 0, true),
            ("default", 1, false)
        ]
    );
    let in_use = lxd.delete_profile("cpu-1-mem-1GiB-disk-1GiB").unwrap_err();
    assert!(matches!(in_use, LxdError::Command { .. }), "{in_use:?}");
    lxd.delete_profile("cpu-2-mem-1GiB-disk-1GiB").unwrap();
    lxd.delete_profile("cpu-2-mem-1GiB-disk-1GiB").unwrap(); // idempotent
    let names: Vec<String> = lxd
        .list_profiles()
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(
        !names.contains(&"cpu-2-mem-1GiB-disk-1GiB".to_string()),
        "{names:?}"
    );
}

#[test]
fn server_info_reports_version_and_container_support() {
    let fx = LxdFixture::new();
    let info = fx.lxd().server_info().unwrap();
    assert!(!info.server_version.is_empty());
    assert!(
        info.instance_types.contains(&InstanceType::Container),
        "{info:?}"
    );
}

#[test]
fn ensure_storage_pool_creates_a_dir_pool_and_refuses_to_move_it() {
    let mut fx = LxdFixture::new();
    let name = fx.scratch_pool_name();
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("pool");
    std::fs::create_dir(&source).unwrap();
    let source = source.to_str().unwrap();
    fx.lxd().ensure_storage_pool(&name, "dir", source).unwrap();
    fx.claim_pool(&name);
    fx.lxd().ensure_storage_pool(&name, "dir", source).unwrap();
    let err = fx
        .lxd()
        .ensure_storage_pool(&name, "dir", "/elsewhere")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/elsewhere") && err.contains(source), "{err}");

    // Its free space, as admission reads it; a missing pool has none to tell.
    let lxd = fx.lxd();
    let free = lxd.storage_pool_free_bytes(&name).unwrap();
    assert!(free.is_some_and(|b| b > 0), "{free:?}");
    assert_eq!(
        lxd.storage_pool_free_bytes("ghrt-no-such-pool").unwrap(),
        None
    );

    // A profile using it keeps it; once unused it is deleted, and deleting again is Ok.
    let profile = ProfileSpec {
        name: "pool-user".into(),
        config: BTreeMap::new(),
        devices: [(
            "root".to_string(),
            [("type", "disk"), ("path", "/"), ("pool", name.as_str())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )]
        .into(),
    };
    lxd.ensure_profile(&profile).unwrap();
    assert!(lxd.delete_storage_pool(&name).is_err());
    lxd.delete_profile("pool-user").unwrap();
    lxd.delete_storage_pool(&name).unwrap();
    lxd.delete_storage_pool(&name).unwrap();
}

const HELPER_ENV: &str = "GHR_FIXTURE_HELPER";

/// Not a test on its own: the child process of `a_killed_runs_project_is_reaped_by_the_next_run`.
#[test]
#[ignore = "helper process for a_killed_runs_project_is_reaped_by_the_next_run"]
fn helper_holds_a_project_until_killed() {
    if std::env::var(HELPER_ENV).is_err() {
        return;
    }
    let fx = LxdFixture::new();
    fx.lxd()
        .launch(&launch_spec("k-0-000000000001", "o"))
        .unwrap();
    println!("READY {}", fx.project);
    // Block until the parent kills this process (SIGKILL: no Drop runs).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn a_killed_runs_project_is_reaped_by_the_next_run() {
    // First use of the fixture in this process reaps once; do it before the helper dies.
    let conf = lxd_fixture::shared_conf_dir();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_holds_a_project_until_killed",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    // Ends at EOF if the helper fails, so this cannot hang.
    let project = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("READY ").map(str::to_string))
        .expect("the helper made its project");
    child.kill().unwrap();
    child.wait().unwrap();

    let exists = |p: &str| {
        lxd_fixture::lxc_raw(&conf, None, &["query", &format!("/1.0/projects/{p}")])
            .status
            .success()
    };
    assert!(exists(&project), "a killed run leaves its project behind");
    lxd_fixture::reap_stale(&conf);
    assert!(!exists(&project), "the next run reaps it");
    // A live fixture of this process is never reaped.
    let fx = LxdFixture::new();
    lxd_fixture::reap_stale(&conf);
    assert!(exists(&fx.project));
}

/// One fixture importing the shared image while another deletes it (each in its project)
/// always leaves the importer an image it can launch from: the fixture's machine-wide image
/// lock keeps the deletion out of the import. Without it LXD 5.0 lost the file in about half
/// of these rounds ("Failed creating instance from image: open /var/lib/lxd/images/...").
#[test]
fn an_import_racing_another_projects_image_deletion_keeps_the_image_usable() {
    for round in 0..8 {
        let leaving = LxdFixture::new();
        let arriving = std::thread::scope(|s| {
            let arriving = s.spawn(LxdFixture::new);
            s.spawn(move || drop(leaving));
            arriving.join().expect("fixture")
        });
        let name = format!("race-{round}");
        if let Err(e) = arriving.lxd().launch(&launch_spec(&name, "model/race/0")) {
            panic!("round {round}: {e}");
        }
    }
}

/// Admission's listing: every instance, owned or not, with the limits it runs with (its own
/// config over its profiles'); a client without a project lists every project's.
#[test]
fn machine_instances_carry_their_limits_and_span_every_project() {
    let fx = LxdFixture::new();
    let lxd = fx.lxd();
    fx.lxc_ok(&["profile", "create", "sized"]);
    fx.lxc_ok(&["profile", "set", "sized", "limits.cpu", "0-1"]);
    fx.lxc_ok(&["profile", "set", "sized", "limits.memory", "3GiB"]);
    let mut sized = launch_spec("m-0-000000000001", "o");
    sized.profiles.push("sized".into());
    lxd.launch(&sized).unwrap();
    fx.lxc_ok(&[
        "launch",
        IMAGE_ALIAS,
        "leftover",
        "--quiet",
        "-c",
        "limits.memory=512MB",
    ]);

    let mut listed = lxd.list_machine_instances().unwrap();
    listed.sort_by(|a, b| a.name.cmp(&b.name));
    let limits: Vec<(&str, &str, Option<&str>, Option<&str>)> = listed
        .iter()
        .map(|i| {
            (
                i.project.as_str(),
                i.name.as_str(),
                i.limits.cpu.as_deref(),
                i.limits.memory.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        limits,
        vec![
            (fx.project.as_str(), "leftover", None, Some("512MB")),
            (
                fx.project.as_str(),
                "m-0-000000000001",
                Some("0-1"),
                Some("3GiB")
            ),
        ]
    );

    // Unbound to a project (production): ours are among every project's.
    let conf = tempfile::tempdir().unwrap();
    let machine = github_runner::lxd::LxcCli::new(conf.path().join("conf"))
        .unwrap()
        .list_machine_instances()
        .unwrap();
    for name in ["leftover", "m-0-000000000001"] {
        assert!(
            machine
                .iter()
                .any(|i| i.name == name && i.project == fx.project),
            "{name} missing from the machine-wide listing"
        );
    }
}
