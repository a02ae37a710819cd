//! `juju refresh` from the Python github-runner charm, end to end through `dispatch` on the
//! real LXD daemon with the fake GitHub (tests/support/charm_env): a machine laid out as
//! the Python charm leaves it (its files below the host root and in the charm directory,
//! its runners as busybox containers with registrations, one busy), look-alikes of another
//! unit, of an application whose name extends this one and an operator's instance; then
//! upgrade-charm, config-changed and the timer's reconcile.

#[path = "support/charm_env/mod.rs"]
mod charm_env;
#[path = "support/executable.rs"]
mod executable;
#[path = "support/fake_github/mod.rs"]
mod fake_github;
#[path = "support/juju_harness/mod.rs"]
mod juju_harness;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use charm_env::{CharmEnv, REPO};
use fake_github::{Endpoint, Fault};
use github_runner::paths::HostPaths;
use std::path::PathBuf;

const TOKEN_IN_CLEAR: &str = "ghp_pythoncharmtoken";

/// `github-runner-0-` + 24 hex ending in `n`: a Python-charm runner name of unit 0.
fn old_name(prefix: &str, n: u8) -> String {
    format!("{prefix}0123456789abcdef012345{n:02x}")
}

/// Every instance of the fixture's project, sorted.
fn project_instances(env: &CharmEnv) -> Vec<String> {
    let out = env.fx.lxc_ok(&["list", "--format", "csv", "-c", "n"]);
    let mut names: Vec<String> = out.lines().map(str::to_string).collect();
    names.sort();
    names
}

fn write(path: PathBuf, text: &str) -> PathBuf {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_refresh_from_the_python_charm_drains_its_runners_then_removes_what_it_left() {
    let mut env = CharmEnv::new(1);
    let paths = HostPaths::new(&env.h.host_root);
    let app = env.unit.app.clone();

    // The Python charm's host layout.
    let service = write(
        paths.python_policy_service_unit(),
        &format!("[Service]\nEnvironment=\"GITHUB_TOKEN={TOKEN_IN_CLEAR}\"\n"),
    );
    let charm_files: Vec<PathBuf> = ["charm_state.json", ".unit-state.db", "service_token"]
        .iter()
        .map(|f| write(env.h.charm_dir.join(f), TOKEN_IN_CLEAR))
        .collect();
    let cron = write(
        paths.python_rebuild_cron_file(),
        "0 */6 * * * ubuntu bash x\n",
    );
    let binary = write(paths.python_runner_binary_dir().join("runner.tgz"), "tar");
    let runner_fs = write(paths.python_runner_fs_dir().join("r1/metrics"), "{}");
    let [images, quarantine] = paths.python_runner_fs_extra_dirs();
    let image = write(images.join("r1.img"), "ext4");
    let quarantined = write(quarantine.join("r1.json"), "{}");
    let metrics_log = write(paths.metrics_log(), "{\"event\":\"runner_stop\"}\n");
    let crashed_log = write(paths.runner_logs_dir().join("r0/syslog"), "log");

    // Its runners: idle, busy, and a registration whose VM is gone; look-alikes.
    let prefix = format!("{app}-0-");
    let (idle, busy, reg_only) = (
        old_name(&prefix, 1),
        old_name(&prefix, 2),
        old_name(&prefix, 3),
    );
    let other_unit = old_name(&format!("{app}-1-"), 4);
    let longer_app = old_name(&format!("{app}-x-0-"), 5);
    let operators = "operators-builder".to_string();
    for name in [&idle, &busy, &other_unit, &longer_app, &operators] {
        env.fx
            .lxc_ok(&["launch", lxd_fixture::IMAGE_ALIAS, name.as_str()]);
    }
    for name in [&idle, &busy, &reg_only, &other_unit, &longer_app] {
        env.gh.add_runner(REPO, name, &[&app]);
    }
    assert!(env.gh.set_runner_busy(&busy, true));
    assert!(env.gh.set_runner_online(&reg_only, false));

    // upgrade-charm with GitHub refusing the first deregistration: that runner's instance
    // must stay (it could still take a job), so deregistering comes first.
    env.gh.inject_on(
        Endpoint::DeleteRunner,
        Fault::Forbidden {
            accepted_permissions: None,
        },
        2,
    );
    env.h.hook("upgrade-charm").assert_ok();
    let after_upgrade = project_instances(&env);
    assert!(after_upgrade.contains(&idle), "{after_upgrade:?}");
    assert!(after_upgrade.contains(&busy), "{after_upgrade:?}");

    env.config_changed().assert_ok();
    let unit = env.unit.clone();
    assert!(
        env.gh.wait_until(charm_env::ONLINE_WITHIN, |s| s
            .runners
            .iter()
            .any(|r| unit.owns_name(&r.name) && r.online)),
        "our runner came online"
    );
    let instances = project_instances(&env);
    assert!(!instances.contains(&idle), "{instances:?}");
    assert!(
        instances.contains(&busy),
        "the busy runner survives: {instances:?}"
    );
    let regs = env.registrations();
    assert!(
        !regs.contains(&idle) && !regs.contains(&reg_only),
        "{regs:?}"
    );
    assert!(regs.contains(&busy), "{regs:?}");
    let deletes: Vec<String> = env
        .gh
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::DeleteRunner)
        .map(|r| r.path)
        .collect();
    assert!(deletes.len() >= 4, "the refused ones retried: {deletes:?}");
    assert!(
        env.status()
            .1
            .contains("1 old runner still finishing its job"),
        "{:?}",
        env.status()
    );
    assert!(service.exists(), "its job still needs the policy service");
    assert!(runner_fs.exists());

    // Its job ends: the VM powers off, GitHub drops the ephemeral registration.
    env.fx.lxc_ok(&["stop", "--force", busy.as_str()]);
    assert!(env.gh.remove_runner(&busy));
    env.reconcile().assert_ok();

    let instances = project_instances(&env);
    assert!(!instances.contains(&busy), "{instances:?}");
    for kept in [&other_unit, &longer_app, &operators] {
        assert!(instances.contains(kept), "{kept} untouched: {instances:?}");
    }
    let regs = env.registrations();
    assert!(
        regs.contains(&other_unit) && regs.contains(&longer_app),
        "{regs:?}"
    );
    // Another unit's Python-charm runner is still on the machine: what the Python charm's
    // units share stays for it; only this unit's own files (they hold the token) go.
    for gone in &charm_files {
        assert!(!gone.exists(), "{} left behind", gone.display());
    }
    for kept in [&service, &cron, &binary, &runner_fs, &image, &quarantined] {
        assert!(
            kept.exists(),
            "{} removed under another unit",
            kept.display()
        );
    }
    // That unit's runners are gone too (it was refreshed and drained, or removed).
    env.fx.lxc_ok(&[
        "delete",
        "--force",
        other_unit.as_str(),
        longer_app.as_str(),
    ]);
    env.reconcile().assert_ok();
    for gone in
        charm_files
            .iter()
            .chain([&service, &cron, &binary, &runner_fs, &image, &quarantined])
    {
        assert!(!gone.exists(), "{} left behind", gone.display());
    }
    for dir in [
        paths.python_runner_binary_dir(),
        paths.python_runner_fs_dir(),
        images,
        quarantine,
    ] {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(metrics_log.exists() && crashed_log.exists(), "logs stay");
    let calls = std::fs::read_to_string(env.h.tools_dir.join("calls"))
        .or_else(|_| std::fs::read_to_string(env.bin_dir.join("calls")))
        .unwrap_or_default();
    assert!(
        calls.contains("disable --now repo-policy-compliance.service"),
        "{calls}"
    );
    assert!(!env.status().1.contains("old runner"), "{:?}", env.status());
    assert_eq!(env.instances().len(), 1, "our fleet is whole");

    // Nothing is left to look for: the next round deletes no registration.
    env.gh.clear_requests();
    env.reconcile().assert_ok();
    assert_eq!(env.gh.count(Endpoint::DeleteRunner), 0);
}

/// Item 4: a refresh between revisions of this charm loses nothing: unit state, the
/// credentials file, the timer, the busy runner (and is not taken for the Python charm's).
#[test]
fn a_refresh_between_revisions_of_this_charm_keeps_state_credentials_timer_and_runners() {
    let mut env = CharmEnv::new(2);
    env.deploy();
    let online = env.wait_online(2);
    let busy = online[0].clone();
    env.gh.assign_held_job(&busy).expect("assign a job");
    assert!(env.gh.wait_until(charm_env::GONE_WITHIN, |s| s
        .runner(&busy)
        .is_some_and(|r| r.busy)));
    let paths = HostPaths::for_unit(&env.h.host_root, &env.h.unit_name);
    let credentials = paths.state_dir().join(charm_env::CREDENTIALS_FILE);
    let credentials_before = std::fs::read(&credentials).expect("credentials file");
    let timer = github_runner::host::timer::unit_names(&paths).timer;
    let state_before = env.h.unit_state();

    env.h.hook("upgrade-charm").assert_ok();
    env.config_changed().assert_ok();
    env.reconcile().assert_ok();
    env.wait_online(2);

    assert!(env.instances().contains(&busy), "the busy runner is kept");
    assert!(env.gh.runner(&busy).is_some_and(|r| r.busy));
    assert_eq!(std::fs::read(&credentials).unwrap(), credentials_before);
    assert!(
        env.h.tools_dir.join("active").join(&timer).exists(),
        "{timer}"
    );
    let state_after = env.h.unit_state();
    for (key, value) in &state_before {
        if key != "last-status" && key != "runner-binary-checked-at" {
            assert_eq!(state_after.get(key), Some(value), "{key}");
        }
    }
    assert!(paths.python_charm_cleared_marker().exists());
}

/// stop after a refresh: the machine is going away, so the Python charm's runners go as
/// this charm's do, the busy one too (it would otherwise keep taking jobs after
/// `juju remove-unit`); another unit's look-alike stays.
#[test]
fn stop_after_a_refresh_removes_the_python_charms_runners_busy_ones_too() {
    let mut env = CharmEnv::new(1);
    let app = env.unit.app.clone();
    let prefix = format!("{app}-0-");
    let (idle, busy) = (old_name(&prefix, 1), old_name(&prefix, 2));
    let other_unit = old_name(&format!("{app}-1-"), 4);
    for name in [&idle, &busy, &other_unit] {
        env.fx
            .lxc_ok(&["launch", lxd_fixture::IMAGE_ALIAS, name.as_str()]);
        env.gh.add_runner(REPO, name, &[&app]);
    }
    assert!(env.gh.set_runner_busy(&busy, true));
    env.h.hook("upgrade-charm").assert_ok();
    assert!(project_instances(&env).contains(&busy), "kept for its job");

    env.h.hook("stop").assert_ok();
    let instances = project_instances(&env);
    assert!(
        !instances.contains(&idle) && !instances.contains(&busy),
        "{instances:?}"
    );
    assert!(instances.contains(&other_unit), "{instances:?}");
    let regs = env.registrations();
    assert!(!regs.contains(&idle), "{regs:?}");
    assert!(regs.contains(&other_unit), "{regs:?}");
}
