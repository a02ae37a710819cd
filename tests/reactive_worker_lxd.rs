//! The reactive worker loop (`reactive::worker`) with the real runner code on the real LXD
//! daemon and the fake GitHub, over the in-memory queue: a queued job gets exactly one
//! runner that comes online, takes the job and is gone after it; a job already running gets
//! none; two messages for one job handled by two workers at once give one runner; a job
//! nobody takes is requeued with its count and its runner removed.

#[path = "support/executable.rs"]
mod executable;
#[path = "support/fake_github/mod.rs"]
mod fake_github;
#[path = "support/fixture_runtime.rs"]
mod fixture_runtime;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use fake_github::FakeGitHub;
use fixture_runtime::FixtureUnit;
use github_runner::charm::fleet::CharmRunnerOps;
use github_runner::clock::{Clock, SystemClock};
use github_runner::reactive::claim::ClaimDir;
use github_runner::reactive::memory_queue::MemoryQueue;
use github_runner::reactive::run::{unit_scope, LxdRunners};
use github_runner::reactive::worker::{
    GitHubJobs, Round, Worker, WorkerEvent, WorkerReport, WorkerState, WorkerTimings,
};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const REPO: &str = "octo/hello";

struct Unit {
    base: FixtureUnit,
    queue: MemoryQueue,
    claims: ClaimDir,
}

impl std::ops::Deref for Unit {
    type Target = FixtureUnit;
    fn deref(&self) -> &FixtureUnit {
        &self.base
    }
}

fn unit() -> Unit {
    let base = FixtureUnit::new(REPO, serde_json::json!({"labels": "large"}));
    let claims = ClaimDir::open(base.root.path().join("claims")).unwrap();
    Unit {
        base,
        queue: MemoryQueue::new(Arc::new(SystemClock)),
        claims,
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<WorkerEvent>>);

impl WorkerReport for Recorder {
    fn event(&self, event: WorkerEvent) {
        self.0.lock().unwrap().push(event);
    }
    fn state(&self, _: &WorkerState) {}
}

fn timings() -> WorkerTimings {
    WorkerTimings {
        lease_wait: Duration::from_millis(200),
        pickup_bound: Duration::from_secs(60),
        pickup_poll: Duration::from_millis(200),
        runner_end_poll: Duration::from_millis(200),
        ..WorkerTimings::default()
    }
}

fn body(job_id: u64, labels: &[&str], api: &str) -> Vec<u8> {
    serde_json::json!({
        "labels": labels,
        "url": format!("{api}/repos/{REPO}/actions/jobs/{job_id}"),
        "status": "queued",
    })
    .to_string()
    .into_bytes()
}

/// Runs one worker round per entry of `slots` in parallel, returning each round's end;
/// with `dispatch`, GitHub hands that job to the first runner of the unit that comes online
/// (its name is returned).
fn rounds(
    u: &Unit,
    slots: &[u32],
    report: &Recorder,
    pickup_bound: Duration,
    dispatch: Option<u64>,
) -> (Vec<Round>, Option<String>) {
    rounds_with(u, slots, report, pickup_bound, &|| {
        dispatch.and_then(|job| dispatch_when_online(&u.gh, job))
    })
}

/// As [`rounds`], with GitHub's scheduler given as `dispatcher` (run beside the workers;
/// returns the runner it handed a job to).
fn rounds_with(
    u: &Unit,
    slots: &[u32],
    report: &Recorder,
    pickup_bound: Duration,
    dispatcher: &(dyn Fn() -> Option<String> + Sync),
) -> (Vec<Round>, Option<String>) {
    let ops = CharmRunnerOps::new(&u.rt);
    let runners = LxdRunners {
        rt: &u.rt,
        ops: &ops,
    };
    let scope = unit_scope(&u.rt, ops.labels());
    let jobs = GitHubJobs::new(&*u.rt.github);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let dispatcher = s.spawn(dispatcher);
        let handles: Vec<_> = slots
            .iter()
            .map(|slot| {
                let mut queue = u.queue.clone();
                let (runners, scope, jobs, stop, report) = (&runners, &scope, &jobs, &stop, report);
                let claims = &u.claims;
                s.spawn(move || {
                    let timings = WorkerTimings {
                        pickup_bound,
                        ..timings()
                    };
                    Worker::new(
                        &mut queue,
                        jobs,
                        runners,
                        claims,
                        scope,
                        &SystemClock,
                        report,
                        stop,
                        *slot,
                        timings,
                    )
                    .round()
                })
            })
            .collect();
        let ends = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (ends, dispatcher.join().unwrap())
    })
}

/// GitHub's scheduler: hands `job` to the first runner of this unit that comes online.
fn dispatch_when_online(gh: &FakeGitHub, job: u64) -> Option<String> {
    let mut picked = None;
    gh.wait_until(Duration::from_secs(90), |snap| {
        picked = snap
            .runners
            .iter()
            .find(|r| r.online && r.name.starts_with("github-runner-0-"))
            .map(|r| r.name.clone());
        picked.is_some()
    });
    let name = picked?;
    gh.dispatch_job(job, &name).then_some(name)
}

fn instances(u: &Unit) -> Vec<String> {
    use github_runner::lxd::Lxd;
    u.fx.lxd()
        .list_owned_instances(&u.rt.identity.owner_value())
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect()
}

#[test]
fn a_queued_job_gets_one_runner_that_takes_it_and_is_gone_after_it() {
    let u = unit();
    let job = u.gh.add_job(REPO, &["large"]);
    u.queue.put(body(job, &["large"], &u.gh.api_base()), 0);
    let report = Recorder::default();
    let started = SystemClock.now_epoch();
    let (ends, runner) = rounds(&u, &[0], &report, Duration::from_secs(60), Some(job));
    assert_eq!(ends, vec![Round::Handled]);
    let runner = runner.expect("a runner came online");
    assert_eq!(u.queue.acked(), 1);
    assert_eq!(u.queue.total(), 0);
    let j = u.gh.job(job).unwrap();
    assert_eq!(j.runner_name.as_deref(), Some(runner.as_str()));
    assert_eq!(j.status, "completed");
    assert!(instances(&u).is_empty(), "the runner is gone after its job");
    let events = report.0.lock().unwrap().clone();
    assert!(events.contains(&WorkerEvent::JobReceived));
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, WorkerEvent::RunnerSpawned { .. }))
            .count(),
        1
    );
    assert!(
        events.iter().any(
            |e| matches!(e, WorkerEvent::PickedUp { queue_seconds: Some(q) } if *q <= (SystemClock.now_epoch() - started) as f64)
        ),
        "{events:?}"
    );
}

#[test]
fn two_messages_for_one_job_on_two_workers_give_one_runner_and_a_running_job_none() {
    let u = unit();
    let job = u.gh.add_job(REPO, &[]);
    let api = u.gh.api_base();
    u.queue.put(body(job, &[], &api), 0);
    u.queue.put(body(job, &[], &api), 0);
    let report = Recorder::default();
    let (ends, runner) = rounds(&u, &[0, 1], &report, Duration::from_secs(60), Some(job));
    assert_eq!(ends, vec![Round::Handled, Round::Handled]);
    runner.expect("a runner came online");
    let spawned = report
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, WorkerEvent::RunnerSpawned { .. }))
        .count();
    assert_eq!(spawned, 1, "one runner for one job");
    assert_eq!(u.queue.acked(), 2);

    // The same job again (a late redelivery): it is done, no runner.
    u.queue.put(body(job, &[], &api), 0);
    let report = Recorder::default();
    let (ends, _) = rounds(&u, &[0], &report, Duration::from_secs(60), None);
    assert_eq!(ends, vec![Round::Handled]);
    assert!(!report
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, WorkerEvent::RunnerSpawned { .. })));
    assert!(instances(&u).is_empty());
}

#[test]
fn a_job_nobody_takes_is_requeued_with_its_count_and_its_runner_removed() {
    let u = unit();
    let job = u.gh.add_job(REPO, &[]);
    u.queue.put(body(job, &[], &u.gh.api_base()), 0);
    let report = Recorder::default();
    // Online but never handed the job within the bound.
    let (ends, _) = rounds(&u, &[0], &report, Duration::from_secs(3), None);
    assert_eq!(ends, vec![Round::Handled]);
    let waiting = u.queue.waiting();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].1, 1, "X-Process-Count 1");
    assert!(
        waiting[0].2 >= SystemClock.now_epoch() + 100,
        "not before ~120 s"
    );
    assert!(instances(&u).is_empty(), "the unused runner was removed");
    assert!(u.gh.runners().is_empty(), "and its registration");
    assert!(report
        .0
        .lock()
        .unwrap()
        .contains(&WorkerEvent::Requeued { process_count: 1 }));
}

/// Two workers, two queued jobs, a host that holds one runner (90% of 1 GiB for runners of
/// vm-memory=512MiB, faked below the host root): one machine-wide admission gives one of
/// them a runner; the other is refused, and its message goes back with its count unchanged
/// and a not-before time (never dropped), without a registration made for it.
#[test]
fn workers_creating_at_once_on_a_full_host_start_only_what_fits_and_keep_the_rest_queued() {
    let u = unit();
    let proc_dir = u.rt.paths.proc_dir();
    std::fs::create_dir_all(&proc_dir).unwrap();
    std::fs::write(proc_dir.join("meminfo"), "MemTotal: 1048576 kB\n").unwrap();
    let cpus: String = (0..64).map(|n| format!("processor : {n}\n")).collect();
    std::fs::write(proc_dir.join("cpuinfo"), cpus).unwrap();
    let api = u.gh.api_base();
    for _ in 0..2 {
        let job = u.gh.add_job(REPO, &[]);
        u.queue.put(body(job, &[], &api), 0);
    }
    let report = Recorder::default();
    let before = SystemClock.now_epoch();
    // Nobody takes the one runner within the bound: it is removed and its message requeued.
    let (ends, _) = rounds(&u, &[0, 1], &report, Duration::from_secs(3), None);
    assert_eq!(ends, vec![Round::Handled, Round::Handled]);
    let events = report.0.lock().unwrap().clone();
    let spawned = events
        .iter()
        .filter(|e| matches!(e, WorkerEvent::RunnerSpawned { .. }))
        .count();
    assert_eq!(spawned, 1, "one runner fits: {events:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, WorkerEvent::JobDropped { .. })),
        "{events:?}"
    );
    let mut waiting = u.queue.waiting();
    waiting.sort_by_key(|w| w.1);
    assert_eq!(waiting.len(), 2, "both jobs still queued: {waiting:?}");
    assert_eq!(waiting[0].1, 0, "the refused one keeps its count");
    assert!(waiting[0].2 >= before + 25, "not before ~30 s: {waiting:?}");
    assert_eq!(waiting[1].1, 1, "the unpicked one is requeued as before");
    assert!(instances(&u).is_empty());
    assert!(u.gh.runners().is_empty(), "no registration left");
}

/// The runner the worker holding `job`'s claim spawned for it.
fn runner_of(u: &Unit, job: u64) -> Option<String> {
    let text = std::fs::read_to_string(u.claims.path().join(format!("job-{job}"))).ok()?;
    text.split_whitespace()
        .find_map(|f| f.strip_prefix("runner="))
        .map(str::to_string)
}

/// Issue 20 item 2: GitHub hands job B to the runner spawned for job A. B is served by that
/// runner (its worker counts it as serving B), A is never acked while queued: it goes back
/// on the queue and the next round's runner takes it.
#[test]
fn a_runner_crossing_to_a_siblings_job_leaves_no_job_unserved() {
    let u = unit();
    let api = u.gh.api_base();
    let a = u.gh.add_job(REPO, &[]);
    let b = u.gh.add_job(REPO, &[]);
    u.queue.put(body(a, &[], &api), 0);
    u.queue.put(body(b, &[], &api), 0);
    let report = Recorder::default();
    // The scheduler crosses: once both runners are online, B goes to A's runner.
    let cross = || {
        let both_online = u.gh.wait_until(Duration::from_secs(120), |snap| {
            snap.runners
                .iter()
                .filter(|r| r.online && r.name.starts_with("github-runner-0-"))
                .count()
                >= 2
        });
        assert!(both_online, "two runners came online");
        let runner_of_a = runner_of(&u, a).expect("A's claim names its runner");
        // B runs until A is back on the queue (a real job takes a while).
        u.gh.update_job(b, |j| j.held = true);
        let crossed = u.gh.dispatch_job(b, &runner_of_a);
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while u.queue.waiting().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        u.gh.release_job(b);
        crossed.then_some(runner_of_a)
    };
    let (ends, crossed_to) = rounds_with(&u, &[0, 1], &report, Duration::from_secs(60), &cross);
    assert_eq!(ends, vec![Round::Handled, Round::Handled]);
    let crossed_to = crossed_to.expect("B was handed to A's runner");
    let jb = u.gh.job(b).unwrap();
    assert_eq!(jb.runner_name.as_deref(), Some(crossed_to.as_str()));
    assert_eq!(jb.status, "completed");
    assert_eq!(u.queue.acked(), 1, "only B, which ran; A is still queued");
    let waiting = u.queue.waiting();
    assert_eq!(waiting.len(), 1, "A is back on the queue");
    assert_eq!(waiting[0].1, 0, "uncounted");
    assert_eq!(u.gh.job(a).unwrap().status, "queued");

    // The next round makes a runner for A, which takes it.
    let (ends, runner) = rounds(&u, &[0], &report, Duration::from_secs(60), Some(a));
    assert_eq!(ends, vec![Round::Handled]);
    let ja = u.gh.job(a).unwrap();
    assert_eq!(ja.status, "completed");
    assert_eq!(ja.runner_name, runner);
    assert_eq!(u.queue.acked(), 2);
    assert_eq!(u.queue.total(), 0);
    assert!(instances(&u).is_empty(), "no runner left");
}
