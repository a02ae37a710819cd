//! The exposition (OpenMetrics text, through the `prometheus-client` crate) from the state
//! file and the log's metrics. A fresh registry per scrape: the state's numbers are set, the
//! log's long-lived histograms are registered by handle. Builds in microseconds.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use super::log_stats::{Labels, LogMetrics};
use super::state::{ExporterState, RoundOutcome};

/// What a scrape answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The runner states of `github_runner_runners{state}`.
pub const RUNNER_STATES: [&str; 5] = ["idle", "busy", "creating", "offline", "unhealthy"];

pub(super) type FGauge = Gauge<f64, AtomicU64>;

pub(super) fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g = FGauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn register_state(registry: &mut Registry, state: &ExporterState) {
    let runners: Family<Labels, FGauge> = Family::default();
    let c = &state.census;
    for (name, n) in RUNNER_STATES
        .iter()
        .zip([c.idle, c.busy, c.creating, c.offline, c.unhealthy])
    {
        runners
            .get_or_create(&labels(&[("state", name)]))
            .set(f64::from(n));
    }
    registry.register(
        "github_runner_runners",
        "This unit's runners by state after the last reconcile round",
        runners,
    );
    gauge(
        registry,
        "github_runner_runners_desired",
        "Runners the unit should keep (virtual-machines)",
        f64::from(c.desired),
    );
    gauge(
        registry,
        "github_runner_last_reconcile_timestamp_seconds",
        "When the last reconcile round finished (Unix time)",
        state.last_reconcile_at as f64,
    );
    gauge(
        registry,
        "github_runner_last_reconcile_duration_seconds",
        "How long the last reconcile round took",
        state.last_reconcile_duration_secs,
    );
    gauge(
        registry,
        "github_runner_last_reconcile_success",
        "1 when every operation of the last reconcile round succeeded, else 0",
        f64::from(u8::from(
            state.last_reconcile_outcome == RoundOutcome::Success,
        )),
    );
    gauge(
        registry,
        "github_runner_reconcile_interval_seconds",
        "The periodic reconcile's interval (reconcile-interval)",
        state.reconcile_interval_secs as f64,
    );
    let rounds: Family<Labels, Counter> = Family::default();
    for outcome in RoundOutcome::ALL {
        let n = state.reconciles.get(outcome.label()).copied().unwrap_or(0);
        rounds
            .get_or_create(&labels(&[("outcome", outcome.label())]))
            .inc_by(n);
    }
    registry.register(
        "github_runner_reconciles",
        "Reconcile rounds by outcome (success, partial: some operation failed, failed: could not run)",
        rounds,
    );
    let creations: Family<Labels, Counter> = Family::default();
    for (result, n) in [
        ("success", state.creations_succeeded),
        ("failure", state.creations_failed),
    ] {
        creations
            .get_or_create(&labels(&[("result", result)]))
            .inc_by(n);
    }
    registry.register(
        "github_runner_runner_creations",
        "Runner creations by result",
        creations,
    );
    let calls: Family<Labels, Counter> = Family::default();
    for call in &state.github_calls {
        calls
            .get_or_create(&labels(&[
                ("endpoint", &call.endpoint),
                ("status", &call.status),
            ]))
            .inc_by(call.count);
    }
    registry.register(
        "github_runner_github_api_calls",
        "GitHub API requests by endpoint and HTTP status (transport-error: no answer)",
        calls,
    );
    if let Some(rate) = state.rate_limit {
        gauge(
            registry,
            "github_runner_github_rate_limit_remaining",
            "Requests left in GitHub's rate-limit window, as the last answer said",
            rate.remaining as f64,
        );
        if let Some(limit) = rate.limit {
            gauge(
                registry,
                "github_runner_github_rate_limit_limit",
                "Requests allowed per rate-limit window",
                limit as f64,
            );
        }
        gauge(
            registry,
            "github_runner_github_rate_limit_reset_timestamp_seconds",
            "When GitHub's rate-limit window resets (Unix time)",
            rate.reset_epoch as f64,
        );
    }
    if let Some(version) = &state.runner_binary_version {
        registry.register(
            "github_runner_runner_binary",
            "The runner application version new runners get",
            Info::new(vec![("version".to_string(), version.clone())]),
        );
    }
    let r = &state.reactive;
    gauge(
        registry,
        "github_runner_reactive_workers",
        "Reactive workers running (0 when the unit is not reactive)",
        f64::from(r.workers),
    );
    gauge(
        registry,
        "github_runner_reactive_workers_busy",
        "Reactive workers holding a job",
        f64::from(r.workers_busy),
    );
    gauge(
        registry,
        "github_runner_reactive_queue_length",
        "Jobs waiting in the reactive queue",
        r.queue_length as f64,
    );
    gauge(
        registry,
        "github_runner_state_timestamp_seconds",
        "When the charm last wrote the exporter's state file (Unix time)",
        state.updated_at as f64,
    );
}

fn register_log(registry: &mut Registry, log: &LogMetrics) {
    registry.register(
        "github_runner_reconcile_duration_seconds",
        "Reconcile round durations (reconciliation events)",
        log.reconcile_duration.clone(),
    );
    registry.register(
        "github_runner_runner_install_duration_seconds",
        "Time from the start of a runner's creation to its listener started (runner_installed events)",
        log.runner_install_duration.clone(),
    );
    registry.register(
        "github_runner_job_queue_duration_seconds",
        "Time a job waited in GitHub's queue before a runner took it (runner_start events)",
        log.job_queue_duration.clone(),
    );
    registry.register(
        "github_runner_runner_idle_before_job_seconds",
        "Time a runner waited idle before it took a job (runner_start events)",
        log.runner_idle_before_job.clone(),
    );
    registry.register(
        "github_runner_job_duration_seconds",
        "Job durations (runner_stop events)",
        log.job_duration.clone(),
    );
    registry.register(
        "github_runner_creation_phase_duration_seconds",
        "Runner creation time per phase: launch, first_exec, files_pushed, listener_started (runner_creation_phases events)",
        log.creation_phase_duration.clone(),
    );
    registry.register(
        "github_runner_reactive_pickup_duration_seconds",
        "Reactive mode: time from a job entering the queue to a worker picking it up (reactive_job_picked_up events)",
        log.reactive_pickup_duration.clone(),
    );
    registry.register(
        "github_runner_scale_set_time_to_runner_seconds",
        "Scale-set mode: time from the listener seeing a job assigned to the runner that took it being online (stage runner_online) and to the job started (stage job_started) (scale_set_job_started events)",
        log.scale_set_time_to_runner.clone(),
    );
    registry.register(
        "github_runner_jobs_started",
        "Jobs runners started (runner_start events)",
        log.jobs_started.clone(),
    );
    registry.register(
        "github_runner_jobs_stopped",
        "Jobs runners finished, by status (runner_stop events)",
        log.jobs_stopped.clone(),
    );
    registry.register(
        "github_runner_crashed_runners",
        "Runners found dead by reconcile rounds (reconciliation events)",
        log.crashed_runners.clone(),
    );
    registry.register(
        "github_runner_metrics_log_skipped_lines",
        "Lines of the metrics log the exporter could not read as an event",
        log.skipped_lines.clone(),
    );
}

/// The scrape's body. `state` None before the charm wrote its first state file;
/// `scale_set` None for a unit that never ran a scale-set listener.
pub fn render(
    state: Option<&ExporterState>,
    log: &LogMetrics,
    scale_set: Option<&super::scale_set::ScaleSetView>,
) -> String {
    let mut registry = Registry::default();
    gauge(
        &mut registry,
        "github_runner_exporter_state_present",
        "1 when the charm's state file was read, 0 before the first reconcile wrote it",
        f64::from(u8::from(state.is_some())),
    );
    if let Some(state) = state {
        register_state(&mut registry, state);
    }
    register_log(&mut registry, log);
    if let Some(view) = scale_set {
        super::scale_set::register(&mut registry, view);
    }
    let mut out = String::with_capacity(16 * 1024);
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &registry);
    out
}

#[cfg(test)]
#[path = "exposition_tests.rs"]
pub(crate) mod tests;
