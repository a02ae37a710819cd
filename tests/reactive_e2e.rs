//! Reactive mode end to end through `dispatch`: the real binary with the fake hook tools,
//! the real LXD daemon, the fake GitHub, a real redis-server on loopback fed by the real
//! kombu producer, and the charm's own detached workers. `kill_trials`: at-least-once under
//! SIGKILL of those workers. `mongodb`: the same from the `mongodb` relation, over the
//! MongoDB wire stand-in fed by kombu's MongoDB transport.

#[path = "support/charm_env/mod.rs"]
mod charm_env;
#[path = "support/claim_files.rs"]
mod claim_files;
#[path = "support/executable.rs"]
mod executable;
#[path = "support/fake_github/mod.rs"]
mod fake_github;
#[path = "support/juju_harness/mod.rs"]
mod juju_harness;
#[path = "support/kombu/mod.rs"]
mod kombu;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;
#[path = "support/redis_server/mod.rs"]
mod redis_server;

#[path = "support/mongo_standin/mod.rs"]
mod mongo_standin;

#[path = "reactive_e2e/kill_trials.rs"]
mod kill_trials;
#[path = "reactive_e2e/mongodb.rs"]
mod mongodb;

use charm_env::{wait_for, CharmEnv, REPO};
use fake_github::FakeGitHub;
use github_runner::paths::HostPaths;
use github_runner::reactive::mode::unit_dirs;
use github_runner::reactive::workers::survey;
use redis_server::RedisServer;
use std::collections::BTreeMap;
use std::time::Duration;

const QUEUE: &str = "github-runner";

/// The webhook router's message for `job`.
fn body(gh: &FakeGitHub, job: u64, labels: &[&str]) -> String {
    serde_json::json!({
        "labels": labels,
        "status": "queued",
        "url": format!("{}/repos/{REPO}/actions/jobs/{job}", gh.api_base()),
    })
    .to_string()
}

fn workers(env: &CharmEnv) -> usize {
    let paths = HostPaths::new(&env.h.host_root);
    survey(&unit_dirs(&paths, &env.unit))
        .iter()
        .filter(|w| w.status.pid != 0)
        .count()
}

/// The live workers' (pid, start time) by slot.
fn worker_pids(env: &CharmEnv) -> BTreeMap<u32, (u32, u64)> {
    let paths = HostPaths::new(&env.h.host_root);
    survey(&unit_dirs(&paths, &env.unit))
        .into_iter()
        .filter(|w| w.status.pid != 0)
        .map(|w| (w.slot, (w.status.pid, w.status.started_ms)))
        .collect()
}

/// Waits until exactly `n` workers live (the stopped ones gone) and answers them.
fn settle_at(env: &CharmEnv, n: usize) -> BTreeMap<u32, (u32, u64)> {
    assert!(
        wait_for(Duration::from_secs(60), || worker_pids(env).len() == n),
        "wanted {n} workers, have {:?}",
        worker_pids(env)
    );
    worker_pids(env)
}

fn metric_count(env: &CharmEnv, needle: &str) -> usize {
    let paths = HostPaths::for_unit(&env.h.host_root, &env.h.unit_name);
    std::fs::read_to_string(paths.metrics_log())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// The queued `job` whose message was put: one runner comes online, GitHub hands it the
/// job, it completes, and the runner is gone.
fn served_by_one_runner(env: &CharmEnv, job: u64) {
    let mut runner = None;
    assert!(env.gh.wait_until(Duration::from_secs(90), |s| {
        runner = s.runners.iter().find(|r| r.online).map(|r| r.name.clone());
        runner.is_some()
    }));
    assert!(env.gh.dispatch_job(job, runner.as_deref().unwrap()));
    assert!(env.gh.wait_until(Duration::from_secs(60), |s| s
        .jobs
        .iter()
        .any(|j| j.id == job && j.status == "completed")));
    assert!(wait_for(Duration::from_secs(60), || env
        .instances()
        .is_empty()));
}

/// Issue 20 item 6: a reactive round records the scope (token, path, group, labels) it
/// acted on, as a pull round does. A scope change made while reactive, then a return to
/// pull mode, must not flush again against the record pull mode left before reactive.
#[test]
fn a_scope_change_while_reactive_is_recorded_and_pull_mode_later_compares_with_it() {
    let redis = RedisServer::start();
    let mut env = CharmEnv::new(1);
    env.set_config("labels", "before");
    env.deploy();
    env.wait_online(1);
    assert_eq!(
        env.h.unit_state().get("acted-labels").map(String::as_str),
        Some("before")
    );

    env.set_config("mq-uri", redis.uri());
    env.config_changed().assert_ok();
    assert!(wait_for(Duration::from_secs(30), || workers(&env) == 1));
    env.set_config("labels", "scopechange");
    env.config_changed().assert_ok();
    assert_eq!(
        env.h.unit_state().get("acted-labels").map(String::as_str),
        Some("scopechange"),
        "the reactive round recorded what it acted on"
    );
    assert!(wait_for(Duration::from_secs(30), || workers(&env) == 1));

    // Back to pull mode: nothing changed since reactive mode acted, so no scope flush.
    env.set_config("mq-uri", "");
    env.config_changed().assert_ok();
    assert_eq!(workers(&env), 0);
    let flush = github_runner::messages::config_change_flush(&["labels"]);
    assert!(
        !env.h.statuses().iter().any(|s| s.message == flush),
        "{:?}",
        env.h.statuses()
    );
    env.wait_online(1);
    env.h.hook("stop").assert_ok();
}

#[test]
fn reactive_mode_serves_queued_jobs_drops_bad_messages_and_stops_clean() {
    let redis = RedisServer::start();
    let mut env = CharmEnv::new(2);
    env.set_config("mq-uri", redis.uri());
    env.deploy();
    assert!(
        wait_for(Duration::from_secs(30), || workers(&env) == 2),
        "two workers"
    );
    env.reconcile().assert_ok();
    assert!(
        env.status().1.starts_with("reactive: 2/2 workers"),
        "{:?}",
        env.status()
    );

    // A queued job: one runner, online, handed the job, gone after it.
    let job = env.gh.add_job(REPO, &[]);
    kombu::put(&redis.uri(), QUEUE, &[&body(&env.gh, job, &[])]);
    served_by_one_runner(&env, job);

    // A job already running: no runner. Unsupported labels and a malformed message: dropped.
    let running = env.gh.add_job(REPO, &[]);
    env.gh
        .update_job(running, |j| j.status = "in_progress".into());
    kombu::put(
        &redis.uri(),
        QUEUE,
        &[
            &body(&env.gh, running, &[]),
            &body(&env.gh, job + 100, &["gpu"]),
            "not json",
        ],
    );
    assert!(wait_for(Duration::from_secs(30), || {
        metric_count(&env, "reactive_job_received") >= 4
            && metric_count(&env, "reactive_job_dropped") >= 2
    }));
    assert_eq!(metric_count(&env, "reactive_runner_spawned"), 1);
    assert!(
        kombu::get(&redis.uri(), QUEUE, 0.5).is_none(),
        "nothing left"
    );
    assert_eq!(workers(&env), 2, "workers kept running");

    // A job nobody hands to the runner: requeued with its count, the runner removed.
    let unpicked = env.gh.add_job(REPO, &[]);
    kombu::put(&redis.uri(), QUEUE, &[&body(&env.gh, unpicked, &[])]);
    assert!(
        wait_for(Duration::from_secs(60), || {
            metric_count(&env, "\"reactive_job_requeued\"") == 1
        }),
        "requeued after the test-mode pickup bound"
    );
    let log = std::fs::read_to_string(
        HostPaths::for_unit(&env.h.host_root, &env.h.unit_name).metrics_log(),
    )
    .unwrap();
    assert!(log.contains("\"process_count\":1"), "{log}");
    assert!(wait_for(Duration::from_secs(30), || env
        .instances()
        .is_empty()));
    assert_eq!(env.gh.job(unpicked).unwrap().status, "queued");

    // Scale to 0 while a worker holds a job (its runner online, waiting for the job): the
    // worker removes its unused runner and hands the message back before it exits.
    let held = env.gh.add_job(REPO, &[]);
    let held_body = body(&env.gh, held, &[]);
    kombu::put(&redis.uri(), QUEUE, &[&held_body]);
    assert!(env.gh.wait_until(Duration::from_secs(90), |s| s
        .runners
        .iter()
        .any(|r| r.online)));
    env.set_config("virtual-machines", 0);
    env.config_changed().assert_ok();
    assert!(wait_for(Duration::from_secs(30), || workers(&env) == 0));
    assert!(wait_for(Duration::from_secs(30), || env
        .instances()
        .is_empty()));
    let back = kombu::get(&redis.uri(), QUEUE, 5.0).expect("the held message is back");
    assert_eq!(back["body"], held_body.as_str(), "{back}");
    assert_eq!(env.gh.job(held).unwrap().status, "queued");
    env.set_config("virtual-machines", 1);
    env.config_changed().assert_ok();
    assert!(wait_for(Duration::from_secs(30), || workers(&env) == 1));
    env.h.hook("stop").assert_ok();
    assert_eq!(workers(&env), 0);
    assert!(env.instances().is_empty());
}

/// Issue 20 item 8: `virtual-machines` scales the workers (new ones in free slots; surplus
/// ones stopped idle first, newest first) and restarts none; a change of something workers
/// read (`labels`) restarts them all.
#[test]
fn virtual_machines_scales_the_workers_and_only_what_they_read_restarts_them() {
    let redis = RedisServer::start();
    let mut env = CharmEnv::new(3);
    env.set_config("mq-uri", redis.uri());
    env.deploy();
    let three = settle_at(&env, 3);

    env.set_config("virtual-machines", 5);
    env.config_changed().assert_ok();
    let five = settle_at(&env, 5);
    for (slot, worker) in &three {
        assert_eq!(
            five.get(slot),
            Some(worker),
            "slot {slot} kept its worker: {five:?}"
        );
    }

    env.set_config("virtual-machines", 2);
    env.config_changed().assert_ok();
    let two = settle_at(&env, 2);
    // All idle: the two oldest stay.
    let mut by_age: Vec<(&u32, &(u32, u64))> = five.iter().collect();
    by_age.sort_by_key(|(slot, (_, started))| (*started, **slot));
    let oldest: BTreeMap<u32, (u32, u64)> =
        by_age.into_iter().take(2).map(|(s, w)| (*s, *w)).collect();
    assert_eq!(two, oldest);

    env.set_config("labels", "large");
    env.config_changed().assert_ok();
    assert!(
        wait_for(Duration::from_secs(60), || {
            let now = worker_pids(&env);
            now.len() == 2 && now.values().all(|w| !two.values().any(|old| old.0 == w.0))
        }),
        "every worker restarted for the new labels: {:?} then {:?}",
        two,
        worker_pids(&env)
    );
    env.h.hook("stop").assert_ok();
}

/// Issue 20 item 11: on a machine run by systemd, the charm starts each worker through
/// `systemd-run --scope` in a scope named after the unit and slot, so the unit agent's
/// restart (systemd stopping the agent's cgroup) does not reach it. The recording
/// systemd-run on the hook's PATH execs the worker, as the real one does.
#[test]
fn on_a_systemd_machine_workers_start_in_scopes_of_their_own() {
    let redis = RedisServer::start();
    let mut env = CharmEnv::new(2);
    env.set_config("mq-uri", redis.uri());
    std::fs::create_dir_all(HostPaths::new(&env.h.host_root).systemd_booted_marker()).unwrap();
    executable::copy_executable(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake_systemd_run.sh"),
        &env.bin_dir.join("systemd-run"),
    );
    env.deploy();
    let live = settle_at(&env, 2);
    let calls = std::fs::read_to_string(env.bin_dir.join("calls")).unwrap_or_default();
    let scopes: Vec<&str> = calls.lines().filter(|l| l.contains(" --scope ")).collect();
    assert_eq!(scopes.len(), 2, "{calls}");
    for (slot, (pid, _)) in &live {
        let call = scopes
            .iter()
            .find(|c| c.starts_with(&format!("{pid} ")))
            .unwrap_or_else(|| panic!("worker {pid} is not a scope's process: {calls}"));
        assert!(
            call.contains(&format!(
                "--unit=github-runner-worker-github-runner-0-{slot}-"
            )) && call.contains(" -- ")
                && call.ends_with(&format!("--slot {slot}")),
            "{call}"
        );
    }
    env.h.hook("stop").assert_ok();
    assert!(worker_pids(&env).is_empty());
    for call in scopes {
        if let Some(name) = call.split(' ').find_map(|a| a.strip_prefix("--unit=")) {
            let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/systemd/{name}.scope"));
        }
    }
}
