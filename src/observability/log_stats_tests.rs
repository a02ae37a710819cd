use super::*;
use crate::host::metrics::render_line;
use crate::host::metrics::{
    ReactiveJobPickedUp, Reconciliation, RunnerCreationPhases, RunnerStart, RunnerStop,
    ScaleSetJobStarted,
};
use std::io::Write;

fn reconciliation(duration: f64, crashed: u32) -> String {
    render_line(
        &MetricEvent::Reconciliation(Reconciliation {
            flavor: "gr".into(),
            crashed_runners: crashed,
            idle_runners: 1,
            duration,
        }),
        1,
    )
    .unwrap()
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn every_event_lands_in_its_metric() {
    let m = LogMetrics::default();
    m.ingest_line(&reconciliation(12.0, 2));
    m.ingest_line(
        &render_line(
            &MetricEvent::RunnerStart(RunnerStart {
                flavor: "gr".into(),
                workflow: "w".into(),
                repo: "o/r".into(),
                github_event: "push".into(),
                idle: 5.0,
                queue_duration: Some(3.0),
            }),
            1,
        )
        .unwrap(),
    );
    m.ingest_line(
        &render_line(
            &MetricEvent::RunnerStop(RunnerStop {
                flavor: "gr".into(),
                workflow: "w".into(),
                repo: "o/r".into(),
                github_event: "push".into(),
                status: StopStatus::Abnormal,
                status_info: None,
                job_duration: 30.0,
                job_conclusion: None,
            }),
            1,
        )
        .unwrap(),
    );
    m.ingest_line(
        &render_line(
            &MetricEvent::RunnerCreationPhases(RunnerCreationPhases {
                flavor: "gr".into(),
                launch: 1.0,
                first_exec: 0.5,
                files_pushed: 2.0,
                listener_started: 0.1,
            }),
            1,
        )
        .unwrap(),
    );
    m.ingest_line(
        &render_line(
            &MetricEvent::ReactiveJobPickedUp(ReactiveJobPickedUp {
                flavor: "gr".into(),
                queue_seconds: Some(7.0),
            }),
            1,
        )
        .unwrap(),
    );
    m.ingest_line(
        &render_line(
            &MetricEvent::ScaleSetJobStarted(ScaleSetJobStarted {
                flavor: "gr".into(),
                runner_online: 9.0,
                job_started: 12.5,
            }),
            1,
        )
        .unwrap(),
    );
    m.ingest_line("not json");
    m.ingest_line(r#"{"timestamp": 1, "event": "someone_elses"}"#);
    m.ingest_line("");
    assert_eq!(m.crashed_runners.get(), 2);
    assert_eq!(m.jobs_started.get(), 1);
    assert_eq!(m.skipped_lines.get(), 2);
    let abnormal = vec![("status".to_string(), "abnormal".to_string())];
    assert_eq!(m.jobs_stopped.get_or_create(&abnormal).get(), 1);
    let text = super::super::exposition::render(None, &m, None);
    for line in [
        "github_runner_reconcile_duration_seconds_sum 12.0",
        "github_runner_job_queue_duration_seconds_count 1",
        "github_runner_reactive_pickup_duration_seconds_sum 7.0",
        "github_runner_creation_phase_duration_seconds_sum{phase=\"files_pushed\"} 2.0",
        "github_runner_job_duration_seconds_sum 30.0",
        "github_runner_scale_set_time_to_runner_seconds_sum{stage=\"runner_online\"} 9.0",
        "github_runner_scale_set_time_to_runner_seconds_bucket{le=\"10.0\",stage=\"runner_online\"} 1",
        "github_runner_scale_set_time_to_runner_seconds_sum{stage=\"job_started\"} 12.5",
        "github_runner_scale_set_time_to_runner_seconds_bucket{le=\"10.0\",stage=\"job_started\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
}

#[test]
fn the_tail_reads_only_new_complete_lines_and_starts_over_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.log");
    let m = LogMetrics::default();
    let mut tail = LogTail::new(&path);
    assert_eq!(tail.poll(&m).unwrap(), 0, "no file yet");
    append(&path, &reconciliation(1.0, 1));
    let second = reconciliation(2.0, 1);
    let (head, rest) = second.split_at(10);
    append(&path, head);
    tail.poll(&m).unwrap();
    assert_eq!(m.crashed_runners.get(), 1, "the half line waits");
    append(&path, rest);
    tail.poll(&m).unwrap();
    assert_eq!(m.crashed_runners.get(), 2);
    assert_eq!(tail.poll(&m).unwrap(), 0, "nothing new");
    // logrotate: the file is replaced by a new, empty one.
    std::fs::remove_file(&path).unwrap();
    append(&path, &reconciliation(3.0, 5));
    tail.poll(&m).unwrap();
    assert_eq!(m.crashed_runners.get(), 7);
    assert_eq!(m.skipped_lines.get(), 0);
}

#[test]
fn an_over_long_line_is_skipped_and_the_next_line_still_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.log");
    let m = LogMetrics::default();
    let mut tail = LogTail::new(&path);
    append(&path, &"x".repeat(MAX_LINE_BYTES + 5));
    tail.poll(&m).unwrap();
    append(&path, &format!("yyy\n{}", reconciliation(1.0, 3)));
    tail.poll(&m).unwrap();
    assert_eq!(m.skipped_lines.get(), 1);
    assert_eq!(m.crashed_runners.get(), 3);
}

#[test]
fn a_large_backlog_is_read_over_several_scrapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.log");
    let line = reconciliation(1.0, 1);
    let lines = (MAX_READ_PER_SCRAPE as usize / line.len()) + 100;
    append(&path, &line.repeat(lines));
    let m = LogMetrics::default();
    let mut tail = LogTail::new(&path);
    assert_eq!(tail.poll(&m).unwrap(), MAX_READ_PER_SCRAPE);
    assert!(m.crashed_runners.get() < lines as u64);
    tail.poll(&m).unwrap();
    assert_eq!(m.crashed_runners.get(), lines as u64);
}
