//! Two units of two applications on one machine (one host root, one LXD daemon and project,
//! one systemd): each converges to its own count, flushes only its own runners, has its own
//! timer and files, and removing one leaves the other untouched.

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

use charm_env::CharmEnv;
use github_runner::identity::UnitIdentity;
use github_runner::paths::HostPaths;

#[test]
fn two_units_of_two_applications_share_a_machine_without_touching_each_other() {
    let mut a = CharmEnv::new(2);
    a.deploy();
    let mut b = a.unit_on_same_machine("other-runners/0", 1);
    b.deploy();
    a.wait_online(3);
    let owner_b = UnitIdentity::parse("other-runners/0", &b.model_uuid)
        .unwrap()
        .owner_value();
    let a_runners = a.instances();
    let b_runners = a.instances_of(&owner_b);
    assert_eq!((a_runners.len(), b_runners.len()), (2, 1));

    // Each unit its own timer, lock and state folder.
    let paths_a = HostPaths::for_unit(&a.h.host_root, "github-runner/0");
    let paths_b = HostPaths::for_unit(&a.h.host_root, "other-runners/0");
    let timer = |p: &HostPaths| {
        p.systemd_dir()
            .join(github_runner::host::timer::unit_names(p).timer)
    };
    assert!(timer(&paths_a).exists() && timer(&paths_b).exists());
    assert!(paths_a.lock_file().exists() && paths_b.lock_file().exists());
    let creds = |p: &HostPaths| p.state_dir().join("credentials.json");
    assert!(creds(&paths_a).exists() && creds(&paths_b).exists());

    // Reconciles converge each to its own count and touch nothing of the other.
    a.reconcile().assert_ok();
    b.dispatch_path("reconcile-runners").assert_ok();
    assert_eq!(a.instances(), a_runners);
    assert_eq!(a.instances_of(&owner_b), b_runners);

    // Each unit its own metrics log (its exporter counts only its own events) and rule.
    let events = |p: &HostPaths| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p.metrics_log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    };
    for (paths, flavor) in [(&paths_a, "github-runner"), (&paths_b, "other-runners")] {
        let own = events(paths);
        assert!(
            own.iter().any(|e| e["event"] == "reconciliation"),
            "{:?}: {own:?}",
            paths.metrics_log()
        );
        assert!(own.iter().all(|e| e["flavor"] == flavor), "{own:?}");
        assert!(paths.metrics_logrotate_rule().is_file());
    }
    assert!(!HostPaths::new(&a.h.host_root).metrics_log().exists());

    // b flushes: only its own runner is replaced.
    b.action("flush-runners").assert_ok();
    assert_eq!(a.instances(), a_runners, "b's flush touched a's runners");
    let b_flushed = a.instances_of(&owner_b);
    assert_eq!(b_flushed.len(), 1);
    assert_ne!(b_flushed, b_runners);

    // b goes away: its runners, timer and files go; a keeps everything.
    for hook in ["stop", "remove"] {
        b.hook(hook).assert_ok();
    }
    assert!(a.instances_of(&owner_b).is_empty());
    assert!(!timer(&paths_b).exists());
    assert!(timer(&paths_a).exists(), "b's remove deleted a's timer");
    assert!(!creds(&paths_b).exists(), "b's token left behind");
    assert!(!paths_b.metrics_logrotate_rule().exists());
    assert!(paths_a.metrics_logrotate_rule().exists());
    assert!(
        creds(&paths_a).exists(),
        "b's remove deleted a's credentials"
    );
    assert_eq!(a.instances(), a_runners);
    a.reconcile().assert_ok();
    assert_eq!(a.instances(), a_runners);
    a.assert_runners(2);
}

/// The host's memory and CPUs as the charm reads them below its host root: `MemTotal` and
/// `cpus` processor entries.
fn fake_host(host_root: &std::path::Path, memory_gib: u64, cpus: u32) {
    let proc_dir = HostPaths::new(host_root).proc_dir();
    std::fs::create_dir_all(&proc_dir).unwrap();
    std::fs::write(
        proc_dir.join("meminfo"),
        format!("MemTotal:       {} kB\n", memory_gib << 20),
    )
    .unwrap();
    let cpuinfo: String = (0..cpus).map(|n| format!("processor\t: {n}\n\n")).collect();
    std::fs::write(proc_dir.join("cpuinfo"), cpuinfo).unwrap();
}

/// Issue 20's example, scaled down: two units on one host whose memory holds 3 runners of
/// vm-memory=7GiB (90% of 24 GiB), each asked for 3, reconciling at the same moment. One
/// admission for the machine counts both units' instances under one creation lock: never
/// more than 3 in all, and the unit left short says why. Then an instance nobody owns (a
/// leftover) takes a runner's room too.
#[test]
fn two_units_creating_at_once_never_start_more_than_the_host_holds() {
    let mut a = CharmEnv::new(0);
    fake_host(&a.h.host_root, 24, 64);
    a.deploy();
    let mut b = a.unit_on_same_machine("other-runners/0", 0);
    b.deploy();
    let owner_b = UnitIdentity::parse("other-runners/0", &b.model_uuid)
        .unwrap()
        .owner_value();
    a.set_config("virtual-machines", 3);
    b.set_config("virtual-machines", 3);

    let (run_a, run_b) = std::thread::scope(|s| {
        let b = &mut b;
        let other = s.spawn(move || b.dispatch_path("reconcile-runners"));
        let own = a.reconcile();
        (own, other.join().unwrap())
    });
    let (mine, theirs) = (a.instances(), a.instances_of(&owner_b));
    let everything = a.fx.instance_names();
    assert_eq!(
        everything.len(),
        3,
        "a: {mine:?}, b: {theirs:?}, all: {everything:?}\na: {:?}\nb: {:?}",
        run_a.code,
        run_b.code
    );
    let statuses = [a.status().1, b.last_status().unwrap_or_default().1];
    assert!(
        statuses
            .iter()
            .any(|s| s.contains("host memory allows") || s.contains("no room on this machine")),
        "the unit left short says why: {statuses:?}"
    );

    // The next rounds keep it so, whichever unit runs.
    a.reconcile().assert_ok();
    b.dispatch_path("reconcile-runners");
    assert_eq!(a.fx.instance_names().len(), 3);

    // A leftover that belongs to no unit takes a runner's room too.
    a.set_config("virtual-machines", 0);
    a.reconcile().assert_ok();
    b.set_config("virtual-machines", 0);
    b.dispatch_path("reconcile-runners").assert_ok();
    assert_eq!(a.fx.instance_names(), Vec::<String>::new());
    a.fx.lxc_ok(&[
        "launch",
        lxd_fixture::IMAGE_ALIAS,
        "leftover-0",
        "-c",
        "limits.memory=7GiB",
    ]);
    b.set_config("virtual-machines", 3);
    b.dispatch_path("reconcile-runners").assert_ok();
    assert_eq!(a.instances_of(&owner_b).len(), 2);
    let (_, status) = b.last_status().unwrap_or_default();
    assert!(status.contains("host memory allows 2"), "{status}");
}
