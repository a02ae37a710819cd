use super::*;
use crate::clock::ManualClock;
use crate::github::{GitHubError, GitHubPath};
use crate::reactive::job::{requeue_not_before, JobState, PAUSE_SECS, RETRY_LIMIT};
use crate::reactive::memory_queue::MemoryQueue;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

const T0: u64 = 1_700_000_000;
const URL: &str = "https://api.github.com/repos/octo/hello/actions/jobs/";

/// Default timings, but an empty queue answers at once (the clock is manual anyway).
fn quick() -> WorkerTimings {
    WorkerTimings {
        lease_wait: Duration::from_millis(10),
        ..WorkerTimings::default()
    }
}

fn scope() -> UnitScope {
    UnitScope {
        api_base_url: "https://api.github.com".into(),
        path: GitHubPath::Repo {
            owner: "octo".into(),
            repo: "hello".into(),
        },
        labels: vec!["app".into(), "jammy".into(), "large".into(), "x64".into()],
    }
}

fn job_body(id: u64, labels: &[&str]) -> Vec<u8> {
    serde_json::json!({"labels": labels, "url": format!("{URL}{id}"), "status": "queued"})
        .to_string()
        .into_bytes()
}

type Answers = std::collections::BTreeMap<u64, VecDeque<(JobLookup, Option<String>)>>;
type Hook<T> = RefCell<Option<Box<dyn Fn(T)>>>;

/// GitHub's answers for each job, in order; the last one repeats.
#[derive(Default)]
struct ScriptedJobs {
    answers: RefCell<Answers>,
    lookups: RefCell<Vec<u64>>,
    on_lookup: Hook<usize>,
}

impl ScriptedJobs {
    fn script(&self, id: u64, answers: Vec<(JobLookup, Option<String>)>) {
        self.answers.borrow_mut().insert(id, answers.into());
    }
}

fn found(status: &str) -> (JobLookup, Option<String>) {
    (JobLookup::Found(JobState::from_status(status)), None)
}

fn picked_by(runner: &str) -> (JobLookup, Option<String>) {
    (
        JobLookup::Found(JobState::InProgress),
        Some(runner.to_string()),
    )
}

impl JobSource for ScriptedJobs {
    fn lookup(&self, job: &JobTarget) -> (JobLookup, Option<String>) {
        self.lookups.borrow_mut().push(job.job_id);
        if let Some(hook) = self.on_lookup.borrow().as_ref() {
            hook(self.lookups.borrow().len());
        }
        let mut answers = self.answers.borrow_mut();
        let q = answers.get_mut(&job.job_id).expect("job scripted");
        if q.len() > 1 {
            q.pop_front().unwrap()
        } else {
            q.front().unwrap().clone()
        }
    }
}

#[derive(Default)]
struct FakeRunners {
    next: RefCell<u32>,
    created: RefCell<Vec<String>>,
    removed: RefCell<Vec<String>>,
    fail_create: RefCell<Option<SpawnFailure>>,
    busy: RefCell<Vec<String>>,
    /// `exists` answers true this many times per runner, then false.
    lifetime_polls: u32,
    polls: RefCell<u32>,
    /// Checked on each `exists` (e.g. that the claim still names the runner).
    on_exists: Hook<String>,
}

impl JobRunners for FakeRunners {
    fn new_name(&self) -> Result<String, String> {
        *self.next.borrow_mut() += 1;
        Ok(format!("app-0-{:012x}", *self.next.borrow()))
    }
    fn create(&self, name: &str) -> Result<(), SpawnFailure> {
        if let Some(f) = self.fail_create.borrow().clone() {
            return Err(f);
        }
        self.created.borrow_mut().push(name.to_string());
        Ok(())
    }
    fn remove_if_idle(&self, name: &str) -> Result<RunnerRemoval, String> {
        if self.busy.borrow().iter().any(|b| b == name) {
            return Ok(RunnerRemoval::Busy);
        }
        self.removed.borrow_mut().push(name.to_string());
        Ok(RunnerRemoval::Removed)
    }
    fn exists(&self, name: &str) -> Result<bool, String> {
        if let Some(check) = self.on_exists.borrow().as_ref() {
            check(name.to_string());
        }
        *self.polls.borrow_mut() += 1;
        Ok(*self.polls.borrow() <= self.lifetime_polls)
    }
}

#[derive(Default)]
struct Recorder {
    events: RefCell<Vec<WorkerEvent>>,
    states: RefCell<Vec<WorkerState>>,
}

impl WorkerReport for Recorder {
    fn event(&self, event: WorkerEvent) {
        self.events.borrow_mut().push(event);
    }
    fn state(&self, state: &WorkerState) {
        self.states.borrow_mut().push(state.clone());
    }
}

struct Setup {
    clock: Arc<ManualClock>,
    queue: MemoryQueue,
    jobs: ScriptedJobs,
    runners: FakeRunners,
    claims: ClaimDir,
    report: Recorder,
    stop: Arc<AtomicBool>,
    _tmp: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        let clock = Arc::new(ManualClock::at(T0));
        let tmp = tempfile::tempdir().unwrap();
        Setup {
            queue: MemoryQueue::new(clock.clone()),
            clock,
            jobs: ScriptedJobs::default(),
            runners: FakeRunners {
                lifetime_polls: 2,
                ..FakeRunners::default()
            },
            claims: ClaimDir::open(tmp.path().join("claims")).unwrap(),
            report: Recorder::default(),
            stop: Arc::new(AtomicBool::new(false)),
            _tmp: tmp,
        }
    }

    fn round(&self) -> Round {
        let mut queue = self.queue.clone();
        let scope = scope();
        let mut worker = Worker::new(
            &mut queue,
            &self.jobs,
            &self.runners,
            &self.claims,
            &scope,
            &*self.clock,
            &self.report,
            &self.stop,
            1,
            quick(),
        );
        worker.round()
    }

    fn events(&self) -> Vec<WorkerEvent> {
        self.report.events.borrow().clone()
    }

    fn created(&self) -> Vec<String> {
        self.runners.created.borrow().clone()
    }

    fn removed(&self) -> Vec<String> {
        self.runners.removed.borrow().clone()
    }
}

fn dropped(reason: &'static str) -> WorkerEvent {
    WorkerEvent::JobDropped { reason }
}

#[test]
fn a_queued_job_gets_one_runner_acked_at_pickup_and_the_claim_is_held_until_it_ends() {
    let s = Setup::new();
    s.queue.put(job_body(1, &["large"]), 0);
    let name = "app-0-000000000001";
    s.jobs
        .script(1, vec![found("queued"), found("queued"), picked_by(name)]);
    let claims = s.claims.clone();
    let expected = name.to_string();
    *s.runners.on_exists.borrow_mut() = Some(Box::new(move |runner: String| {
        assert_eq!(runner, expected);
        // D3: while its job runs, the runner is named by a live claim (never flushed).
        assert_eq!(claims.held_runners(), vec![expected.clone()]);
    }));
    s.clock.advance(Duration::from_secs(7));
    assert_eq!(s.round(), Round::Handled);
    assert_eq!(s.created(), vec![name.to_string()]);
    assert!(s.removed().is_empty());
    assert_eq!(s.queue.acked(), 1);
    assert_eq!(s.queue.total(), 0);
    assert_eq!(
        *s.runners.polls.borrow(),
        3,
        "waited until the runner was gone"
    );
    assert!(s.claims.held_runners().is_empty());
    let events = s.events();
    assert_eq!(events[0], WorkerEvent::JobReceived);
    assert!(matches!(events[1], WorkerEvent::RunnerSpawned { .. }));
    assert!(
        matches!(events[2], WorkerEvent::PickedUp { queue_seconds: Some(q) } if q >= 7.0),
        "{events:?}"
    );
    // Busy while holding the message or the runner, idle after.
    let states = s.report.states.borrow();
    assert!(states
        .iter()
        .any(|st| st.busy && st.runner.as_deref() == Some(name)));
    assert!(!states.last().unwrap().busy);
}

#[test]
fn a_job_already_picked_or_done_is_acked_without_a_runner() {
    for status in ["in_progress", "completed"] {
        let s = Setup::new();
        s.queue.put(job_body(2, &[]), 0);
        s.jobs.script(2, vec![found(status)]);
        assert_eq!(s.round(), Round::Handled);
        assert!(s.created().is_empty());
        assert_eq!(s.queue.acked(), 1);
        assert_eq!(s.events(), vec![WorkerEvent::JobReceived]);
    }
}

#[test]
fn unservable_messages_are_dropped_and_the_worker_goes_on() {
    let s = Setup::new();
    s.queue.put(b"{not json".to_vec(), 0);
    s.queue.put(job_body(3, &["gpu"]), 0);
    s.queue.put(
        br#"{"labels":[],"url":"https://api.github.com/repos/other/repo/actions/jobs/3"}"#.to_vec(),
        0,
    );
    s.queue.put(job_body(4, &[]), 0);
    s.jobs.script(4, vec![(JobLookup::NotFound, None)]);
    s.queue.put(job_body(5, &[]), RETRY_LIMIT);
    for _ in 0..5 {
        assert_eq!(s.round(), Round::Handled);
    }
    assert_eq!(s.round(), Round::Idle);
    assert!(
        s.created().is_empty(),
        "no runner for any of them (D7 included)"
    );
    assert_eq!(s.queue.acked(), 5);
    let drops: Vec<WorkerEvent> = s
        .events()
        .into_iter()
        .filter(|e| matches!(e, WorkerEvent::JobDropped { .. }))
        .collect();
    assert_eq!(
        drops,
        vec![
            dropped("malformed"),
            dropped("unsupported_labels"),
            dropped("foreign_url"),
            dropped("job_not_found"),
            dropped("retry_limit"),
        ]
    );
    // Only job 4 reached GitHub.
    assert_eq!(*s.jobs.lookups.borrow(), vec![4]);
}

#[test]
fn a_job_nobody_picks_is_requeued_with_its_count_and_a_not_before_and_its_runner_removed() {
    let s = Setup::new();
    s.queue.put(job_body(6, &[]), 0);
    s.jobs.script(6, vec![found("queued")]);
    let start = s.clock.now_epoch();
    assert_eq!(s.round(), Round::Handled);
    let after_wait = s.clock.now_epoch();
    assert!(after_wait - start >= WorkerTimings::default().pickup_bound.as_secs());
    assert_eq!(s.created().len(), 1);
    assert_eq!(s.removed(), s.created());
    assert_eq!(s.queue.acked(), 0);
    let waiting = s.queue.waiting();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].1, 1, "X-Process-Count raised");
    assert_eq!(waiting[0].2, requeue_not_before(after_wait, 0));
    assert!(s
        .events()
        .contains(&WorkerEvent::Requeued { process_count: 1 }));
    // Not leasable before its not-before time: the worker finds nothing (and did not sleep
    // holding it).
    assert_eq!(s.round(), Round::Idle);
    s.clock.advance(Duration::from_secs(121));
    assert_eq!(s.round(), Round::Handled);
    assert_eq!(s.created().len(), 2);
}

#[test]
fn the_last_allowed_handling_drops_instead_of_requeueing() {
    let s = Setup::new();
    s.queue.put(job_body(7, &[]), RETRY_LIMIT - 1);
    s.jobs.script(7, vec![found("queued")]);
    assert_eq!(s.round(), Round::Handled);
    assert_eq!(s.removed(), s.created());
    assert_eq!(s.queue.total(), 0);
    assert!(s.events().contains(&dropped("retry_limit")));
}

#[test]
fn a_job_gone_while_waiting_drops_the_message_and_removes_the_runner() {
    let s = Setup::new();
    s.queue.put(job_body(8, &[]), 0);
    s.jobs.script(
        8,
        vec![
            found("queued"),
            found("queued"),
            (JobLookup::NotFound, None),
        ],
    );
    assert_eq!(s.round(), Round::Handled);
    assert_eq!(s.created().len(), 1);
    assert_eq!(s.removed(), s.created());
    assert_eq!(s.queue.acked(), 1);
    assert!(s.events().contains(&dropped("job_not_found")));
}

#[test]
fn picked_by_another_runner_acks_and_removes_ours() {
    let s = Setup::new();
    s.queue.put(job_body(9, &[]), 0);
    s.jobs
        .script(9, vec![found("queued"), picked_by("someone-else")]);
    assert_eq!(s.round(), Round::Handled);
    assert_eq!(s.removed(), s.created());
    assert_eq!(s.queue.acked(), 1);
}

#[test]
fn waiting_for_approval_is_requeued_without_a_runner() {
    let s = Setup::new();
    s.queue.put(job_body(10, &[]), 0);
    s.jobs.script(10, vec![found("waiting")]);
    assert_eq!(s.round(), Round::Handled);
    assert!(s.created().is_empty());
    assert_eq!(s.queue.waiting()[0].1, 1);
}

#[test]
fn github_down_releases_the_message_unchanged_then_pauses_holding_nothing() {
    let s = Setup::new();
    s.queue.put(job_body(11, &[]), 2);
    s.jobs.script(
        11,
        vec![(
            JobLookup::Unavailable {
                until_epoch: Some(T0 + 600),
            },
            None,
        )],
    );
    assert_eq!(s.round(), Round::Handled);
    assert!(s.created().is_empty());
    let waiting = s.queue.waiting();
    assert_eq!(waiting[0].1, 2, "a release counts no handling");
    assert_eq!(s.queue.leased(), 0, "released before the pause");
    assert!(s.clock.now_epoch() >= T0 + 600);
    assert!(s.claims.held_runners().is_empty());
}

#[test]
fn a_failed_creation_releases_the_message_and_pauses() {
    let s = Setup::new();
    s.queue.put(job_body(12, &[]), 0);
    s.jobs.script(12, vec![found("queued")]);
    *s.runners.fail_create.borrow_mut() = Some(SpawnFailure {
        message: "image missing".into(),
        retry_epoch: None,
        no_room: false,
    });
    assert_eq!(s.round(), Round::Handled);
    assert_eq!(s.queue.waiting()[0].1, 0);
    assert_eq!(s.clock.now_epoch(), T0 + PAUSE_SECS);
}

/// Admission refused the runner (the machine is full): the message goes back with its count
/// unchanged and a not-before time, however often it was handled, and the worker says why;
/// once there is room, the job gets its runner and the refusal is no longer shown.
#[test]
fn a_creation_refused_for_want_of_room_defers_the_message_and_reports_it() {
    use crate::reactive::job::NO_ROOM_RETRY_SECS;
    let s = Setup::new();
    s.queue.put(job_body(21, &[]), RETRY_LIMIT - 1);
    s.jobs.script(21, vec![found("queued")]);
    let refusal = "no room on this machine for another runner (8 instances on it): \
                   host memory allows 8";
    *s.runners.fail_create.borrow_mut() = Some(SpawnFailure {
        message: refusal.into(),
        retry_epoch: None,
        no_room: true,
    });
    for round in 0..3 {
        assert_eq!(s.round(), Round::Handled);
        let waiting = s.queue.waiting();
        assert_eq!(waiting.len(), 1, "round {round}: never dropped");
        assert_eq!(
            (waiting[0].1, waiting[0].2),
            (RETRY_LIMIT - 1, s.clock.now_epoch() + NO_ROOM_RETRY_SECS),
            "round {round}: the count unchanged, not before the retry time"
        );
        assert!(
            !s.events().iter().any(|e| matches!(
                e,
                WorkerEvent::JobDropped { .. } | WorkerEvent::Requeued { .. }
            )),
            "{:?}",
            s.events()
        );
        let last = s.report.states.borrow().last().cloned().unwrap();
        assert_eq!(last.no_room.as_deref(), Some(refusal));
        s.clock.advance(Duration::from_secs(NO_ROOM_RETRY_SECS));
    }
    assert!(s.created().is_empty());

    *s.runners.fail_create.borrow_mut() = None;
    s.jobs
        .script(21, vec![found("queued"), picked_by("app-0-000000000001")]);
    assert_eq!(s.round(), Round::Handled);
    assert_eq!(s.created().len(), 1);
    let last = s.report.states.borrow().last().cloned().unwrap();
    assert_eq!(last.no_room, None);
}

#[test]
fn a_second_message_for_a_job_another_worker_holds_is_dropped_as_a_duplicate() {
    let s = Setup::new();
    let other = match s.claims.claim(13, 2, "the first message").unwrap() {
        ClaimAttempt::Claimed(c) => c,
        _ => unreachable!(),
    };
    s.queue.put(job_body(13, &[]), 0);
    s.jobs.script(13, vec![found("queued")]);
    assert_eq!(s.round(), Round::Handled);
    assert!(s.created().is_empty());
    assert!(s.events().contains(&dropped("duplicate")));
    drop(other);
}

/// The broker handed out again a message whose lease lapsed while its holder still works
/// (a creation outlasted the lease): it goes back with its count, not dropped, since the
/// holder's own ack or requeue will find its lease lost.
#[test]
fn the_same_message_leased_again_while_its_holder_works_is_deferred_not_dropped() {
    let s = Setup::new();
    let id = s.queue.put(job_body(15, &[]), 2);
    s.jobs.script(15, vec![found("queued")]);
    let holder = match s.claims.claim(15, 2, &id).unwrap() {
        ClaimAttempt::Claimed(c) => c,
        _ => unreachable!(),
    };
    assert_eq!(s.round(), Round::Handled);
    assert!(s.created().is_empty(), "no second runner");
    assert!(!s
        .events()
        .iter()
        .any(|e| matches!(e, WorkerEvent::JobDropped { .. })));
    let lease = WorkerTimings::default().lease_for.as_secs();
    assert_eq!(s.queue.waiting(), vec![(id, 2, T0 + lease)]);
    drop(holder);
}

#[test]
fn stopping_while_waiting_for_pickup_removes_the_runner_and_hands_the_message_back() {
    let s = Setup::new();
    s.queue.put(job_body(14, &[]), 0);
    s.jobs.script(14, vec![found("queued")]);
    let stop = s.stop.clone();
    *s.jobs.on_lookup.borrow_mut() = Some(Box::new(move |n| {
        if n == 3 {
            stop.store(true, Ordering::SeqCst);
        }
    }));
    assert_eq!(s.round(), Round::Stopped);
    assert_eq!(s.removed(), s.created());
    let waiting = s.queue.waiting();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].1, 0, "released, not requeued");
}

#[test]
fn a_dead_workers_runner_is_removed_before_the_job_is_handled_again() {
    let s = Setup::new();
    std::fs::write(
        s.claims.path().join("job-15"),
        "slot=3 runner=app-0-dead00000000\n",
    )
    .unwrap();
    s.queue.put(job_body(15, &[]), 0);
    s.jobs.script(15, vec![found("in_progress")]);
    assert_eq!(s.round(), Round::Handled);
    assert_eq!(s.removed(), vec!["app-0-dead00000000".to_string()]);
}

#[test]
fn an_unreachable_broker_is_reported_by_host_and_retried_with_growing_pauses() {
    let s = Setup::new();
    s.queue.fail_with_unreachable("redis.internal", 3);
    let scope = scope();
    let mut queue = s.queue.clone();
    let mut worker = Worker::new(
        &mut queue,
        &s.jobs,
        &s.runners,
        &s.claims,
        &scope,
        &*s.clock,
        &s.report,
        &s.stop,
        1,
        quick(),
    );
    let before = s.clock.now_epoch();
    for _ in 0..3 {
        assert_eq!(worker.round(), Round::BrokerDown);
    }
    assert_eq!(s.clock.now_epoch() - before, 1 + 2 + 4);
    let last = s.report.states.borrow().last().cloned().unwrap();
    assert_eq!(last.broker_error.as_deref(), Some("redis.internal"));
    assert_eq!(worker.round(), Round::Idle);
    let last = s.report.states.borrow().last().cloned().unwrap();
    assert_eq!(last.broker_error, None);
    assert_eq!(last.queue, Some(QueueLength::default()));
}

#[test]
fn lookup_errors_map_onto_the_table() {
    let e = |err| lookup_error(&err);
    assert_eq!(
        e(GitHubError::NotFound {
            method: "GET".into(),
            path: "/x".into()
        }),
        JobLookup::NotFound
    );
    assert_eq!(
        e(GitHubError::RateLimited {
            method: "GET".into(),
            path: "/x".into(),
            reset_epoch: 5
        }),
        JobLookup::Unavailable {
            until_epoch: Some(5)
        }
    );
    assert_eq!(
        e(GitHubError::Server {
            method: "GET".into(),
            path: "/x".into(),
            status: 502
        }),
        JobLookup::Unavailable { until_epoch: None }
    );
    assert!(matches!(
        e(GitHubError::Forbidden {
            method: "GET".into(),
            path: "/x".into(),
            needed: String::new()
        }),
        JobLookup::Refused(_)
    ));
}

#[path = "worker_tests_jobs.rs"]
mod jobs;
