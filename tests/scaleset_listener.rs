//! The scale-set listener loop (`github_runner::scaleset::listener`) over the real client
//! against the fake scale set service (`tests/support/fake_scaleset`), with the runner side
//! in memory: jobs assigned -> runners made from JIT configs, started and completed ->
//! removed, every message acknowledged, stop -> no session. Waits are on the fake's
//! conditions with deadlines; token lifetimes and the listener's waits on a manual clock.

#[path = "support/fake_scaleset/mod.rs"]
mod fake_scaleset;

use fake_scaleset::{Endpoint, FakeScaleSetService, JobState};
use github_runner::clock::ManualClock;
use github_runner::scaleset::ledger::MemoryLedger;
use github_runner::scaleset::listener::{Listener, ListenerEdges, ListenerReport};
use github_runner::scaleset::listener_state::{ListenerConfig, ListenerPhase, MessageCursor};
use github_runner::scaleset::memory_runners::MemoryRunners;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Cursor(Mutex<i64>);

impl MessageCursor for Cursor {
    fn load(&self, _: u64) -> i64 {
        *self.0.lock().unwrap()
    }
    fn store(&self, _: u64, last: i64) -> std::io::Result<()> {
        *self.0.lock().unwrap() = last;
        Ok(())
    }
}

#[derive(Default)]
struct Phases(Mutex<Vec<ListenerPhase>>);

impl ListenerReport for Phases {
    fn phase(&self, phase: &ListenerPhase) {
        self.0.lock().unwrap().push(phase.clone());
    }
}

/// Scale set `lxd-0` of unit `github-runner-0` with `labels`, at most `max_runners`.
fn config(labels: &[&str], max_runners: u32) -> ListenerConfig {
    ListenerConfig {
        scale_set_name: "lxd-0".into(),
        runner_group: "default".into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
        owner: "github-runner-0".into(),
        max_runners,
        min_idle: 0,
        work_folder: String::new(),
        bootstrap_timeout: Duration::from_secs(600),
    }
}

#[test]
fn jobs_get_jit_runners_which_go_when_done_every_message_acked_and_stop_ends_the_session() {
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let fake = FakeScaleSetService::start(clock.clone());
    fake.set_poll_timeout(Duration::from_millis(200));
    let client = fake.client("octo/hello", clock.clone());
    let runners = MemoryRunners::new("github-runner-0", clock.clone());
    let cursor = Cursor::default();
    let ledger = MemoryLedger::default();
    let phases = Phases::default();
    let stop = AtomicBool::new(false);
    let config = config(&["jammy"], 4);
    let jitter = || 0.5;
    std::thread::scope(|scope| {
        let listener = scope.spawn(|| {
            let edges = ListenerEdges {
                api: &client,
                runners: &runners,
                cursor: &cursor,
                ledger: &ledger,
                report: &phases,
                clock: &*clock,
                jitter: &jitter,
            };
            Listener::new(config.clone(), edges).run(&stop)
        });

        assert!(
            fake.wait_until(WAIT, |st| st
                .scale_sets
                .values()
                .any(|s| s.max_capacity == Some(4))),
            "the listener polls with its capacity"
        );
        let set_id = fake.sessions()[0].scale_set_id;
        let scale_set = fake.scale_set(set_id).unwrap();
        assert_eq!(scale_set.name, "lxd-0");
        assert_eq!(scale_set.labels, ["lxd-0", "jammy"]);

        let jobs = [fake.enqueue_job(&["lxd-0"]), fake.enqueue_job(&["jammy"])];
        let all_acked = |st: &fake_scaleset::State| {
            st.scale_sets
                .get(&set_id)
                .is_some_and(|s| s.pending.is_empty() && s.messages.is_empty())
        };
        assert!(
            fake.wait_until(WAIT, |st| all_acked(st)
                && st.runners.len() == 2
                && jobs
                    .iter()
                    .all(|j| st.jobs[j].state == JobState::Assigned(set_id))),
            "two runners registered, the messages acked: {:?}",
            fake.runners()
        );
        let made = runners.instances();
        assert_eq!(made.len(), 2, "{made:?}");
        for instance in &made {
            let registered = fake.runners();
            let runner = registered.iter().find(|r| r.name == instance.name).unwrap();
            assert_eq!(
                (runner.id, runner.scale_set_id),
                (instance.runner_id, set_id)
            );
            assert!(!runners.jit_config(&instance.name).unwrap().is_empty());
        }

        runners.all_online();
        let started: Vec<String> = made
            .iter()
            .map(|i| {
                fake.runner_starts_job(&i.name)
                    .expect("a job for each runner")
            })
            .collect();
        for job in &started {
            assert!(fake.complete_job(job, "succeeded"));
        }
        assert!(
            fake.wait_until(WAIT, |st| all_acked(st)
                && st
                    .requests
                    .iter()
                    .filter(|r| r.endpoint == Endpoint::DeleteRunner)
                    .count()
                    == 2),
            "both registrations removed after JobCompleted"
        );
        assert!(runners.instances().is_empty(), "{:?}", runners.log());
        let generated = fake.requests_to(Endpoint::GenerateJitConfig).len();
        assert_eq!(generated, 2, "no runner beyond the assigned jobs");

        stop.store(true, Ordering::SeqCst);
        assert!(listener.join().unwrap().is_ok());
        let phases = phases.0.lock().unwrap().clone();
        assert!(phases.contains(&ListenerPhase::Listening {
            scale_set_id: set_id
        }));
        assert_eq!(phases.last(), Some(&ListenerPhase::Stopped));
    });
    assert!(fake.sessions().is_empty(), "stop deletes the session");
    assert!(*cursor.0.lock().unwrap() > 0);
}

/// One listener run until it listens on a scale set with `labels`, then stopped; the
/// scale set's id.
fn listen_once(
    fake: &FakeScaleSetService,
    clock: &Arc<ManualClock>,
    ledger: &dyn github_runner::scaleset::ledger::ScaleSetLedger,
    labels: &[&str],
) -> u64 {
    let client = fake.client("octo/hello", clock.clone());
    let runners = MemoryRunners::new("github-runner-0", clock.clone());
    let cursor = Cursor::default();
    let phases = Phases::default();
    let stop = AtomicBool::new(false);
    let config = config(labels, 2);
    let jitter = || 0.5;
    std::thread::scope(|scope| {
        let listener = scope.spawn(|| {
            let edges = ListenerEdges {
                api: &client,
                runners: &runners,
                cursor: &cursor,
                ledger,
                report: &phases,
                clock: &**clock,
                jitter: &jitter,
            };
            Listener::new(config.clone(), edges).run(&stop)
        });
        assert!(
            fake.wait_until(WAIT, |st| st.sessions.len() == 1),
            "the listener opens its session"
        );
        let id = fake.sessions()[0].scale_set_id;
        stop.store(true, Ordering::SeqCst);
        assert!(listener.join().unwrap().is_ok());
        id
    })
}

#[test]
fn new_labels_move_the_unit_to_a_new_scale_set_and_remove_deletes_every_one_it_held() {
    use github_runner::scaleset::ledger::{delete_every_held, FileLedger, ScaleSetLedger};
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let fake = FakeScaleSetService::start(clock.clone());
    fake.set_poll_timeout(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let ledger = FileLedger {
        path: dir.path().join("scale-sets"),
    };
    let first = listen_once(&fake, &clock, &ledger, &["jammy"]);
    // A runner of the first scale set is on a job when the labels change.
    let busy = fake.with_state(|st| {
        let id = st.runners.keys().max().copied().unwrap_or(0) + 1;
        st.runners.insert(
            id,
            fake_scaleset::FakeRunner {
                id,
                name: "busy-old".into(),
                scale_set_id: first,
                online: true,
                busy: true,
                key: String::new(),
            },
        );
        id
    });
    let second = listen_once(&fake, &clock, &ledger, &["jammy", "large"]);
    assert_ne!(first, second);
    assert_eq!(
        fake.scale_set(first).unwrap().name,
        format!("retired-{first}")
    );
    let new = fake.scale_set(second).unwrap();
    assert_eq!(
        (new.name.as_str(), new.labels.clone()),
        (
            "lxd-0",
            vec!["lxd-0".to_string(), "jammy".into(), "large".into()]
        )
    );
    assert!(
        fake.runners().iter().any(|r| r.id == busy),
        "the busy runner of the retired scale set is left to finish its job"
    );
    assert_eq!(ledger.load().len(), 2, "{:?}", ledger.load());
    let mode = std::fs::metadata(&ledger.path).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );

    // remove (the unit's flush took its runners down first).
    fake.with_state(|st| st.runners.get_mut(&busy).unwrap().busy = false);
    let client = fake.client("octo/hello", clock.clone());
    let left = delete_every_held(&client, &ledger);
    assert!(left.is_empty(), "{left:?}");
    assert!(fake.scale_set(first).is_none() && fake.scale_set(second).is_none());
    assert!(fake.runners().is_empty());
    assert!(ledger.load().is_empty());
}
