//! The scale-set listener process (`github-runner-worker --scale-set`, the real binary) on
//! the real LXD daemon against the fake scale set service: it creates the unit's scale set
//! and session; one job gets one runner instance (the unit's owner key, its registration id
//! recorded) whose fake runner comes online, runs the job and is gone after it, every
//! message acknowledged; SIGTERM deletes the session and the process exits, stopped.
//! A listener killed with SIGKILL loses no job: the next one serves what was queued
//! meanwhile and repairs what was left (a registration with no instance).

#[path = "support/executable.rs"]
mod executable;
#[path = "support/fake_scaleset/mod.rs"]
mod fake_scaleset;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;
#[path = "support/scaleset_process.rs"]
mod scaleset_process;

use fake_scaleset::{Endpoint, FakeRunner, JobState};
use github_runner::identity::OWNER_CONFIG_KEY;
use github_runner::manager::planner::RUNNER_ID_CONFIG_KEY;
use github_runner::paths::HostPaths;
use github_runner::scaleset::listener_state::ListenerPhase;
use lxd_fixture::{wait_for, LxdFixture};
use scaleset_process::{fake_for, owned, start_listener, terminate, OWNER, UNIT, WAIT};
use std::time::Duration;

#[test]
fn a_job_gets_one_lxd_runner_that_runs_it_and_goes_and_sigterm_ends_the_session() {
    let fx = LxdFixture::new();
    let fake = fake_for(&fx);
    let root = tempfile::tempdir().unwrap();
    let mut listener = start_listener(&fx, &fake, root.path(), 2);

    // The unit's scale set, named and labelled for the unit, and its session.
    assert!(
        fake.wait_until(WAIT, |st| st.sessions.len() == 1
            && st.scale_sets.values().any(|s| s.max_capacity == Some(2))),
        "scale set and session: {:?}\n{}",
        fake.sessions(),
        listener.log()
    );
    let session = fake.sessions().remove(0);
    assert_eq!(session.owner, OWNER);
    let set_id = session.scale_set_id;
    let set = fake.scale_set(set_id).unwrap();
    assert_eq!(set.name, "lxd-0");
    assert_eq!(set.labels, ["lxd-0", "lxd", "large"]);
    assert!(
        wait_for(Duration::from_secs(20), || matches!(
            listener.slot().listener.and_then(|l| l.phase),
            Some(ListenerPhase::Listening { .. })
        )),
        "the slot shows the listener listening: {:?}",
        listener.slot()
    );

    // One job: one runner instance of this unit, launched with its registration's id.
    let job = fake.enqueue_job(&["lxd"]);
    let queued = std::time::Instant::now();
    let mut instance = None;
    assert!(
        wait_for(WAIT, || {
            instance = owned(&fx).into_iter().next();
            instance.is_some()
        }),
        "a runner instance: {}",
        listener.log()
    );
    let instance = instance.unwrap();
    let launched = queued.elapsed();
    assert_eq!(
        instance.config.get(OWNER_CONFIG_KEY).map(String::as_str),
        Some(OWNER)
    );
    let registered = fake.runners();
    let runner = registered
        .iter()
        .find(|r| r.name == instance.name)
        .unwrap_or_else(|| {
            panic!(
                "{} registered in the scale set: {registered:?}",
                instance.name
            )
        });
    assert_eq!(runner.scale_set_id, set_id);
    assert_eq!(
        instance.config.get(RUNNER_ID_CONFIG_KEY),
        Some(&runner.id.to_string())
    );
    assert!(
        instance.name.starts_with("github-runner-0-") && instance.name.len() == 28,
        "named as pull runners are: {}",
        instance.name
    );

    // The fake runner comes online, takes the job, finishes it; the listener removes it.
    assert!(
        fake.wait_until(WAIT, |st| st.jobs[&job].state
            == JobState::Completed("succeeded".into())),
        "the job ran on the runner: {:?}\n{}",
        fake.job(&job),
        listener.log()
    );
    let ran = queued.elapsed();
    assert!(
        wait_for(WAIT, || owned(&fx).is_empty()),
        "the finished runner's instance is gone: {}",
        listener.log()
    );
    assert!(
        fake.wait_until(WAIT, |st| st.runners.is_empty()
            && st.scale_sets[&set_id].messages.is_empty()
            && st.scale_sets[&set_id].pending.is_empty()),
        "no registration left, every message acknowledged: {:?}",
        fake.runners()
    );
    eprintln!(
        "job queued -> instance {:.1}s, -> job done {:.1}s, -> instance gone {:.1}s",
        launched.as_secs_f64(),
        ran.as_secs_f64(),
        queued.elapsed().as_secs_f64()
    );
    assert_eq!(
        fake.requests_to(Endpoint::GenerateJitConfig).len(),
        1,
        "one runner for one job"
    );
    assert!(fx.instance_names().is_empty(), "{:?}", fx.instance_names());

    // Its time to runner, in the unit's metrics log the exporter reads.
    let metrics = HostPaths::for_unit(root.path(), UNIT).metrics_log();
    let lines = std::fs::read_to_string(&metrics).unwrap_or_default();
    let timed: Vec<serde_json::Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "scale_set_job_started")
        .collect();
    assert_eq!(timed.len(), 1, "{lines}");
    let (online, started) = (
        timed[0]["runner_online"].as_f64().unwrap(),
        timed[0]["job_started"].as_f64().unwrap(),
    );
    assert!(
        0.0 <= online && online <= started && started <= ran.as_secs_f64() + 1.0,
        "{online} {started}"
    );

    // SIGTERM: the session is deleted and the process exits, stopped (no crash).
    let status = terminate(&mut listener);
    assert!(status.success(), "{status:?}: {}", listener.log());
    assert!(fake.sessions().is_empty(), "SIGTERM deletes the session");
    let slot = listener.slot();
    assert!(slot.stopped, "{slot:?}");
    assert_eq!(
        slot.listener.and_then(|l| l.phase),
        Some(ListenerPhase::Stopped)
    );
    let log = listener.log();
    assert!(!log.contains(&fake.pat()), "no credential in the log");
}

#[test]
fn a_killed_listener_loses_no_job_and_the_next_one_repairs_what_it_left() {
    let fx = LxdFixture::new();
    let fake = fake_for(&fx);
    // A killed listener's session is taken over once it has not polled for 3 s (the
    // service's own expiry is minutes); polls answer within 1 s.
    fake.set_stale_session_after(Some(3));
    fake.set_poll_timeout(Duration::from_secs(1));
    let root = tempfile::tempdir().unwrap();
    let mut first = start_listener(&fx, &fake, root.path(), 2);
    assert!(
        fake.wait_until(WAIT, |st| st.sessions.len() == 1),
        "first session: {}",
        first.log()
    );
    let set_id = fake.sessions()[0].scale_set_id;
    let served = fake.enqueue_job(&["lxd"]);
    assert!(
        fake.wait_until(WAIT, |st| !matches!(
            st.jobs[&served].state,
            JobState::Queued
        ) && !owned(&fx).is_empty()),
        "the first job has a runner: {}",
        first.log()
    );

    // SIGKILL, with the first job's runner running or done.
    first.child.as_mut().unwrap().kill().unwrap();
    first.child.as_mut().unwrap().wait().unwrap();
    first.child = None;
    // Meanwhile: a job is queued, and a registration is left without an instance (what a
    // kill between the JIT config and the launch leaves).
    let queued_meanwhile = fake.enqueue_job(&["lxd"]);
    let leftover = fake.with_state(|st| {
        let id = st.next();
        st.runners.insert(
            id,
            FakeRunner {
                id,
                name: "github-runner-0-0123456789ab".into(),
                scale_set_id: set_id,
                online: false,
                busy: false,
                key: String::new(),
            },
        );
        id
    });

    let mut second = start_listener(&fx, &fake, root.path(), 2);
    let done = |st: &fake_scaleset::State, job: &str| {
        st.jobs[job].state == JobState::Completed("succeeded".into())
    };
    assert!(
        fake.wait_until(WAIT, |st| done(st, &served) && done(st, &queued_meanwhile)),
        "both jobs ran: {:?} {:?}\n{}",
        fake.job(&served),
        fake.job(&queued_meanwhile),
        second.log()
    );
    assert!(
        wait_for(WAIT, || owned(&fx).is_empty()),
        "no instance left: {:?}\n{}",
        fx.instance_names(),
        second.log()
    );
    assert!(
        fake.wait_until(WAIT, |st| st.runners.is_empty()
            && st.scale_sets[&set_id].messages.is_empty()
            && st.scale_sets[&set_id].pending.is_empty()),
        "no registration left, every message acknowledged: {:?}\n{}",
        fake.runners(),
        second.log()
    );
    let removed_leftover = fake
        .requests_to(Endpoint::DeleteRunner)
        .iter()
        .any(|r| r.path.ends_with(&format!("/agents/{leftover}")));
    assert!(
        removed_leftover,
        "the repair removed the leftover registration"
    );
    let generated = fake.requests_to(Endpoint::GenerateJitConfig).len();
    assert!(
        (2..=3).contains(&generated),
        "one runner per job, at most one surplus for the kill: {generated}"
    );
    let status = terminate(&mut second);
    assert!(status.success(), "{status:?}: {}", second.log());
    assert!(fake.sessions().is_empty(), "SIGTERM deletes the session");
}
