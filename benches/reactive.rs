//! Reactive mode's latency and throughput (issue 10, item 8): queue put -> runner online,
//! p50 and p95 over N jobs, against the raw container launch measured in the same run; jobs
//! per minute with `virtual-machines` workers; broker calls per job.
//!
//! Drives the real worker loop (`reactive::worker::Worker`) with the charm's runner code on
//! the real LXD daemon (a project of its own) and the fake GitHub, over the in-memory queue
//! (it counts every broker call the worker makes; the Redis transport's own cost per call is
//! the broker side's bench). GitHub's scheduler is a thread that hands each job to the
//! runner its worker spawned for it (read from the claim files) as soon as it is online;
//! the fake runner finishes the job at once, so a worker is free again when its runner is
//! gone.
//!
//! Run: `cargo bench --features testkit --bench reactive` (N = 20 jobs, 8 workers;
//! `REACTIVE_BENCH_JOBS`, `REACTIVE_BENCH_WORKERS` override). Without `--bench` (as under
//! `cargo test --all-targets`) a smoke pass: 2 jobs, 2 workers.

#[path = "../tests/support/executable.rs"]
mod executable;
#[path = "../tests/support/fake_github/mod.rs"]
mod fake_github;
#[path = "../tests/support/fixture_runtime.rs"]
mod fixture_runtime;
#[path = "../tests/support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use fixture_runtime::FixtureUnit;
use github_runner::charm::fleet::CharmRunnerOps;
use github_runner::clock::SystemClock;
use github_runner::reactive::claim::ClaimDir;
use github_runner::reactive::memory_queue::MemoryQueue;
use github_runner::reactive::run::{unit_scope, LxdRunners};
use github_runner::reactive::worker::{
    GitHubJobs, Worker, WorkerEvent, WorkerReport, WorkerState, WorkerTimings,
};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REPO: &str = "octo/hello";

struct NoReport;

impl WorkerReport for NoReport {
    fn event(&self, _: WorkerEvent) {}
    fn state(&self, _: &WorkerState) {}
}

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// runner name -> job id, from the claim files (`slot=N runner=NAME`).
fn claimed_runners(dir: &Path) -> BTreeMap<String, u64> {
    let mut map = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(job) = name.strip_prefix("job-").and_then(|j| j.parse().ok()) else {
            continue;
        };
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        if let Some(r) = text
            .split_whitespace()
            .find_map(|f| f.strip_prefix("runner="))
        {
            map.insert(r.to_string(), job);
        }
    }
    map
}

/// What one phase measured.
struct Phase {
    /// Seconds from each job's put to its runner online, sorted.
    latencies: Vec<f64>,
    wall: f64,
    served: usize,
    broker_calls: u64,
}

/// `jobs` jobs through `workers` workers. `one_at_a_time`: each job is put once the previous
/// one is served (latency with a free worker); else all at once (throughput).
fn phase(u: &FixtureUnit, jobs: usize, workers: usize, one_at_a_time: bool) -> Phase {
    let (fx, gh, rt) = (&u.fx, &u.gh, &u.rt);
    let queue = MemoryQueue::new(Arc::new(SystemClock));
    let claims_dir = tempfile::tempdir_in(u.root.path()).unwrap();
    let claims = ClaimDir::open(claims_dir.path()).unwrap();
    let ops = CharmRunnerOps::new(rt);
    let runners = LxdRunners { rt, ops: &ops };
    let scope = unit_scope(rt, ops.labels());
    let github = GitHubJobs(&*rt.github);
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
                let claimed = claimed_runners(claims.path());
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
            let mut q = queue.clone();
            let (runners, scope, github, stop, claims) =
                (&runners, &scope, &github, &stop, &claims);
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
            });
        }
        let served_and_gone = |n: usize| {
            lxd_fixture::wait_for(Duration::from_secs(600), || {
                queue.acked() as usize >= n && fx.instance_names().is_empty()
            })
        };
        for (n, id) in ids.iter().enumerate() {
            let body = serde_json::json!({
                "labels": [], "status": "queued",
                "url": format!("{}/repos/{REPO}/actions/jobs/{id}", gh.api_base()),
            });
            put_at.lock().unwrap().insert(*id, Instant::now());
            queue.put(body.to_string().into_bytes(), 0);
            if one_at_a_time {
                assert!(served_and_gone(n + 1), "job {n} not served");
            }
        }
        let done = served_and_gone(jobs);
        stop.store(true, Ordering::SeqCst);
        assert!(done, "jobs not all served: acked {}", queue.acked());
    });
    let wall = started.elapsed().as_secs_f64();
    let mut latencies: Vec<f64> = online_after.lock().unwrap().values().copied().collect();
    latencies.sort_by(f64::total_cmp);
    let served = ids
        .iter()
        .filter(|id| gh.job(**id).is_some_and(|j| j.status == "completed"))
        .count();
    assert_eq!(served, jobs, "every job served");
    assert_eq!(queue.total(), 0, "no message left");
    Phase {
        latencies,
        wall,
        served,
        broker_calls: queue.round_trips(),
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

    // The floor: raw `lxc launch` of one container, the median of five, same daemon, now.
    let mut raw_launch: Vec<f64> = (0..5)
        .map(|i| {
            let name = format!("raw-{i}");
            let t = Instant::now();
            unit.fx
                .lxc_ok(&["launch", "jammy", &name, "--ephemeral", "--quiet"]);
            let took = t.elapsed().as_secs_f64();
            let _ = unit.fx.lxc(&["delete", "--force", &name]);
            took
        })
        .collect();
    raw_launch.sort_by(f64::total_cmp);
    let raw = raw_launch[raw_launch.len() / 2];

    let latency = phase(&unit, jobs, 1, true);
    let burst = phase(&unit, jobs, workers, false);
    let (p50, p95) = (
        percentile(&latency.latencies, 0.5),
        percentile(&latency.latencies, 0.95),
    );
    let (bp50, bp95) = (
        percentile(&burst.latencies, 0.5),
        percentile(&burst.latencies, 0.95),
    );
    println!(
        "reactive: {jobs} jobs, real LXD + fake GitHub, in-memory queue ({})",
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
