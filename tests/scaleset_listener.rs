//! The scale-set listener loop (`github_runner::scaleset::listener`) over the real client
//! against the fake scale set service (`tests/support/fake_scaleset`), with the runner side
//! in memory: jobs assigned -> runners made from JIT configs, started and completed ->
//! removed, every message acknowledged, stop -> no session. Waits are on the fake's
//! conditions with deadlines; token lifetimes and the listener's waits on a manual clock.

#[path = "support/fake_scaleset/mod.rs"]
mod fake_scaleset;

use fake_scaleset::{Endpoint, FakeScaleSetService, JobState};
use github_runner::clock::ManualClock;
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

#[test]
fn jobs_get_jit_runners_which_go_when_done_every_message_acked_and_stop_ends_the_session() {
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let fake = FakeScaleSetService::start(clock.clone());
    fake.set_poll_timeout(Duration::from_millis(200));
    let client = fake.client("octo/hello", clock.clone());
    let runners = MemoryRunners::new("github-runner-0", clock.clone());
    let cursor = Cursor::default();
    let phases = Phases::default();
    let stop = AtomicBool::new(false);
    let config = ListenerConfig {
        scale_set_name: "lxd-0".into(),
        runner_group: "default".into(),
        labels: vec!["jammy".into()],
        owner: "github-runner-0".into(),
        max_runners: 4,
        min_idle: 0,
        work_folder: String::new(),
        bootstrap_timeout: Duration::from_secs(600),
    };
    let jitter = || 0.5;
    std::thread::scope(|scope| {
        let listener = scope.spawn(|| {
            let edges = ListenerEdges {
                api: &client,
                runners: &runners,
                cursor: &cursor,
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
