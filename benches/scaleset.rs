//! Scale-set mode's latency, throughput, call count and idle cost (issue 23, item 8): the
//! real listener process (`github-runner-worker --scale-set`) with the charm's runner code
//! on the real LXD daemon (a project of its own) against the fake scale set service, whose
//! fake runners come online, take a job and finish it at once.
//!
//! - job queued -> runner online, p50 and p95 of a burst of N jobs queued at once (the i-th
//!   runner seen online against the queue time), beside a raw `lxc launch` in the same run;
//!   the listener's own time to runner (its `scale_set_job_started` events) beside it;
//! - jobs per minute for that burst (queued to the last job completed), at most
//!   `virtual-machines` runners at once;
//! - calls per job: REST (registration tokens) and the Actions service apart, startup
//!   (scale set, session) not counted;
//! - the listener's RSS and CPU while idle (a long poll and nothing queued).
//!
//! Run: `cargo bench --features testkit --bench scaleset` (N = 20 jobs, 4 runners at once;
//! `SCALESET_BENCH_JOBS`, `SCALESET_BENCH_RUNNERS` override). Without `--bench` (as under
//! `cargo test --all-targets`) a smoke pass: 2 jobs, 2 runners, 2 s idle.

#[path = "../tests/support/executable.rs"]
mod executable;
#[path = "../tests/support/fake_scaleset/mod.rs"]
mod fake_scaleset;
#[path = "../tests/support/lxd_fixture/mod.rs"]
mod lxd_fixture;
#[path = "support/measure.rs"]
mod measure;
#[path = "../tests/support/scaleset_process.rs"]
#[allow(dead_code)]
mod scaleset_process;

use fake_scaleset::{Endpoint, JobState};
use github_runner::paths::HostPaths;
use github_runner::scaleset::listener_state::ListenerPhase;
use lxd_fixture::{wait_for, LxdFixture};
use measure::{knob, percentile, raw_launch_median, sorted};
use scaleset_process::{fake_for, owned, start_listener, terminate, UNIT, WAIT};
use std::time::{Duration, Instant};

/// User + system CPU seconds of `pid` so far (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// (REST, service) requests so far; the fake runners' own calls are not the charm's.
fn calls(fake: &fake_scaleset::FakeScaleSetService) -> (usize, usize) {
    let requests = fake.requests();
    let runner_side = |e: Endpoint| {
        matches!(
            e,
            Endpoint::RunnerOnline | Endpoint::RunnerWaitJob | Endpoint::RunnerDone
        )
    };
    let rest = requests
        .iter()
        .filter(|r| r.endpoint == Endpoint::RegistrationToken || r.path.starts_with("/api/v3"))
        .count();
    let service = requests.iter().filter(|r| !runner_side(r.endpoint)).count() - rest;
    (rest, service)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (jobs, runners, idle) = if full {
        (
            knob("SCALESET_BENCH_JOBS", 20),
            knob("SCALESET_BENCH_RUNNERS", 4),
            Duration::from_secs(10),
        )
    } else {
        (2, 2, Duration::from_secs(2))
    };
    let fx = LxdFixture::new();

    // The floor: raw `lxc launch` of one container, same daemon, now.
    let raw = raw_launch_median(&fx);

    let fake = fake_for(&fx);
    let root = tempfile::tempdir().expect("a host root");
    let mut listener = start_listener(&fx, &fake, root.path(), runners as u32);
    assert!(
        wait_for(WAIT, || matches!(
            listener.slot().listener.and_then(|l| l.phase),
            Some(ListenerPhase::Listening { .. })
        )),
        "the listener listens: {}",
        listener.log()
    );
    let (rest_before, service_before) = calls(&fake);

    let queued = Instant::now();
    let ids: Vec<String> = (0..jobs).map(|_| fake.enqueue_job(&["lxd"])).collect();
    let mut most_at_once = 0usize;
    let done = |fake: &fake_scaleset::FakeScaleSetService| {
        ids.iter()
            .all(|j| matches!(fake.job(j).map(|j| j.state), Some(JobState::Completed(_))))
    };
    let deadline = Instant::now() + WAIT * (jobs as u32).max(1);
    while !done(&fake) {
        assert!(
            Instant::now() < deadline,
            "every job served: {}",
            listener.log()
        );
        most_at_once = most_at_once.max(owned(&fx).len());
        std::thread::sleep(Duration::from_millis(20));
    }
    let wall = queued.elapsed().as_secs_f64();
    let online_at: Vec<f64> = fake.with_state(|st| {
        st.came_online
            .iter()
            .map(|(_, at)| at.duration_since(queued).as_secs_f64())
            .collect()
    });
    assert!(wait_for(WAIT, || owned(&fx).is_empty()), "runners gone");
    let (rest_after, service_after) = calls(&fake);

    // Idle: the long poll only.
    let pid = listener.pid();
    let (cpu0, t0) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(idle);
    let idle_cpu = (cpu_seconds(pid) - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    let rss = rss_kib(pid);
    let status = terminate(&mut listener);
    assert!(status.success(), "{status:?}: {}", listener.log());

    let metrics = HostPaths::for_unit(root.path(), UNIT).metrics_log();
    let lines = std::fs::read_to_string(metrics).unwrap_or_default();
    let events: Vec<serde_json::Value> = lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "scale_set_job_started")
        .collect();
    let own = |key: &str| sorted(events.iter().filter_map(|e| e[key].as_f64()).collect());
    let (own_online, own_started) = (own("runner_online"), own("job_started"));

    let online = sorted(online_at);
    let per_job = |n: usize| n as f64 / jobs as f64;
    println!("scale-set mode: {jobs} jobs queued at once, at most {runners} runners");
    println!("{:<56} {:>10}", "measure", "value");
    println!("{:<56} {:>9.2}s", "raw lxc launch (median of 5)", raw);
    for (name, v) in [
        ("job queued -> runner online p50", percentile(&online, 0.5)),
        ("job queued -> runner online p95", percentile(&online, 0.95)),
        (
            "listener: assigned -> runner online p50",
            percentile(&own_online, 0.5),
        ),
        (
            "listener: assigned -> runner online p95",
            percentile(&own_online, 0.95),
        ),
        (
            "listener: assigned -> job started p50",
            percentile(&own_started, 0.5),
        ),
        (
            "listener: assigned -> job started p95",
            percentile(&own_started, 0.95),
        ),
    ] {
        println!("{name:<56} {v:>9.2}s");
    }
    println!(
        "{:<56} {:>10.1}",
        "jobs per minute (burst)",
        jobs as f64 / wall * 60.0
    );
    println!(
        "{:<56} {:>10}",
        "most runner instances at once", most_at_once
    );
    println!(
        "{:<56} {:>10.2}",
        "REST calls per job",
        per_job(rest_after - rest_before)
    );
    println!(
        "{:<56} {:>10.2}",
        "Actions service calls per job",
        per_job(service_after - service_before)
    );
    println!(
        "{:<56} {:>10}",
        "startup calls (REST + service)",
        rest_before + service_before
    );
    println!("{:<56} {:>8} KiB", "listener RSS while idle", rss);
    println!("{:<56} {:>9.2}%", "listener CPU while idle", idle_cpu);
    assert!(most_at_once <= runners, "never above virtual-machines");
    assert_eq!(online.len(), jobs, "one runner per job");
}
