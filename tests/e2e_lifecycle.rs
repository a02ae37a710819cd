//! End-to-end lifecycle: stop, remove, update-dependencies, flush-runners and a scope change
//! through `dispatch` on the real LXD daemon with the fake GitHub (see
//! tests/support/charm_env), with a runner busy on a held job. Until now these were tested
//! only against in-memory fakes.

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

use charm_env::{CharmEnv, GONE_WITHIN};
use fake_github::{Endpoint, Fault};
use std::path::PathBuf;

/// A deployed unit with 2 runners online, one of them busy on a held job: (env, busy, idle,
/// job id).
fn two_runners_one_busy() -> (CharmEnv, String, String, u64) {
    let mut env = CharmEnv::new(2);
    env.deploy();
    let online = env.wait_online(2);
    env.assert_runners(2);
    let (busy, idle) = (online[0].clone(), online[1].clone());
    let job = env.gh.assign_held_job(&busy).expect("assign a job");
    assert!(
        env.gh
            .wait_until(GONE_WITHIN, |s| s.runner(&busy).is_some_and(|r| r.busy)),
        "the runner did not take its job"
    );
    (env, busy, idle, job)
}

/// Wait until this unit has exactly `n` registrations, all online, among anyone's; their
/// names.
fn wait_ours_online(env: &CharmEnv, n: usize) -> Vec<String> {
    let ours = |s: &fake_github::Snapshot| -> Vec<String> {
        s.runners
            .iter()
            .filter(|r| env.unit.owns_name(&r.name) && r.online)
            .map(|r| r.name.clone())
            .collect()
    };
    let mut names = Vec::new();
    assert!(
        env.gh.wait_until(charm_env::ONLINE_WITHIN, |s| {
            names = ours(s);
            names.len() == n
                && s.runners
                    .iter()
                    .filter(|r| env.unit.owns_name(&r.name))
                    .count()
                    == n
        }),
        "want {n} of our runners online; instances {:?}",
        env.instances()
    );
    names
}

/// The fake systemctl's record of the reconcile timer being active (the harness puts its
/// `systemctl` first on the hook's PATH, in the tools dir).
fn timer_active(env: &CharmEnv) -> bool {
    let timer = github_runner::host::timer::unit_names(&unit_paths(env)).timer;
    env.h.tools_dir.join("active").join(timer).exists()
}

/// The unit's own host paths (per unit, below the harness's host root).
fn unit_paths(env: &CharmEnv) -> github_runner::paths::HostPaths {
    github_runner::paths::HostPaths::for_unit(&env.h.host_root, &env.h.unit_name)
}

fn rebuild_cron(env: &CharmEnv) -> PathBuf {
    unit_paths(env).rebuild_cron_file()
}

#[test]
fn stop_then_remove_with_a_busy_runner_leave_nothing_on_either_side() {
    let (mut env, busy, _idle, _job) = two_runners_one_busy();
    assert!(timer_active(&env), "deploy installs the reconcile timer");
    let cron = rebuild_cron(&env);
    assert!(cron.exists(), "deploy installs the rebuild cron");

    env.h.hook("stop").assert_ok();
    assert!(!timer_active(&env), "stop removes the timer first");
    assert!(
        env.instances().is_empty(),
        "stop takes every instance down, the busy one too: {:?}",
        env.instances()
    );
    // GitHub still counts the busy runner's registration busy until it notices its
    // listener is gone; the idle one's registration is deleted.
    assert_eq!(env.registrations(), vec![busy.clone()]);

    // GitHub notices (minutes later, in reality): offline, and no longer busy.
    assert!(env.gh.set_runner_busy(&busy, false));
    assert!(env.gh.set_runner_online(&busy, false));
    env.h.hook("remove").assert_ok();
    assert!(env.instances().is_empty(), "{:?}", env.instances());
    assert!(
        env.registrations().is_empty(),
        "remove deletes the registration stop had to leave: {:?}",
        env.registrations()
    );
    assert!(
        env.fx.instance_names().is_empty(),
        "nothing left in the project"
    );
    assert!(!cron.exists(), "remove deletes the rebuild cron");
    assert!(!timer_active(&env));
}

/// The bug of issue 9 through the whole charm: 150 registrations in the repository, our
/// busy runner the first entry of page 2, and another registration deleted while page 2 is
/// held back. GitHub's later entries shift one place back, so a single pass of the listing
/// skips our runner; the reconcile must keep it (and its job) anyway.
#[test]
fn a_registration_deleted_between_pages_never_kills_a_busy_runner() {
    let mut env = CharmEnv::new(2);
    for i in 0..100 {
        env.gh
            .add_runner(charm_env::REPO, &format!("someone-else-{i:03}"), &["x"]);
    }
    env.deploy();
    let online = wait_ours_online(&env, 2);
    for i in 100..148 {
        env.gh
            .add_runner(charm_env::REPO, &format!("someone-else-{i:03}"), &["x"]);
    }
    // Ours were registered after the first 100: the first of them opens page 2.
    let first_of_page_two = env
        .gh
        .runners()
        .into_iter()
        .filter(|r| online.contains(&r.name))
        .min_by_key(|r| r.id)
        .expect("our runners")
        .name;
    let job = env
        .gh
        .assign_held_job(&first_of_page_two)
        .expect("assign a job");
    assert!(env.gh.wait_until(GONE_WITHIN, |s| s
        .runner(&first_of_page_two)
        .is_some_and(|r| r.busy)));

    let held = env.gh.hold_page(Endpoint::ListRunners, 2);
    let mut reconcile = env.spawn_dispatch("reconcile-runners");
    assert!(
        held.wait_held(GONE_WITHIN),
        "the reconcile never asked for page 2"
    );
    assert!(env.gh.remove_runner("someone-else-007"));
    held.release();
    let status = reconcile.wait().expect("wait for the reconcile");
    assert!(status.success(), "{status:?}");

    assert!(
        env.instances().contains(&first_of_page_two),
        "the busy runner's instance was deleted: {:?}",
        env.instances()
    );
    assert!(
        env.gh
            .runner(&first_of_page_two)
            .is_some_and(|r| r.busy && r.online),
        "its job was killed"
    );
    assert_eq!(env.instances().len(), 2, "{:?}", env.instances());
    assert!(env.gh.release_job(job));
}

/// A new runner binary on GitHub: update-dependencies downloads it and flushes the idle
/// runners (the busy one finishes its job on the old binary); the next reconcile refills
/// with runners on the new binary.
#[test]
fn update_dependencies_with_a_changed_binary_flushes_idle_runners_only() {
    let (mut env, busy, idle, job) = two_runners_one_busy();
    let tarball_before = env.gh.runner_tarball_sha256();
    change_runner_binary(&env);

    env.h.action("update-dependencies").assert_ok();
    let record = env.h.action_record();
    assert_eq!(record.failure, None);
    assert_eq!(
        record.results.get("flush").and_then(|v| v.as_str()),
        Some("True")
    );
    assert_ne!(env.gh.runner_tarball_sha256(), tarball_before);
    let instances = env.instances();
    assert_eq!(
        instances,
        vec![busy.clone()],
        "only the idle runner is flushed"
    );
    assert_eq!(env.registrations(), vec![busy.clone()]);
    assert!(!instances.contains(&idle));

    // Nothing changed on GitHub since: no second download, no flush.
    env.h.action("update-dependencies").assert_ok();
    assert_eq!(
        env.h
            .action_record()
            .results
            .get("flush")
            .and_then(|v| v.as_str()),
        Some("False")
    );
    assert_eq!(env.instances(), vec![busy.clone()]);

    env.reconcile().assert_ok();
    let online = env.wait_online(2);
    assert!(
        online.contains(&busy),
        "the busy runner was kept: {online:?}"
    );
    env.assert_runners(2);
    assert!(env.gh.release_job(job));
}

/// The binary changed but GitHub refuses every deletion: the flush fails, the action says
/// so, and no runner is lost (the busy one keeps its job, the idle one is still there).
#[test]
fn update_dependencies_with_a_failing_flush_fails_the_action_and_loses_no_runner() {
    let (mut env, busy, idle, job) = two_runners_one_busy();
    change_runner_binary(&env);
    env.gh
        .inject_always(Fault::ServerError(502), Some(Endpoint::DeleteRunner));

    let run = env.h.action("update-dependencies");
    let record = env.h.action_record();
    let failure = record.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("flushing the idle runners failed")
            && failure.contains(&idle)
            && failure.contains("502"),
        "the action fails naming the runner and GitHub's error: {run:#?} {record:?}"
    );
    assert!(!record.results.contains_key("flush"), "{record:?}");
    assert_eq!(
        env.status(),
        (
            "maintenance".to_string(),
            "runner binary updated, but flushing the idle runners failed; the next \
             reconcile replaces them"
                .to_string()
        )
    );
    let mut both = vec![busy.clone(), idle.clone()];
    both.sort();
    assert_eq!(env.instances(), both, "no instance lost");
    assert_eq!(env.registrations(), both, "no registration lost");
    assert!(
        env.gh.runner(&busy).is_some_and(|r| r.busy),
        "the busy runner keeps its job"
    );

    // GitHub recovers: the next update-dependencies has nothing new to download, and the
    // next reconcile replaces the idle runner on the old binary.
    env.gh.clear_faults();
    env.reconcile().assert_ok();
    assert!(
        env.wait_instances(GONE_WITHIN, |names| !names.contains(&idle)),
        "the outdated idle runner is replaced: {:?}",
        env.instances()
    );
    assert!(env.gh.release_job(job));
}

/// The busy runner survives a flush-runners and the reconciles while its job runs; once
/// the job ends its instance goes (the ephemeral runner powers off) and the fleet is back to
/// `virtual-machines`.
#[test]
fn flush_runners_lets_a_busy_runner_finish_its_job() {
    let (mut env, busy, idle, job) = two_runners_one_busy();

    env.h.action("flush-runners").assert_ok();
    assert_eq!(env.h.action_record().failure, None);
    let after = env.instances();
    assert!(
        after.contains(&busy),
        "the busy runner was killed: {after:?}"
    );
    assert!(!after.contains(&idle), "the idle runner was not flushed");
    assert!(
        env.gh.runner(&busy).is_some_and(|r| r.busy && r.online),
        "its job was killed"
    );
    let logs = env.h.action_logs().join("\n");
    assert!(logs.contains("replaced once it ends"), "{logs}");

    env.reconcile().assert_ok();
    assert!(env.instances().contains(&busy), "{:?}", env.instances());
    let (status, message) = env.status();
    assert_eq!(status, "active", "{message}");
    assert!(
        message.contains("1 waiting for its job to end before replacement"),
        "{message}"
    );

    job_ends_then_the_fleet_is_back_to_two(&mut env, &busy, job);
}

/// force=true (a leaked token): the busy runner goes with its job, at once.
#[test]
fn flush_runners_force_true_kills_a_busy_runner() {
    let (mut env, busy, _idle, job) = two_runners_one_busy();
    env.h
        .world
        .action_params
        .insert("force".into(), serde_json::Value::Bool(true));

    env.h.action("flush-runners").assert_ok();
    env.h.world.action_params.clear();
    assert_eq!(env.h.action_record().failure, None);
    assert!(
        !env.instances().contains(&busy),
        "force=true kept the busy runner: {:?}",
        env.instances()
    );
    let logs = env.h.action_logs().join("\n");
    assert!(!logs.contains("pre-job"), "force waits for nothing: {logs}");
    assert!(env.gh.release_job(job));
}

/// A path change while a runner is busy: the old idle runner goes, the busy one keeps its
/// job through config-changed and the reconciles after it (the new path's GitHub answers
/// 404 for it), two runners serve the new path meanwhile, and once its job ended it is gone.
#[test]
fn a_path_change_lets_a_busy_runner_finish_its_job() {
    let (mut env, busy, idle, job) = two_runners_one_busy();
    let new_path = "octo/elsewhere";

    env.set_config("path", new_path);
    env.config_changed().assert_ok();
    let after = env.instances();
    assert!(
        after.contains(&busy),
        "the busy runner was killed: {after:?}"
    );
    assert!(
        !after.contains(&idle),
        "the old idle runner was not flushed"
    );
    env.reconcile().assert_ok();
    assert!(env.instances().contains(&busy), "{:?}", env.instances());
    assert!(
        env.gh.runner(&busy).is_some_and(|r| r.busy && r.online),
        "its job was killed"
    );
    let in_new_path = |s: &fake_github::Snapshot| {
        s.runners
            .iter()
            .filter(|r| r.path == new_path && r.online)
            .count()
    };
    assert!(
        env.gh
            .wait_until(charm_env::ONLINE_WITHIN, |s| in_new_path(s) == 2),
        "the new path has no 2 runners: {:?}",
        env.gh.runners()
    );

    job_ends_then_the_fleet_is_back_to_two(&mut env, &busy, job);
}

/// The held job ends: the busy runner's instance goes by itself (the ephemeral runner
/// powers off), and the next reconcile leaves 2 runners, none of them the old one.
fn job_ends_then_the_fleet_is_back_to_two(env: &mut CharmEnv, busy: &String, job: u64) {
    assert!(env.gh.release_job(job));
    assert!(
        env.wait_instances(GONE_WITHIN, |names| !names.contains(busy)),
        "the busy runner's instance outlived its job: {:?}",
        env.instances()
    );
    env.reconcile().assert_ok();
    let online = env.wait_online(2);
    assert!(!online.contains(busy));
    env.assert_runners(2);
}

/// Serve a different runner tarball under a new version (what a runner release does): the
/// same fake runner, every entry kept as it is, plus one file.
fn change_runner_binary(env: &CharmEnv) {
    let old = env.gh.runner_tarball();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&old[..]));
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for entry in archive.entries().expect("read the tarball") {
        let mut entry = entry.expect("tar entry");
        let header = entry.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("entry data");
        builder.append(&header, &data[..]).expect("copy entry");
    }
    let release = b"2.999.0\n";
    let mut header = tar::Header::new_gnu();
    header.set_path("RELEASE").expect("path");
    header.set_size(release.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append(&header, &release[..]).expect("append");
    let bytes = builder
        .into_inner()
        .and_then(|gz| gz.finish())
        .expect("finish the tarball");
    env.gh.set_runner_tarball(bytes);
    env.gh.set_runner_version("2.999.0");
}
