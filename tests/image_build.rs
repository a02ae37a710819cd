//! How the charm runs scripts/build-runner-image.sh: the real script, driven through
//! `runner::image`, against a stub `lxc` that records its calls (the real build needs the
//! Ubuntu image server, which is out of reach here).

#[path = "support/executable.rs"]
mod executable;

use github_runner::lxd::InstanceType;
use github_runner::runner::image::{build_command, run_build, BuildProxies, ImageError};
use std::path::Path;
use std::time::Duration;

/// A stub `lxc`: logs each call's argv, keeps stdin written to the builder's proxy file,
/// answers `image info` with a fingerprint that changes after `publish`, and keeps the
/// server config (`config show/get/edit`) in `server-config`, every edit in
/// `server-config-edits`.
const STUB_LXC: &str = r#"#!/bin/sh
dir="$(dirname "$0")"
echo "$*" >> "$dir/calls"
if [ -n "${STUB_FAIL_ON:-}" ]; then
    case "$*" in *"$STUB_FAIL_ON"*) echo "stub: failing on $STUB_FAIL_ON" >&2; exit 1 ;; esac
fi
case "$*" in
    *"cat > /root/build-proxy.env"*) cat > "$dir/pushed-proxy-env" ;;
    "config show") if [ -s "$dir/server-config" ]; then cat "$dir/server-config"; else echo "config: {}"; fi ;;
    "config get "*) [ -e "$dir/server-config" ] && sed -n "s/^  $3: \"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" "$dir/server-config" ;;
    "config edit") cat > "$dir/server-config"; cat "$dir/server-config" >> "$dir/server-config-edits" ;;
    "image info"*) [ -e "$dir/published" ] && echo "Fingerprint: new123" || echo "Fingerprint: old456" ;;
    publish*) touch "$dir/published" ;;
esac
exit 0
"#;

fn charm_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn stubbed(
    proxies: &BuildProxies,
    instance_type: InstanceType,
) -> (
    tempfile::TempDir,
    github_runner::runner::image::BuildCommand,
) {
    let stub = tempfile::tempdir().unwrap();
    let lxc = stub.path().join("lxc");
    executable::write_executable(&lxc, STUB_LXC);
    let mut cmd = build_command(
        charm_dir(),
        &stub.path().join("conf"),
        &stub.path().join("run/image-build.lock"),
        "jammy",
        instance_type,
        proxies,
    );
    for (k, v) in cmd.env.iter_mut() {
        if k == "PATH" {
            *v = format!("{}:{v}", stub.path().display());
        }
    }
    (stub, cmd)
}

#[test]
fn builds_a_vm_image_and_publishes_it_under_the_alias() {
    let proxies = BuildProxies {
        http: Some("http://proxy.internal:3128".into()),
        https: None,
        no_proxy: Some("10.0.0.0/8".into()),
    };
    let (stub, cmd) = stubbed(&proxies, InstanceType::VirtualMachine);
    // The operator's own LXD settings: an https proxy and an address, both kept.
    let original = "config:\n  core.https_address: '[::]:8443'\n  core.proxy_https: \"http://op:secret@corp:8080\"\n";
    std::fs::write(stub.path().join("server-config"), original).unwrap();
    let log = stub.path().join("build.log");
    run_build(&cmd, "jammy", &log, Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()));
    // The log may hold the proxy settings: only root reads it.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "build log mode {mode:o}");
    let calls = std::fs::read_to_string(stub.path().join("calls")).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    // Proxy values reach LXD on stdin, never in argv; the settings are put back afterwards.
    assert!(
        !calls.contains("proxy.internal") && !calls.contains("secret"),
        "{calls}"
    );
    let edits = std::fs::read_to_string(stub.path().join("server-config-edits")).unwrap();
    assert!(
        edits.contains("  core.proxy_http: \"http://proxy.internal:3128\"\n")
            && edits.contains("  core.proxy_ignore_hosts: \"10.0.0.0/8\"\n")
            && edits.contains("  core.proxy_https: \"http://op:secret@corp:8080\"\n")
            && edits.contains("  core.https_address: '[::]:8443'\n"),
        "{edits}"
    );
    let restored = std::fs::read_to_string(stub.path().join("server-config")).unwrap();
    assert_eq!(
        restored,
        "config:\n  core.https_address: '[::]:8443'\n  core.proxy_https: \"http://op:secret@corp:8080\"\n"
    );
    let launch = lines.iter().find(|l| l.starts_with("launch ")).unwrap();
    assert!(
        launch.starts_with("launch ubuntu:jammy github-runner-image-builder-jammy --vm"),
        "{launch}"
    );
    assert!(launch.contains("root,size=8GiB"));
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("publish github-runner-image-builder-jammy --alias jammy --reuse")),
        "{calls}"
    );
    assert!(
        lines.contains(&"image delete old456"),
        "the previous image is dropped: {calls}"
    );
    assert!(
        lines.contains(&"delete --force github-runner-image-builder-jammy"),
        "builder removed on exit"
    );
    assert_eq!(lines.last(), Some(&"config edit"), "settings restored last");
    // apt inside the builder gets the proxy through a pushed file, not through exec argv.
    let pushed = std::fs::read_to_string(stub.path().join("pushed-proxy-env")).unwrap();
    assert!(
        pushed.contains("http_proxy=http://proxy.internal:3128\n")
            && pushed.contains("NO_PROXY=10.0.0.0/8\n"),
        "{pushed}"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l.starts_with("exec"))
            .all(|l| !l.contains("proxy.internal")),
        "{calls}"
    );
    // The runner user: uid 1000, may power off, in the docker group.
    assert!(
        calls.contains("useradd --create-home --uid 1000")
            && calls.contains("NOPASSWD")
            && calls.contains("usermod -aG docker ubuntu")
    );
    assert!(calls.contains("docker.io git curl wget jq"));
}

#[test]
fn test_mode_builds_a_container_without_touching_proxy_settings() {
    let (stub, cmd) = stubbed(&BuildProxies::default(), InstanceType::Container);
    run_build(
        &cmd,
        "jammy",
        &stub.path().join("build.log"),
        Duration::from_secs(60),
    )
    .unwrap();
    let calls = std::fs::read_to_string(stub.path().join("calls")).unwrap();
    let launch = calls.lines().find(|l| l.starts_with("launch ")).unwrap();
    assert!(
        !launch.contains("--vm") && launch.contains("root,size=5GiB"),
        "{launch}"
    );
    assert!(!calls.contains("core.proxy"), "{calls}");
    assert!(!stub.path().join("pushed-proxy-env").exists());
    // The build lock the script made is root's alone.
    use std::os::unix::fs::PermissionsExt;
    let lock = stub.path().join("run/image-build.lock");
    let mode = std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "lock mode {mode:o}");
}

#[test]
fn a_failing_step_fails_the_build_and_still_removes_the_builder() {
    let (stub, mut cmd) = stubbed(&BuildProxies::default(), InstanceType::Container);
    cmd.env.push(("STUB_FAIL_ON".into(), "dist-upgrade".into()));
    let log = stub.path().join("build.log");
    match run_build(&cmd, "jammy", &log, Duration::from_secs(60)) {
        Err(ImageError::BuildFailed { exit_code, .. }) => assert_ne!(exit_code, 0),
        other => panic!("{other:?}"),
    }
    let calls = std::fs::read_to_string(stub.path().join("calls")).unwrap();
    assert!(!calls.contains("publish"), "{calls}");
    assert_eq!(
        calls.lines().last(),
        Some("delete --force github-runner-image-builder-jammy"),
        "{calls}"
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("stub: failing on dist-upgrade"));
}

/// Two builds on one machine (two units' crons, or a cron and an install-time build) share
/// the builder instance and LXD's proxy settings: the second waits for the first's lock.
#[test]
fn a_build_waits_while_another_holds_the_machines_build_lock() {
    let (stub, cmd) = stubbed(&BuildProxies::default(), InstanceType::Container);
    let lock = stub.path().join("run/image-build.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, "").unwrap();
    // The other build: flock(1) holds the lock while `cat` runs, until its stdin closes.
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .arg("cat")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("flock(1) from util-linux");
    let probe = || {
        std::process::Command::new("flock")
            .args(["--nonblock", lock.to_str().unwrap(), "true"])
            .status()
            .unwrap()
            .success()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while probe() {
        assert!(
            std::time::Instant::now() < deadline,
            "flock(1) never took the lock"
        );
        std::thread::yield_now();
    }
    let log = stub.path().join("build.log");
    let build = {
        let (cmd, log) = (cmd.clone(), log.clone());
        std::thread::spawn(move || run_build(&cmd, "jammy", &log, Duration::from_secs(120)))
    };
    let waiting = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("another image build holds")
    };
    while !waiting() {
        assert!(
            std::time::Instant::now() < deadline,
            "the build never said it waits"
        );
        assert!(
            !build.is_finished(),
            "the build ran while the lock was held"
        );
        std::thread::yield_now();
    }
    // Blocked in flock (the lock is still held): not one lxc call yet.
    assert!(
        !stub.path().join("calls").exists(),
        "lxc ran under another build's lock"
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
    build
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()));
    let calls = std::fs::read_to_string(stub.path().join("calls")).unwrap();
    assert!(calls.contains("publish"), "{calls}");
}

/// Every shell script the charm ships or runs is shellcheck-clean (shellcheck is installed by
/// `make deps`; a missing shellcheck fails here rather than silently passing).
#[test]
fn shipped_shell_scripts_are_shellcheck_clean() {
    let scripts = [
        "scripts/build-runner-image.sh",
        "tests/support/lxd_fixture/setup-lxd.sh",
        "dispatch",
    ];
    let out = std::process::Command::new("shellcheck")
        .args(["--severity=style"])
        .args(scripts.iter().map(|s| charm_dir().join(s)))
        .output()
        .expect("shellcheck must be installed (make deps installs it)");
    assert!(
        out.status.success(),
        "shellcheck findings:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
