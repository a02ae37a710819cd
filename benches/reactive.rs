//! Reactive mode's latency and throughput (issue 10, item 8): queue put -> runner online,
//! p50 and p95 over N jobs, against the raw container launch measured in the same run; jobs
//! per minute with `virtual-machines` workers; broker calls per job.
//!
//! Drives the real worker loop (`reactive::worker::Worker`, one thread per worker, each with
//! its own Redis connection) with the charm's runner code on the real LXD daemon (a project
//! of its own) and the fake GitHub, over a real redis-server on loopback. Messages are put
//! in kombu's own format (`LPUSH` of `kombu_payload`, what `SimpleQueue.put` writes; the
//! queue tests check that format against real kombu) so the put time is exact. Broker calls
//! are the transport's own command count. GitHub's scheduler is a thread that hands each
//! job to the runner its worker spawned for it (read from the claim files) as soon as it is
//! online; the fake runner finishes the job at once, so a worker is free again when its
//! runner is gone.
//!
//! Run: `cargo bench --features testkit --bench reactive` (N = 20 jobs, 8 workers;
//! `REACTIVE_BENCH_JOBS`, `REACTIVE_BENCH_WORKERS` override). Without `--bench` (as under
//! `cargo test --all-targets`) a smoke pass: 2 jobs, 2 workers.

#[path = "../tests/support/claim_files.rs"]
#[allow(dead_code)]
mod claim_files;
#[path = "../tests/support/executable.rs"]
mod executable;
#[path = "../tests/support/fake_github/mod.rs"]
mod fake_github;
#[path = "../tests/support/fixture_runtime.rs"]
mod fixture_runtime;
#[path = "../tests/support/lxd_fixture/mod.rs"]
mod lxd_fixture;
#[path = "support/measure.rs"]
mod measure;
#[path = "../tests/support/redis_server/mod.rs"]
mod redis_server;

use fixture_runtime::FixtureUnit;
use github_runner::charm::fleet::CharmRunnerOps;
use github_runner::clock::SystemClock;
use github_runner::reactive::claim::ClaimDir;
use github_runner::reactive::envelope::kombu_payload;
use github_runner::reactive::redis::RedisQueue;
use github_runner::reactive::run::{unit_scope, LxdRunners};
use github_runner::reactive::source::parse_mq_uri;
use github_runner::reactive::worker::{
    GitHubJobs, Worker, WorkerEvent, WorkerReport, WorkerState, WorkerTimings,
};
use measure::{knob, percentile, raw_launch_median};
use redis_server::RedisServer;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPO: &str = "octo/hello";

struct NoReport;

impl WorkerReport for NoReport {
    fn event(&self, _: WorkerEvent) {}
    fn state(&self, _: &WorkerState) {}
}

/// What one phase measured.
struct Phase {
    /// Seconds from each job's put to its runner online, sorted.
    latencies: Vec<f64>,
    wall: f64,
    served: usize,
    broker_calls: u64,
}

/// Messages on the broker for `queue`: waiting, and leased by some worker.
fn on_broker(con: &mut redis::Connection, queue: &str) -> u64 {
    let waiting: u64 = redis::cmd("LLEN").arg(queue).query(con).unwrap();
    let leased: u64 = redis::cmd("ZCARD")
        .arg(format!("github-runner.leases.{queue}"))
        .query(con)
        .unwrap();
    waiting + leased
}

/// `jobs` jobs through `workers` workers on the Redis queue `queue`. `one_at_a_time`: each
/// job is put once the previous one is served (latency with a free worker); else all at
/// once (throughput).
fn phase(
    u: &FixtureUnit,
    redis: &RedisServer,
    queue: &str,
    jobs: usize,
    workers: usize,
    one_at_a_time: bool,
) -> Phase {
    let (fx, gh, rt) = (&u.fx, &u.gh, &u.rt);
    let uri = parse_mq_uri(&redis.uri()).unwrap();
    let mut producer = redis::Client::open(redis.uri())
        .unwrap()
        .get_connection()
        .unwrap();
    let broker_calls = AtomicU64::new(0);
    let claims_dir = tempfile::tempdir_in(u.root.path()).unwrap();
    let claims = ClaimDir::open(claims_dir.path()).unwrap();
    let ops = CharmRunnerOps::new(rt);
    let runners = LxdRunners { rt, ops: &ops };
    let scope = unit_scope(rt, ops.labels());
    let github = GitHubJobs::new(&*rt.github);
    let stop = AtomicBool::new(false);
    let put_at: Mutex<BTreeMap<u64, Instant>> = Mutex::new(BTreeMap::new());
    let online_after: Mutex<BTreeMap<u64, f64>> = Mutex::new(BTreeMap::new());
    let ids: Vec<u64> = (0..jobs).map(|_| gh.add_job(REPO, &[])).collect();
    let started = Instant::now();
    std::thread::scope(|s| {
        // GitHub's scheduler: each job to the runner spawned for it, once online.
        s.spawn(|| {
            while online_after.lock().unwrap().len() < jobs && !stop.load(Ordering::SeqCst) {
                let mut fresh = Vec::new();
                gh.wait_until(Duration::from_millis(500), |snap| {
                    fresh = snap
                        .runners
                        .iter()
                        .filter(|r| r.online && !r.busy)
                        .map(|r| r.name.clone())
                        .collect();
                    !fresh.is_empty()
                });
                let claimed = claim_files::runner_jobs(claims.path());
                for name in fresh {
                    let Some(&job) = claimed.get(&name) else {
                        continue;
                    };
                    if online_after.lock().unwrap().contains_key(&job) {
                        continue;
                    }
                    if gh.dispatch_job(job, &name) {
                        let put = put_at.lock().unwrap()[&job];
                        online_after
                            .lock()
                            .unwrap()
                            .insert(job, put.elapsed().as_secs_f64());
                    }
                }
            }
        });
        for slot in 0..workers as u32 {
            let mut q = RedisQueue::open(&uri, queue, Arc::new(SystemClock)).unwrap();
            let (runners, scope, github, stop, claims, broker_calls) =
                (&runners, &scope, &github, &stop, &claims, &broker_calls);
            s.spawn(move || {
                let timings = WorkerTimings {
                    lease_wait: Duration::from_secs(1),
                    pickup_poll: Duration::from_millis(500),
                    runner_end_poll: Duration::from_millis(500),
                    ..WorkerTimings::default()
                };
                Worker::new(
                    &mut q,
                    github,
                    runners,
                    claims,
                    scope,
                    &SystemClock,
                    &NoReport,
                    stop,
                    slot,
                    timings,
                )
                .run();
                broker_calls.fetch_add(q.round_trips(), Ordering::SeqCst);
            });
        }
        let mut checker = redis::Client::open(redis.uri())
            .unwrap()
            .get_connection()
            .unwrap();
        let mut served_and_gone = |n: usize| {
            lxd_fixture::wait_for(Duration::from_secs(600), || {
                ids[..n]
                    .iter()
                    .all(|id| gh.job(*id).is_some_and(|j| j.status == "completed"))
                    && fx.instance_names().is_empty()
                    && on_broker(&mut checker, queue) == 0
            })
        };
        for (n, id) in ids.iter().enumerate() {
            let body = serde_json::json!({
                "labels": [], "status": "queued",
                "url": format!("{}/repos/{REPO}/actions/jobs/{id}", gh.api_base()),
            });
            let payload = kombu_payload(&body.to_string(), queue, &format!("bench-{id}"));
            put_at.lock().unwrap().insert(*id, Instant::now());
            let _: () = redis::cmd("LPUSH")
                .arg(queue)
                .arg(payload)
                .query(&mut producer)
                .unwrap();
            if one_at_a_time {
                assert!(served_and_gone(n + 1), "job {n} not served");
            }
        }
        let done = served_and_gone(jobs);
        stop.store(true, Ordering::SeqCst);
        assert!(done, "jobs not all served");
    });
    let wall = started.elapsed().as_secs_f64();
    let mut latencies: Vec<f64> = online_after.lock().unwrap().values().copied().collect();
    latencies.sort_by(f64::total_cmp);
    let served = ids
        .iter()
        .filter(|id| gh.job(**id).is_some_and(|j| j.status == "completed"))
        .count();
    assert_eq!(served, jobs, "every job served");
    assert_eq!(on_broker(&mut producer, queue), 0, "no message left");
    Phase {
        latencies,
        wall,
        served,
        broker_calls: broker_calls.load(Ordering::SeqCst),
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (jobs, workers) = if full {
        (
            knob("REACTIVE_BENCH_JOBS", 20),
            knob("REACTIVE_BENCH_WORKERS", 8),
        )
    } else {
        (2, 2)
    };
    let unit = FixtureUnit::new(REPO, serde_json::json!({"virtual-machines": workers}));

    // The floor: raw `lxc launch` of one container, same daemon, now.
    let raw = raw_launch_median(&unit.fx);

    let redis = RedisServer::start();
    let latency = phase(&unit, &redis, "bench-latency", jobs, 1, true);
    let burst = phase(&unit, &redis, "bench-burst", jobs, workers, false);
    let (p50, p95) = (
        percentile(&latency.latencies, 0.5),
        percentile(&latency.latencies, 0.95),
    );
    let (bp50, bp95) = (
        percentile(&burst.latencies, 0.5),
        percentile(&burst.latencies, 0.95),
    );
    println!(
        "reactive: {jobs} jobs, real LXD + fake GitHub + real redis-server ({})",
        if full { "full run" } else { "smoke pass" }
    );
    println!("{:<52} {:>10}", "measure", "value");
    println!("{:<52} {:>9.2}s", "raw lxc launch (median of 5)", raw);
    println!(
        "{:<52} {:>9.2}s",
        "put -> runner online p50 (1 job at a time)", p50
    );
    println!(
        "{:<52} {:>9.2}s",
        "put -> runner online p95 (1 job at a time)", p95
    );
    println!(
        "{:<52} {:>9.2}s",
        "p50 above raw launch (target <= 2 s)",
        p50 - raw
    );
    println!("{:<52} {:>9.2}s", "p95 above raw launch", p95 - raw);
    println!(
        "{:<52} {:>10.1}",
        "broker calls per job (1 at a time, incl. idle)",
        latency.broker_calls as f64 / jobs as f64
    );
    println!(
        "{:<52} {:>9.2}s",
        format!("burst of {jobs} on {workers} workers: wall to last runner gone"),
        burst.wall
    );
    println!(
        "{:<52} {:>9.2}s",
        "burst: put -> runner online p50 (queueing incl.)", bp50
    );
    println!(
        "{:<52} {:>9.2}s",
        "burst: put -> runner online p95 (queueing incl.)", bp95
    );
    println!(
        "{:<52} {:>10.1}",
        format!("burst: jobs per minute ({workers} workers)"),
        burst.served as f64 * 60.0 / burst.wall
    );
    println!(
        "{:<52} {:>10.1}",
        "burst: broker calls per job (incl. idle)",
        burst.broker_calls as f64 / jobs as f64
    );
}
