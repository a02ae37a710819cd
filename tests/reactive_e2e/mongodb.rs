//! Reactive mode from the `mongodb` relation end to end: the provider's `uris` point at the
//! MongoDB wire stand-in (mockupdb over an in-memory store), the real kombu MongoDB transport
//! puts the jobs, the charm's own worker (the official Rust driver) serves them on LXD
//! against the fake GitHub. A served job's message is gone; a job nobody takes is put back
//! with `X-Process-Count` 1 and kombu still reads it.

use crate::charm_env::{wait_for, CharmEnv, REPO};
use crate::kombu;
use crate::mongo_standin::MongoStandIn;
use crate::{body, metric_count, served_by_one_runner, workers, QUEUE};
use github_runner::paths::HostPaths;
use github_runner::reactive::mode::{logrotate_rule, unit_dirs};
use std::time::Duration;

#[test]
fn the_mongodb_relation_turns_reactive_mode_on_and_its_jobs_are_served() {
    let mongo = MongoStandIn::start(&kombu::python());
    let mut env = related_unit(&[("uris", &mongo.uri())]);
    deploy_until_one_worker(&mut env);

    // A queued job: one runner, online, handed the job; its message acked.
    let job = env.gh.add_job(REPO, &[]);
    kombu::put(&mongo.uri(), QUEUE, &[&body(&env.gh, job, &[])]);
    served_by_one_runner(&env, job);

    // A job nobody takes: its runner removed, the message back (not before a minute) with
    // its count, and kombu's own consumer reads it.
    let unpicked = env.gh.add_job(REPO, &[]);
    let unpicked_body = body(&env.gh, unpicked, &[]);
    kombu::put(&mongo.uri(), QUEUE, &[&unpicked_body]);
    assert!(
        wait_for(Duration::from_secs(60), || metric_count(
            &env,
            "\"reactive_job_requeued\""
        ) == 1),
        "requeued after the test-mode pickup bound"
    );
    assert!(wait_for(Duration::from_secs(30), || env
        .instances()
        .is_empty()));
    let back = kombu::get(&mongo.uri(), QUEUE, 5.0).expect("kombu reads the requeued message");
    assert_eq!(back["body"], unpicked_body.as_str(), "{back}");
    assert_eq!(back["headers"]["X-Process-Count"], 1, "{back}");
    assert!(
        kombu::get(&mongo.uri(), QUEUE, 0.5).is_none(),
        "the served job's message was acked"
    );

    env.h.hook("stop").assert_ok();
    assert_eq!(workers(&env), 0);
    assert!(env.instances().is_empty());

    // remove: nothing of the unit's reactive mode stays but its workers' logs.
    let paths = HostPaths::new(&env.h.host_root);
    let dirs = unit_dirs(&paths, &env.unit);
    let rule = logrotate_rule(&paths, &env.unit);
    assert!(
        dirs.state.is_dir() && rule.is_file(),
        "reactive mode wrote them"
    );
    env.h.hook("remove").assert_ok();
    assert!(!dirs.state.exists(), "{} left", dirs.state.display());
    assert!(!rule.exists(), "{} left", rule.display());
    assert!(dirs.logs.is_dir(), "the workers' logs stay");
}

/// The worker settings the charm last wrote (0600, root's: the test runs as root).
fn worker_settings(env: &CharmEnv) -> github_runner::reactive::run::WorkerSettings {
    let paths = github_runner::paths::HostPaths::new(&env.h.host_root);
    let file = github_runner::reactive::mode::unit_dirs(&paths, &env.unit).settings_file();
    serde_json::from_slice(&std::fs::read(file).expect("settings file")).expect("settings")
}

fn worker_pids(env: &CharmEnv) -> Vec<u32> {
    let paths = github_runner::paths::HostPaths::new(&env.h.host_root);
    github_runner::reactive::workers::survey(&github_runner::reactive::mode::unit_dirs(
        &paths, &env.unit,
    ))
    .iter()
    .map(|w| w.status.pid)
    .filter(|pid| *pid != 0)
    .collect()
}

/// A leader unit of one runner, related to a `mongodb` provider whose application data
/// holds `data` and the router's database.
fn related_unit(data: &[(&str, &str)]) -> CharmEnv {
    let mut env = CharmEnv::new(1);
    env.h.world.leader = true;
    env.h.add_relation("mongodb", "mongodb", 1);
    let relation = mongodb_relation(&mut env);
    for (key, value) in data
        .iter()
        .chain(&[("database", "github-runner-webhook-router")])
    {
        relation
            .remote_app_data
            .insert(key.to_string(), value.to_string());
    }
    env
}

/// Deployed, then the relation's data read: one worker up.
fn deploy_until_one_worker(env: &mut CharmEnv) {
    env.deploy();
    env.h.hook("mongodb-relation-changed").assert_ok();
    assert!(
        wait_for(Duration::from_secs(30), || workers(env) == 1),
        "one worker from the relation: {:?}",
        env.status()
    );
}

fn mongodb_relation(env: &mut CharmEnv) -> &mut github_runner::juju::fake::FakeRelation {
    env.h
        .world
        .relations
        .iter_mut()
        .find(|r| r.endpoint() == "mongodb")
        .expect("the mongodb relation")
}

/// A unit serving from a `mongodb` relation whose credentials are in the provider's Juju
/// secret (`secret_uri`), over the stand-in; one worker up.
fn reactive_from_the_relations_secret(
    mongo: &MongoStandIn,
    secret_uri: &str,
) -> (CharmEnv, Vec<u32>) {
    let mut env = related_unit(&[("secret-user", secret_uri)]);
    env.h
        .world
        .secrets
        .insert(secret_uri.into(), credentials(&mongo.uri()));
    deploy_until_one_worker(&mut env);
    assert_eq!(worker_settings(&env).mq_uri, mongo.uri());
    let pids = worker_pids(&env);
    (env, pids)
}

fn credentials(uris: &str) -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::from([
        ("uris".to_string(), uris.to_string()),
        ("username".to_string(), "relation-10".to_string()),
    ])
}

/// Issue 20 item 7. A relation unusable for a moment (its provider unit replaced, a
/// failing `relation-get`, an unreadable secret) keeps the unit reactive on its last broker,
/// Waiting with the reason, with no pull runner made; a failing hook tool fails the hook.
#[test]
fn a_transient_relation_problem_keeps_reactive_mode_on_the_last_broker() {
    let mongo = MongoStandIn::start(&kombu::python());
    let secret_uri = "secret://model-uuid/d7mongocreds";
    let (mut env, first) = reactive_from_the_relations_secret(&mongo, secret_uri);

    // The provider unit goes for a moment (a MongoDB unit replaced).
    let units = std::mem::take(&mut mongodb_relation(&mut env).remote_units);
    env.h.hook("mongodb-relation-changed").assert_ok();
    let (kind, message) = env.status();
    assert_eq!(kind, "waiting", "{message}");
    assert!(message.contains("no provider unit"), "{message}");
    env.h.hook("update-status").assert_ok();
    assert_eq!(
        env.status(),
        (kind, message),
        "update-status keeps the reason"
    );
    assert_eq!(worker_pids(&env), first, "the workers kept running");
    assert!(env.instances().is_empty(), "no pull runner was made");
    mongodb_relation(&mut env).remote_units = units;

    // A failing relation-get fails the hook (Juju retries it); nothing switched meanwhile.
    env.h
        .fail_tool("relation-get", 1, "ERROR cannot read relation settings");
    let failed = env.h.hook("mongodb-relation-changed");
    assert_ne!(failed.code, 0, "{failed:?}");
    env.h.world.failing.clear();
    assert_eq!(worker_pids(&env), first);
    assert!(env.instances().is_empty());

    // The secret unreadable for a moment: still on the last broker.
    let content = env.h.world.secrets.remove(secret_uri).unwrap();
    env.h.hook("mongodb-relation-changed").assert_ok();
    assert_eq!(env.status().0, "waiting", "{:?}", env.status());
    assert_eq!(worker_pids(&env), first);
    assert!(env.instances().is_empty());
    env.h.world.secrets.insert(secret_uri.into(), content);

    // Back: Active again on the same workers. Then the relation really goes: pull mode.
    env.h.hook("mongodb-relation-changed").assert_ok();
    assert!(
        env.status().1.starts_with("reactive:"),
        "{:?}",
        env.status()
    );
    assert_eq!(worker_pids(&env), first);
    env.h.hook("mongodb-relation-broken").assert_ok();
    assert!(wait_for(Duration::from_secs(30), || workers(&env) == 0));
    env.h.hook("stop").assert_ok();
}

/// Issue 20 item 4. The provider's new revision of its credentials secret reaches the
/// workers at `secret-changed` (Juju pins a consumer to the revision it read until
/// `--refresh`), and a job is served on it. A provider asking for TLS blocks the unit
/// instead of a plaintext try.
#[test]
fn the_relations_secret_revisions_are_followed_and_tls_blocks() {
    let mongo = MongoStandIn::start(&kombu::python());
    let secret_uri = "secret://model-uuid/d4mongocreds";
    let (mut env, first) = reactive_from_the_relations_secret(&mongo, secret_uri);

    // The provider rotates its credentials: a new revision. An ordinary hook still reads
    // the tracked one; secret-changed follows the new one and the workers restart on it.
    let rotated = format!("{}?appName=rotated", mongo.uri());
    env.h
        .world
        .secrets
        .insert(secret_uri.into(), credentials(&rotated));
    env.reconcile().assert_ok();
    assert_eq!(
        worker_settings(&env).mq_uri,
        mongo.uri(),
        "pinned until refreshed"
    );
    env.h
        .hook_with(
            "secret-changed",
            &[("JUJU_SECRET_ID", "secret:d4mongocreds")],
        )
        .assert_ok();
    assert_eq!(worker_settings(&env).mq_uri, rotated);
    assert!(
        wait_for(Duration::from_secs(30), || {
            let now = worker_pids(&env);
            now.len() == 1 && now != first
        }),
        "the worker restarted on the new revision: {:?}",
        worker_pids(&env)
    );
    let job = env.gh.add_job(REPO, &[]);
    kombu::put(&mongo.uri(), QUEUE, &[&body(&env.gh, job, &[])]);
    served_by_one_runner(&env, job);

    // TLS asked for: Blocked, the workers stop, no plaintext try.
    mongodb_relation(&mut env)
        .remote_app_data
        .insert("tls".into(), "true".into());
    env.h.hook("mongodb-relation-changed").assert_ok();
    assert_eq!(
        env.status(),
        (
            "blocked".to_string(),
            github_runner::messages::MONGODB_TLS_UNSUPPORTED.to_string()
        )
    );
    assert!(wait_for(Duration::from_secs(30), || workers(&env) == 0));
    env.h.hook("stop").assert_ok();
}
