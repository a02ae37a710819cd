//! Cost of the metrics exporter: scrape wall time (first scrape over a week-sized metrics log,
//! then steady scrapes with a few new events between each) and the service's resident memory.
//! Targets: a scrape < 5 ms, RSS < 10 MiB.
//!
//! `cargo bench --features testkit --bench metrics_exporter` (release build, 500 scrapes).
//! Under `cargo test --all-targets` (no `--bench` argument) a 20-scrape smoke pass.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use github_runner::host::metrics::{
    render_line, MetricEvent, Reconciliation, RunnerCreationPhases, RunnerInstalled, RunnerStart,
    RunnerStop, StopStatus,
};
use github_runner::paths::HostPaths;

struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One week of a busy unit: a round every 5 minutes, 20 jobs an hour.
fn week_of_events() -> Vec<MetricEvent> {
    let mut events = Vec::new();
    for i in 0..(7 * 24 * 12) {
        events.push(MetricEvent::Reconciliation(Reconciliation {
            flavor: "github-runner".into(),
            crashed_runners: (i % 50 == 0) as u32,
            idle_runners: 3,
            duration: 2.0 + (i % 7) as f64,
        }));
        if i % 3 == 0 {
            events.extend(job_events(i));
        }
    }
    events
}

fn job_events(i: usize) -> Vec<MetricEvent> {
    vec![
        MetricEvent::RunnerInstalled(RunnerInstalled {
            flavor: "github-runner".into(),
            duration: 20.0 + (i % 11) as f64,
        }),
        MetricEvent::RunnerCreationPhases(RunnerCreationPhases {
            flavor: "github-runner".into(),
            launch: 1.5,
            first_exec: 2.0,
            files_pushed: 4.0,
            listener_started: 0.2,
        }),
        MetricEvent::RunnerStart(RunnerStart {
            flavor: "github-runner".into(),
            workflow: "CI".into(),
            repo: "canonical/github-runner-operator".into(),
            github_event: "pull_request".into(),
            idle: 30.0,
            queue_duration: Some((i % 40) as f64),
        }),
        MetricEvent::RunnerStop(RunnerStop {
            flavor: "github-runner".into(),
            workflow: "CI".into(),
            repo: "canonical/github-runner-operator".into(),
            github_event: "pull_request".into(),
            status: StopStatus::Normal,
            status_info: None,
            job_duration: 300.0,
            job_conclusion: Some("success".into()),
        }),
    ]
}

fn append(paths: &HostPaths, events: &[MetricEvent]) {
    let mut text = String::new();
    for e in events {
        text.push_str(&render_line(e, 1_700_000_000).expect("render"));
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(paths.metrics_log())
        .expect("open the log");
    f.write_all(text.as_bytes()).expect("append");
}

fn state_file(paths: &HostPaths) {
    let calls: Vec<String> = [
        "list-runners",
        "generate-jitconfig",
        "delete-runner",
        "get-job",
        "list-run-jobs",
    ]
    .iter()
    .flat_map(|e| {
        ["200", "201", "404", "502"]
            .map(|s| format!(r#"{{"endpoint":"{e}","status":"{s}","count":1234}}"#))
    })
    .collect();
    let text = format!(
        r#"{{"version":1,"flavor":"github-runner","updated_at":1700000000,"reconcile_interval_secs":300,
        "census":{{"desired":10,"idle":6,"busy":3,"creating":1,"offline":0,"unhealthy":0}},
        "last_reconcile_at":1700000000,"last_reconcile_duration_secs":4.0,"last_reconcile_outcome":"success",
        "reconciles":{{"success":2000,"partial":3}},"creations_succeeded":700,"creations_failed":2,
        "github_calls":[{}],"rate_limit":{{"remaining":4200,"limit":5000,"reset_epoch":1700003600}},
        "runner_binary_version":"2.320.0","reactive":{{"workers":4,"workers_busy":2,"queue_length":1}}}}"#,
        calls.join(",")
    );
    let path = paths.exporter_state();
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("state dir");
    std::fs::write(path, text).expect("write the state");
}

fn get_metrics(addr: SocketAddr) -> (Duration, usize) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut body = Vec::new();
    s.read_to_end(&mut body).expect("response");
    let took = started.elapsed();
    assert!(
        body.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert!(body.ends_with(b"# EOF\n"));
    (took, body.len())
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("the field")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scrapes = if full { 500 } else { 20 };
    let root = tempfile::tempdir().expect("temp root");
    let paths = HostPaths::new(root.path());
    std::fs::create_dir_all(paths.metrics_log().parent().expect("a parent")).expect("log dir");
    let backlog = week_of_events();
    append(&paths, &backlog);
    state_file(&paths);
    let log_bytes = std::fs::metadata(paths.metrics_log()).expect("log").len();

    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let child = Command::new(env!("CARGO_BIN_EXE_github-runner-charm"))
        .args(["metrics-exporter", "--listen", &addr.to_string()])
        .env_clear()
        .env("GITHUB_RUNNER_HOST_ROOT", root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the exporter");
    let exporter = Exporter(child);
    let pid = exporter.0.id();
    let spawned = Instant::now();
    let deadline = spawned + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "the exporter never listened");
        std::thread::sleep(Duration::from_millis(10));
    }
    let start_up = spawned.elapsed();
    let idle_rss = rss_kib(pid, "VmRSS:");

    let (first, size) = get_metrics(addr);
    let mut times = Vec::new();
    for i in 0..scrapes {
        append(&paths, &job_events(i));
        times.push(get_metrics(addr).0);
    }
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let rss = rss_kib(pid, "VmRSS:");
    let peak = rss_kib(pid, "VmHWM:");

    println!(
        "metrics exporter ({}): {} backlog events ({} KiB log), body {} bytes",
        if full { "release build" } else { "smoke pass" },
        backlog.len(),
        log_bytes / 1024,
        size
    );
    let rows: [(String, String, &str); 8] = [
        (
            "start-up to listening (reads the backlog)".into(),
            format!("{:.2} ms", ms(start_up)),
            "",
        ),
        (
            "first scrape".into(),
            format!("{:.2} ms", ms(first)),
            "< 5 ms",
        ),
        (
            format!("scrape p50 ({scrapes} scrapes, 4 new events each)"),
            format!("{:.2} ms", ms(p(0.5))),
            "< 5 ms",
        ),
        (
            "scrape p95".into(),
            format!("{:.2} ms", ms(p(0.95))),
            "< 5 ms",
        ),
        ("scrape max".into(), format!("{:.2} ms", ms(p(1.0))), ""),
        (
            "RSS before the first scrape".into(),
            format!("{:.2} MiB", idle_rss as f64 / 1024.0),
            "",
        ),
        (
            "RSS after the scrapes".into(),
            format!("{:.2} MiB", rss as f64 / 1024.0),
            "< 10 MiB",
        ),
        (
            "peak RSS (VmHWM)".into(),
            format!("{:.2} MiB", peak as f64 / 1024.0),
            "< 10 MiB",
        ),
    ];
    println!("| {:<46} | {:>10} | {:<8} |", "measure", "value", "target");
    println!("|{}|{}|{}|", "-".repeat(48), "-".repeat(12), "-".repeat(10));
    for (what, value, target) in rows {
        println!("| {what:<46} | {value:>10} | {target:<8} |");
    }
    if full {
        assert!(p(0.95) < Duration::from_millis(5), "scrape p95 over 5 ms");
        assert!(peak < 10 * 1024, "peak RSS over 10 MiB");
    }
}
