//! Observability through COS: the Prometheus exporter (this charm's own binary in
//! `metrics-exporter` mode, a systemd service per unit), its state file, and the `cos-agent`
//! relation data (scrape job, alert rules, dashboards) the grafana agent forwards to COS.
//!
//! Data flow: hooks write the JSON-lines metrics log (`host::metrics`) and, after each
//! reconcile round, the exporter state file ([`state`]); the exporter reads both on each
//! scrape ([`server`], [`log_stats`], [`exposition`]), and a scale-set listener's slot file
//! ([`scale_set`]); it never calls GitHub or LXD.

pub mod cos_agent;
pub mod exposition;
pub mod hooks;
pub mod log_stats;
pub mod scale_set;
pub mod server;
pub mod service;
pub mod state;
#[cfg(any(test, feature = "testkit"))]
pub mod testing;

pub use hooks::{
    ensure_exporter, note_runner_binary, on_event, record_round, refresh_cos_agent,
    remove_exporter, repair_exporter, restart_exporter,
};

use crate::host::metrics::{MetricEvent, RunnerCreationPhases};
use crate::runner::CreationPhases;

/// The `runner_creation_phases` event of one creation. Pure.
pub fn creation_phases_event(flavor: &str, phases: &CreationPhases) -> MetricEvent {
    MetricEvent::RunnerCreationPhases(RunnerCreationPhases {
        flavor: flavor.to_string(),
        launch: phases.launch.as_secs_f64(),
        first_exec: phases.first_exec.as_secs_f64(),
        files_pushed: phases.files_pushed.as_secs_f64(),
        listener_started: phases.listener_started.as_secs_f64(),
    })
}
