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
    let mut env = CharmEnv::new(1);
    env.h.world.leader = true;
    env.h.add_relation("mongodb", "mongodb", 1);
    let relation = env
        .h
        .world
        .relations
        .iter_mut()
        .find(|r| r.endpoint() == "mongodb")
        .expect("the relation just added");
    relation.remote_app_data.insert("uris".into(), mongo.uri());
    relation
        .remote_app_data
        .insert("database".into(), "github-runner-webhook-router".into());
    env.deploy();
    env.h.hook("mongodb-relation-changed").assert_ok();
    assert!(
        wait_for(Duration::from_secs(30), || workers(&env) == 1),
        "one worker from the relation's data: {:?}",
        env.status()
    );

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
    assert!(dirs.state.is_dir() && rule.is_file(), "reactive mode wrote them");
    env.h.hook("remove").assert_ok();
    assert!(!dirs.state.exists(), "{} left", dirs.state.display());
    assert!(!rule.exists(), "{} left", rule.display());
    assert!(dirs.logs.is_dir(), "the workers' logs stay");
}
