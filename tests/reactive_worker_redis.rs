//! The reactive worker loop (`reactive::worker::Worker`) over a real `redis-server` fed and
//! read back by the real kombu: a broker restarted without persistence while a worker holds
//! a message gets it back (issue 20 item 5), and an unreadable payload is dropped once with
//! its reason (item 12). GitHub and the runners are small doubles: these are about the broker.

// Only its clock, kombu client and job bodies are used here.
#[allow(dead_code)]
#[path = "support/queue_conformance.rs"]
mod conformance;
#[path = "support/redis_server/mod.rs"]
mod redis_server;
#[path = "support/worker_doubles.rs"]
mod worker_doubles;

use conformance::{kombu, StepClock};
use github_runner::clock::ManualClock;
use github_runner::github::GitHubPath;
use github_runner::reactive::claim::ClaimDir;
use github_runner::reactive::job::{JobLookup, JobState, JobTarget, UnitScope};
use github_runner::reactive::redis::RedisQueue;
use github_runner::reactive::source::parse_mq_uri;
use github_runner::reactive::worker::{JobSource, Round, Worker, WorkerEvent, WorkerTimings};
use redis_server::RedisServer;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use worker_doubles::{CountedRunners, Recorder};

/// The job is queued; at the `stop_at`-th look the worker is asked to stop.
struct QueuedJob<'a> {
    looks: Mutex<u32>,
    stop_at: u32,
    stop: &'a AtomicBool,
}

impl JobSource for QueuedJob<'_> {
    fn lookup(&self, _job: &JobTarget) -> (JobLookup, Option<String>) {
        let mut looks = self.looks.lock().unwrap();
        *looks += 1;
        if *looks == self.stop_at {
            self.stop.store(true, Ordering::SeqCst);
        }
        (JobLookup::Found(JobState::Queued), None)
    }
}

fn scope() -> UnitScope {
    UnitScope {
        api_base_url: "https://api.github.com".into(),
        path: GitHubPath::Repo {
            owner: "octo".into(),
            repo: "hello".into(),
        },
        labels: vec!["large".into(), "x64".into()],
    }
}

fn timings() -> WorkerTimings {
    WorkerTimings {
        lease_wait: Duration::from_millis(100),
        ..WorkerTimings::default()
    }
}

#[test]
fn a_message_held_through_a_broker_restart_without_persistence_is_put_back_for_kombu() {
    let server = Mutex::new(RedisServer::start());
    let uri = server.lock().unwrap().uri();
    kombu::put(&uri, "restarted", &[&conformance::job(40)]);
    // One clock for the worker and its queue: the put-back's due time is the worker's now.
    let clock = std::sync::Arc::new(ManualClock::at(1_800_000_000));
    let mut queue =
        RedisQueue::open(&parse_mq_uri(&uri).unwrap(), "restarted", clock.clone()).unwrap();
    let stop = AtomicBool::new(false);
    let jobs = QueuedJob {
        looks: Mutex::new(0),
        stop_at: 2,
        stop: &stop,
    };
    // Creating the runner restarts the broker: it loses every key.
    let runners = CountedRunners::new(|| server.lock().unwrap().restart());
    let tmp = tempfile::tempdir().unwrap();
    let claims = ClaimDir::open(tmp.path().join("claims")).unwrap();
    let report = Recorder::default();
    let scope = scope();
    let round = Worker::new(
        &mut queue,
        &jobs,
        &runners,
        &claims,
        &scope,
        &*clock,
        &report,
        &stop,
        0,
        timings(),
    )
    .round();
    assert_eq!(round, Round::Stopped);
    // The restarted broker had nothing; the worker put its copy back, and kombu reads it.
    let got = kombu::get(&uri, "restarted", 5.0).expect("the message was put back");
    assert_eq!(got["body"], conformance::job(40));
    assert_eq!(got["headers"]["X-Process-Count"], 0, "released unchanged");
}

#[test]
fn an_unreadable_payload_is_dropped_once_with_its_reason() {
    let server = RedisServer::start();
    server.push_raw("unreadable", &[0xc3u8, 0x28, b'{'][..]);
    let mut queue = RedisQueue::open(
        &parse_mq_uri(&server.uri()).unwrap(),
        "unreadable",
        StepClock::new(),
    )
    .unwrap();
    let stop = AtomicBool::new(false);
    let jobs = QueuedJob {
        looks: Mutex::new(0),
        stop_at: 0,
        stop: &stop,
    };
    let runners = CountedRunners::new(|| panic!("no runner for an unreadable message"));
    let tmp = tempfile::tempdir().unwrap();
    let claims = ClaimDir::open(tmp.path().join("claims")).unwrap();
    let clock = ManualClock::at(1_800_000_000);
    let report = Recorder::default();
    let scope = scope();
    let mut worker = Worker::new(
        &mut queue,
        &jobs,
        &runners,
        &claims,
        &scope,
        &clock,
        &report,
        &stop,
        0,
        timings(),
    );
    assert_eq!(worker.round(), Round::Handled);
    assert_eq!(worker.round(), Round::Idle, "settled, not back");
    drop(worker);
    assert_eq!(
        *report.events.lock().unwrap(),
        vec![
            WorkerEvent::JobReceived,
            WorkerEvent::JobDropped {
                reason: "malformed"
            }
        ]
    );
    assert!(
        report
            .states
            .lock()
            .unwrap()
            .iter()
            .all(|s| s.broker_error.is_none()),
        "never reported as a broker failure"
    );
    let keys = server.keys();
    assert!(keys.is_empty(), "{keys:?}");
}
