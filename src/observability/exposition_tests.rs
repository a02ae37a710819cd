use super::*;
use crate::github::outcomes::RateLimit;
use crate::manager::status::Census;
use crate::observability::state::{ApiCallCount, ReactiveGauges, STATE_VERSION};
use crate::observability::testing::{parse_openmetrics, value};

pub(crate) fn sample_state() -> ExporterState {
    ExporterState {
        version: STATE_VERSION,
        flavor: "gr".into(),
        updated_at: 1_700_000_100,
        reconcile_interval_secs: 600,
        census: Census {
            desired: 4,
            idle: 2,
            busy: 1,
            creating: 1,
            offline: 0,
            unhealthy: 3,
            replacing: 0,
        },
        last_reconcile_at: 1_700_000_000,
        last_reconcile_duration_secs: 7.0,
        last_reconcile_outcome: RoundOutcome::Partial,
        reconciles: [("success".to_string(), 5), ("partial".to_string(), 1)]
            .into_iter()
            .collect(),
        creations_succeeded: 9,
        creations_failed: 2,
        github_calls: vec![ApiCallCount {
            endpoint: "list-runners".into(),
            status: "200".into(),
            count: 6,
        }],
        rate_limit: Some(RateLimit {
            remaining: 4321,
            limit: Some(5000),
            reset_epoch: 1_700_003_600,
        }),
        runner_binary_version: Some("2.311.0".into()),
        reactive: ReactiveGauges {
            workers: 3,
            workers_busy: 2,
            queue_length: 5,
        },
    }
}

#[test]
fn the_exposition_parses_with_the_prometheus_parser_and_carries_the_state() {
    let log = LogMetrics::default();
    log.reconcile_duration.observe(3.0);
    let text = render(Some(&sample_state()), &log, None);
    assert!(text.ends_with("# EOF\n"), "{text}");
    let samples = parse_openmetrics(&text);
    let v = |name: &str, labels: &[(&str, &str)]| {
        value(&samples, name, labels).unwrap_or_else(|| panic!("{name} {labels:?}\n{text}"))
    };
    assert_eq!(v("github_runner_runners", &[("state", "idle")]), 2.0);
    assert_eq!(v("github_runner_runners", &[("state", "busy")]), 1.0);
    assert_eq!(v("github_runner_runners", &[("state", "creating")]), 1.0);
    assert_eq!(v("github_runner_runners", &[("state", "unhealthy")]), 3.0);
    assert_eq!(v("github_runner_runners_desired", &[]), 4.0);
    assert_eq!(v("github_runner_last_reconcile_success", &[]), 0.0);
    assert_eq!(
        v("github_runner_reconciles_total", &[("outcome", "success")]),
        5.0
    );
    assert_eq!(
        v("github_runner_reconciles_total", &[("outcome", "failed")]),
        0.0
    );
    assert_eq!(
        v(
            "github_runner_runner_creations_total",
            &[("result", "failure")]
        ),
        2.0
    );
    assert_eq!(
        v(
            "github_runner_github_api_calls_total",
            &[("endpoint", "list-runners"), ("status", "200")]
        ),
        6.0
    );
    assert_eq!(v("github_runner_github_rate_limit_remaining", &[]), 4321.0);
    assert_eq!(v("github_runner_github_rate_limit_limit", &[]), 5000.0);
    assert_eq!(
        v(
            "github_runner_runner_binary_info",
            &[("version", "2.311.0")]
        ),
        1.0
    );
    assert_eq!(v("github_runner_reactive_queue_length", &[]), 5.0);
    assert_eq!(
        v("github_runner_reconcile_duration_seconds_count", &[]),
        1.0
    );
    assert_eq!(
        v(
            "github_runner_reconcile_duration_seconds_bucket",
            &[("le", "5.0")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "github_runner_reconcile_duration_seconds_bucket",
            &[("le", "2.0")]
        ),
        0.0
    );
    assert_eq!(
        v(
            "github_runner_creation_phase_duration_seconds_count",
            &[("phase", "launch")]
        ),
        0.0
    );
    assert_eq!(v("github_runner_exporter_state_present", &[]), 1.0);
}

#[test]
fn without_a_state_file_the_exposition_still_parses_and_says_so() {
    let text = render(None, &LogMetrics::default(), None);
    let samples = parse_openmetrics(&text);
    assert_eq!(
        value(&samples, "github_runner_exporter_state_present", &[]),
        Some(0.0)
    );
    assert_eq!(value(&samples, "github_runner_runners_desired", &[]), None);
}

/// A listening scale-set listener with the service's statistics.
pub(crate) fn sample_scale_set_view() -> crate::observability::scale_set::ScaleSetView {
    use crate::scaleset::listener_state::ListenerPhase;
    crate::observability::scale_set::ScaleSetView {
        live: true,
        snapshot: Some(crate::scaleset::process::ListenerSnapshot {
            scale_set: "linux-0".into(),
            phase: Some(ListenerPhase::Listening { scale_set_id: 7 }),
            statistics: Some(crate::scaleset::Statistics {
                total_available_jobs: 1,
                total_acquired_jobs: 2,
                total_assigned_jobs: 3,
                total_running_jobs: 4,
                total_registered_runners: 5,
                total_busy_runners: 6,
                total_idle_runners: 7,
            }),
        }),
    }
}

#[test]
fn a_scale_set_listeners_phase_and_statistics_are_gauges_the_parser_reads() {
    let text = render(
        Some(&sample_state()),
        &LogMetrics::default(),
        Some(&sample_scale_set_view()),
    );
    let samples = parse_openmetrics(&text);
    let v = |name: &str, labels: &[(&str, &str)]| {
        value(&samples, name, labels).unwrap_or_else(|| panic!("{name} {labels:?}\n{text}"))
    };
    assert_eq!(
        v(
            "github_runner_scale_set_listener",
            &[("phase", "listening")]
        ),
        1.0
    );
    assert_eq!(
        v("github_runner_scale_set_listener", &[("phase", "down")]),
        0.0
    );
    for (state, n) in [
        ("available", 1.0),
        ("acquired", 2.0),
        ("assigned", 3.0),
        ("running", 4.0),
    ] {
        assert_eq!(v("github_runner_scale_set_jobs", &[("state", state)]), n);
    }
    for (state, n) in [("registered", 5.0), ("busy", 6.0), ("idle", 7.0)] {
        assert_eq!(v("github_runner_scale_set_runners", &[("state", state)]), n);
    }
    let none = render(Some(&sample_state()), &LogMetrics::default(), None);
    // The time-to-runner histogram comes from the metrics log, like every histogram.
    assert!(
        !none
            .lines()
            .any(|l| l.contains("scale_set") && !l.contains("scale_set_time_to_runner")),
        "a unit without a listener shows no listener gauge"
    );
}
