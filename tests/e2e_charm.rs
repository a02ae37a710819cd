//! End-to-end: the real charm binary through `dispatch` (fake hook tools), the real LXD
//! daemon (a project per test, busybox containers running the fake runner) and the fake
//! GitHub. Each test deploys a unit and drives it with the events Juju would send.
//!
//! Waits are bounded and on conditions: the fake's condition variable for registrations,
//! a bounded poll of LXD for instances. See tests/support/charm_env.

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

use charm_env::{utc_hh_mm, CharmEnv, GONE_WITHIN};
use fake_github::{Endpoint, Fault};
use serde_json::Value;
use std::collections::BTreeSet;

/// A deployed unit with `n` runners online.
fn deployed(n: u32) -> CharmEnv {
    let mut env = CharmEnv::new(n);
    env.deploy();
    env.wait_online(n as usize);
    env.assert_runners(n as usize);
    env
}

/// The last action's results (dotted keys nest, as Juju shows them) and failure message.
fn action_record(env: &CharmEnv) -> (Value, Option<String>) {
    let record = env.h.action_record();
    (Value::Object(record.results), record.failure)
}

fn result<'a>(results: &'a Value, key: &str) -> Option<&'a str> {
    let mut value = results;
    for part in key.split('.') {
        value = value.get(part)?;
    }
    value.as_str()
}

fn set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

#[test]
fn install_config_changed_start_bring_three_runners_online() {
    let mut env = CharmEnv::new(3);
    env.deploy();
    // No churn: start does not replace the runners config-changed made moments before (the
    // Python charm flushed and recreated them).
    assert_eq!(
        env.gh.count(Endpoint::GenerateJitConfig),
        3,
        "registrations on deploy"
    );
    assert_eq!(
        env.gh.count(Endpoint::DeleteRunner),
        0,
        "deletions on deploy"
    );
    let online = env.wait_online(3);
    assert_eq!(env.assert_runners(3), online);
    for name in &online {
        assert!(
            env.unit.owns_name(name),
            "{name} is not named after the unit"
        );
    }
    // Once they are online, a reconcile changes nothing and reports them all.
    let before = env.gh.count(Endpoint::GenerateJitConfig);
    env.reconcile().assert_ok();
    assert_eq!(env.gh.count(Endpoint::GenerateJitConfig), before);
    assert_eq!(env.assert_runners(3), online);
    let (status, message) = env.status();
    assert_eq!(status, "active", "{message}");
    assert!(message.starts_with("3/3 runners"), "{message}");
}

#[test]
fn scales_down_to_one_then_up_to_five() {
    let mut env = deployed(3);
    let three = env.instances();

    env.set_config("virtual-machines", 1);
    env.config_changed().assert_ok();
    env.reconcile().assert_ok();
    let one = env.assert_runners(1);
    assert!(
        three.contains(&one[0]),
        "scaling down kept an existing runner"
    );
    assert!(env.gh.wait_until(GONE_WITHIN, |s| s.runners.len() == 1));

    env.set_config("virtual-machines", 5);
    env.config_changed().assert_ok();
    env.reconcile().assert_ok();
    let five = env.wait_online(5);
    assert_eq!(env.assert_runners(5), five);
    assert!(
        five.contains(&one[0]),
        "scaling up kept the existing runner"
    );
}

#[test]
fn flush_runners_action_replaces_every_runner() {
    let mut env = deployed(3);
    let before = env.instances();

    env.h.action("flush-runners").assert_ok();
    let (results, failure) = action_record(&env);
    assert_eq!(failure, None);
    for key in [
        "online",
        "offline",
        "unknown",
        "runners",
        "delta.virtual-machines",
    ] {
        assert!(
            result(&results, key).is_some(),
            "flush-runners result lacks {key}: {:?}",
            results
        );
    }
    let after = env.assert_runners(3);
    assert!(
        set(&before).is_disjoint(&set(&after)),
        "flushed runners survived: before {before:?}, after {after:?}"
    );
    env.wait_online(3);
}

#[test]
fn check_runners_counts_online_offline_and_unknown() {
    let mut env = deployed(3);
    let names = env.instances();
    assert!(env.gh.set_runner_online(&names[0], false));
    let stray = format!("{}0123456789ab", env.unit.name_prefix());
    env.launch_unregistered_instance(&stray);
    env.gh.clear_requests();

    env.h.action("check-runners").assert_ok();
    let (results, failure) = action_record(&env);
    assert_eq!(failure, None);
    assert_eq!(result(&results, "online"), Some("2"), "{:?}", results);
    assert_eq!(result(&results, "offline"), Some("1"), "{:?}", results);
    assert_eq!(result(&results, "unknown"), Some("1"), "{:?}", results);
    assert_eq!(
        result(&results, "runners"),
        Some(names[1..].join(", ").as_str()),
        "{:?}",
        results
    );
    // check-runners only looks: one listing, nothing created or deleted.
    assert_eq!(env.gh.count(Endpoint::DeleteRunner), 0);
    assert_eq!(env.gh.count(Endpoint::GenerateJitConfig), 0);
    assert_eq!(env.instances().len(), 4);
}

/// A new token for the same path keeps every runner (a registration belongs to the path,
/// not to the token that made it), and nothing after the switch uses the old token, which
/// may be revoked already.
#[test]
fn a_token_change_keeps_the_runners_and_never_uses_the_revoked_old_token() {
    let mut env = deployed(2);
    let old_runners = env.instances();
    let old_token = env.gh.token();
    let new_token = "ghp_NEWtoken0123456789abcdefghijklmnopq";
    env.gh.add_token(new_token);
    env.gh.revoke_token(&old_token);
    env.gh.clear_requests();

    env.set_config("token", new_token);
    let changed = env.config_changed();
    changed.assert_ok();
    assert!(
        env.assert_secrets_kept(&changed, &[&old_token, new_token]),
        "no 0600 credentials file under the state dir after config-changed"
    );
    let reconciled = env.reconcile();
    reconciled.assert_ok();
    assert!(env.assert_secrets_kept(&reconciled, &[&old_token, new_token]));

    let requests = env.gh.requests();
    assert!(!requests.is_empty());
    for r in requests.iter().filter(|r| r.endpoint.is_api()) {
        let auth = r.header("authorization").unwrap_or("");
        assert!(
            auth.ends_with(new_token),
            "{} {} not with the new token",
            r.method,
            r.path
        );
    }
    assert_eq!(env.gh.count(Endpoint::DeleteRunner), 0);
    assert_eq!(env.gh.count(Endpoint::GenerateJitConfig), 0);
    assert_eq!(env.status().0, "active", "{:?}", env.status());
    assert_eq!(set(&env.assert_runners(2)), set(&old_runners));
}

#[test]
fn invalid_config_blocks_and_leaves_the_runners_alone() {
    let mut env = deployed(2);
    let before = env.instances();
    env.gh.clear_requests();

    env.set_config("virtual-machines", -1);
    env.config_changed().assert_ok();
    let (status, message) = env.status();
    assert_eq!(status, "blocked", "{message}");
    assert!(message.contains("virtual-machines"), "{message}");

    // The timer keeps firing: still blocked, still nothing touched.
    env.reconcile().assert_ok();
    assert_eq!(env.status().0, "blocked");
    assert_eq!(env.assert_runners(2), before);
    assert_eq!(env.gh.count(Endpoint::DeleteRunner), 0);
    assert_eq!(env.gh.count(Endpoint::GenerateJitConfig), 0);
    assert_eq!(env.online(), before);
}

#[test]
fn a_server_error_storm_during_reconcile_is_maintenance_and_loses_no_runner() {
    let mut env = deployed(2);
    let before = env.instances();

    env.gh.inject_always(Fault::ServerError(502), None);
    env.reconcile().assert_ok();
    let (status, message) = env.status();
    assert_eq!(status, "maintenance", "{message}");
    assert_eq!(env.assert_runners(2), before);

    env.gh.clear_faults();
    env.reconcile().assert_ok();
    assert_eq!(env.status().0, "active", "{:?}", env.status());
    assert_eq!(env.assert_runners(2), before);
    assert_eq!(env.online(), before);
}

#[test]
fn a_server_error_storm_on_registration_mid_scale_up_is_maintenance_and_leaves_no_orphan() {
    let mut env = deployed(1);
    let before = env.instances();

    // The listing works, every registration of a new runner fails: the round is half done.
    env.gh
        .inject_always(Fault::ServerError(503), Some(Endpoint::GenerateJitConfig));
    env.set_config("virtual-machines", 3);
    env.config_changed().assert_ok();
    env.reconcile().assert_ok();
    let (status, message) = env.status();
    assert_eq!(status, "maintenance", "{message}");
    assert!(
        env.gh.count(Endpoint::GenerateJitConfig) > 0,
        "no creation was tried"
    );
    assert_eq!(
        env.assert_runners(1),
        before,
        "a failed creation left something behind"
    );

    env.gh.clear_faults();
    env.reconcile().assert_ok();
    let after = env.wait_online(3);
    assert!(after.contains(&before[0]), "the existing runner was lost");
    env.assert_runners(3);
}

#[test]
fn the_primary_rate_limit_names_the_reset_time() {
    let mut env = deployed(1);
    let before = env.instances();
    let reset = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1800;

    env.gh.exhaust_primary(reset);
    env.reconcile().assert_ok();
    let (status, message) = env.status();
    assert_eq!(status, "maintenance", "{message}");
    let hh_mm = utc_hh_mm(reset);
    assert!(
        message.contains(&hh_mm) && message.contains("UTC"),
        "status does not name the reset time {hh_mm} UTC: {message}"
    );
    assert_eq!(env.assert_runners(1), before);
}

#[test]
fn a_runner_that_finishes_its_job_is_replaced() {
    let mut env = deployed(2);
    let before = env.instances();
    let finished = before[0].clone();

    // Held, so a reconcile sees the runner busy (runner_start), then released.
    let job = env.gh.assign_held_job(&finished).expect("assign a job");
    assert!(
        env.gh
            .wait_until(GONE_WITHIN, |s| s.runner(&finished).is_some_and(|r| r.busy)),
        "the runner did not take its job"
    );
    // The job-started hook ran in the instance (what the next reconcile reads).
    let pre_job = "/home/ubuntu/github-runner-metrics/pre-job.json";
    assert!(
        lxd_fixture::wait_for(GONE_WITHIN, || env
            .fx
            .lxc(&["exec", &finished, "--", "test", "-s", pre_job])
            .status
            .success()),
        "the job-started hook did not write {pre_job}"
    );
    env.reconcile().assert_ok();
    assert!(env.gh.release_job(job));
    assert!(
        env.gh
            .wait_until(GONE_WITHIN, |s| s.runner(&finished).is_none()
                && s.jobs
                    .iter()
                    .any(|j| j.id == job && j.status == "completed")),
        "the runner did not finish its job"
    );
    assert!(
        env.wait_instances(GONE_WITHIN, |names| !names.contains(&finished)),
        "the finished runner's instance did not power off and disappear: {:?}",
        env.instances()
    );

    env.reconcile().assert_ok();
    let after = env.wait_online(2);
    assert!(!after.contains(&finished));
    assert!(after.contains(&before[1]), "the other runner was kept");
    env.assert_runners(2);

    let log =
        github_runner::paths::HostPaths::for_unit(&env.h.host_root, &env.h.unit_name).metrics_log();
    let text = std::fs::read_to_string(&log).expect("read the metrics log");
    let jobs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter(|l| l["event"] == "runner_start" || l["event"] == "runner_stop")
        .collect();
    assert_eq!(jobs.len(), 2, "{text}");
    assert_eq!(jobs[0]["event"], "runner_start");
    assert_eq!(jobs[0]["workflow"], "fake-workflow");
    assert_eq!(jobs[0]["repo"], charm_env::REPO);
    assert_eq!(jobs[0]["github_event"], "workflow_dispatch");
    assert!(jobs[0]["idle"].as_f64().is_some_and(|s| s >= 0.0), "{text}");
    assert_eq!(jobs[1]["event"], "runner_stop");
    assert_eq!(jobs[1]["status"], "normal");
    assert_eq!(jobs[1]["workflow"], "fake-workflow");
    // The job's conclusion, from one listing of its run's jobs (GitHub has it by then).
    assert_eq!(jobs[1]["job_conclusion"], "success", "{text}");
    assert_eq!(env.gh.count(Endpoint::ListRunJobs), 1);
}
