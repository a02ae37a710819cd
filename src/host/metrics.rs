//! Metrics events as JSON lines, with the Python charm's event names and fields, so the same
//! COS dashboards and Loki rules read them; plus the logrotate rule for the file.
//!
//! Each line is `{"timestamp": <epoch seconds>, "event": "<name>", ...fields}`; optional
//! fields that are unset are left out (pydantic's `exclude_none`).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::paths::HostPaths;

/// A runner finished installing (`flavor` is the application name).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerInstalled {
    pub flavor: String,
    /// Seconds from creation to installed.
    pub duration: f64,
}

/// A runner started a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerStart {
    pub flavor: String,
    pub workflow: String,
    pub repo: String,
    pub github_event: String,
    /// Seconds the runner waited idle before the job.
    pub idle: f64,
    /// Seconds the job waited in the queue, when GitHub's jobs API told.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_duration: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StopStatus {
    Normal,
    Abnormal,
    RepoPolicyCheckFailure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeInformation {
    pub code: i32,
}

/// A runner finished (or failed) its job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerStop {
    pub flavor: String,
    pub workflow: String,
    pub repo: String,
    pub github_event: String,
    pub status: StopStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_info: Option<CodeInformation>,
    pub job_duration: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_conclusion: Option<String>,
}

/// A reconcile round finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub flavor: String,
    /// Runners that started a job and never reported its end.
    pub crashed_runners: u32,
    pub idle_runners: u32,
    /// Seconds the round took.
    pub duration: f64,
}

/// Where a successful runner creation spent its time (seconds per phase; not in the Python
/// charm). The phases follow `runner::create`: launch -> exec answers -> runner files in
/// place (tarball, extraction, JIT registration, start script) -> listener started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunnerCreationPhases {
    pub flavor: String,
    /// `lxc launch` until it returned.
    pub launch: f64,
    /// From launch until the instance first answered exec.
    pub first_exec: f64,
    /// From the first exec until the runner files, the registration and the start script
    /// were in place.
    pub files_pushed: f64,
    /// Starting the listener (the detached start command).
    pub listener_started: f64,
}

/// The reactive mode: a worker leased a job from the queue (not in the Python charm).
/// Read by the exporter's `github_runner_reactive_pickup_duration_seconds` histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReactiveJobPickedUp {
    pub flavor: String,
    /// Seconds from the job entering the queue to GitHub showing it picked, when the
    /// broker knows when it was queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_seconds: Option<f64>,
}

/// Scale-set mode: a job the listener saw assigned reached a runner (not in the Python
/// charm). Both from the listener seeing the JobAssigned, on its clock. Read by the
/// exporter's `github_runner_scale_set_time_to_runner_seconds` histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleSetJobStarted {
    pub flavor: String,
    /// Until the runner that took it was up (its creation done; 0 for a runner already
    /// idle when the job came).
    pub runner_online: f64,
    /// Until its JobStarted.
    pub job_started: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum MetricEvent {
    RunnerInstalled(RunnerInstalled),
    RunnerStart(RunnerStart),
    RunnerStop(RunnerStop),
    Reconciliation(Reconciliation),
    RunnerCreationPhases(RunnerCreationPhases),
    ReactiveJobPickedUp(ReactiveJobPickedUp),
    /// Reactive mode: a worker leased a job message.
    ReactiveJobReceived {
        flavor: String,
    },
    /// Reactive mode: a message acked without a runner (`reason`: see `reactive::job::DropReason::name`).
    ReactiveJobDropped {
        flavor: String,
        reason: String,
    },
    /// Reactive mode: a runner created for a job (`duration`: seconds the creation took).
    ReactiveRunnerSpawned {
        flavor: String,
        duration: f64,
    },
    /// Reactive mode: a message requeued; `process_count` is its new `X-Process-Count`.
    ReactiveJobRequeued {
        flavor: String,
        process_count: u32,
    },
    ScaleSetJobStarted(ScaleSetJobStarted),
}

/// One line of the log: the timestamp first, as the Python charm wrote it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricLine {
    pub timestamp: f64,
    #[serde(flatten)]
    pub event: MetricEvent,
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("could not append to the metrics log {path}: {reason}")]
    Append { path: PathBuf, reason: String },
    #[error("could not write the logrotate rule {path}: {reason}")]
    Logrotate { path: PathBuf, reason: String },
    #[error("could not encode a metrics event: {0}")]
    Encode(String),
}

/// The JSON line for `event` at `epoch`, newline included. Pure.
pub fn render_line(event: &MetricEvent, epoch: u64) -> Result<String, MetricsError> {
    let line = MetricLine {
        timestamp: epoch as f64,
        event: event.clone(),
    };
    let mut text = serde_json::to_string(&line).map_err(|e| MetricsError::Encode(e.to_string()))?;
    text.push('\n');
    Ok(text)
}

/// Appends events to `HostPaths::metrics_log()`.
#[derive(Debug, Clone)]
pub struct MetricsLog {
    path: PathBuf,
}

impl MetricsLog {
    pub fn new(paths: &HostPaths) -> Self {
        MetricsLog {
            path: paths.metrics_log(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one event. One `write` on an `O_APPEND` file, so lines from concurrent
    /// writers never interleave.
    pub fn issue(&self, event: &MetricEvent, clock: &dyn Clock) -> Result<(), MetricsError> {
        let line = render_line(event, clock.now_epoch())?;
        let err = |e: std::io::Error| MetricsError::Append {
            path: self.path.clone(),
            reason: e.to_string(),
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        // 0640: the log names repositories and workflows; the log shipper reads it as root
        // or through the group, other local users never.
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(METRICS_LOG_MODE)
            .open(&self.path)
            .map_err(err)?;
        crate::host::file::tighten_mode(&file, METRICS_LOG_MODE).map_err(err)?;
        file.write_all(line.as_bytes()).map_err(err)
    }
}

/// Mode of the metrics log, also when logrotate recreates it.
pub const METRICS_LOG_MODE: u32 = 0o640;

/// The logrotate rule for the metrics log: weekly, keeping no old copy (the log is shipped
/// as it is written), recreated empty. Pure.
pub fn render_logrotate(paths: &HostPaths) -> String {
    format!(
        "{} {{\n    weekly\n    rotate 0\n    missingok\n    notifempty\n    create 0640 root root\n}}\n",
        paths.metrics_log().display()
    )
}

/// Write the unit's logrotate rule when it differs. Returns whether it wrote.
pub fn install_logrotate(paths: &HostPaths) -> Result<bool, MetricsError> {
    let path = paths.metrics_logrotate_rule();
    // logrotate refuses rules that are group- or world-writable.
    crate::host::file::replace_if_changed(&path, &render_logrotate(paths), 0o644).map_err(|e| {
        MetricsError::Logrotate {
            path: path.clone(),
            reason: e.to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use serde_json::{json, Value};

    fn start(queue: Option<f64>) -> MetricEvent {
        MetricEvent::RunnerStart(RunnerStart {
            flavor: "github-runner".into(),
            workflow: "CI".into(),
            repo: "canonical/x".into(),
            github_event: "push".into(),
            idle: 12.5,
            queue_duration: queue,
        })
    }

    #[test]
    fn lines_have_the_python_names_fields_and_order() {
        let installed = MetricEvent::RunnerInstalled(RunnerInstalled {
            flavor: "github-runner".into(),
            duration: 42.0,
        });
        assert_eq!(
            render_line(&installed, 1_700_000_000).unwrap(),
            "{\"timestamp\":1700000000.0,\"event\":\"runner_installed\",\"flavor\":\"github-runner\",\"duration\":42.0}\n"
        );
        let reconciliation = MetricEvent::Reconciliation(Reconciliation {
            flavor: "gr".into(),
            crashed_runners: 1,
            idle_runners: 3,
            duration: 8.25,
        });
        let v: Value = serde_json::from_str(&render_line(&reconciliation, 5).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"timestamp": 5.0, "event": "reconciliation", "flavor": "gr",
                   "crashed_runners": 1, "idle_runners": 3, "duration": 8.25})
        );
    }

    #[test]
    fn reactive_events_are_flat_snake_case_lines() {
        let e = MetricEvent::ReactiveJobDropped {
            flavor: "gr".into(),
            reason: "malformed".into(),
        };
        let v: Value = serde_json::from_str(&render_line(&e, 5).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"timestamp": 5.0, "event": "reactive_job_dropped", "flavor": "gr", "reason": "malformed"})
        );
        let e = MetricEvent::ReactiveJobPickedUp(ReactiveJobPickedUp {
            flavor: "gr".into(),
            queue_seconds: None,
        });
        let v: Value = serde_json::from_str(&render_line(&e, 5).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"timestamp": 5.0, "event": "reactive_job_picked_up", "flavor": "gr"})
        );
    }

    #[test]
    fn none_fields_are_left_out() {
        let without: Value = serde_json::from_str(&render_line(&start(None), 1).unwrap()).unwrap();
        assert!(without.get("queue_duration").is_none(), "{without}");
        assert_eq!(without["event"], "runner_start");
        let with: Value =
            serde_json::from_str(&render_line(&start(Some(3.0)), 1).unwrap()).unwrap();
        assert_eq!(with["queue_duration"], 3.0);

        let stop = |info, conclusion| {
            MetricEvent::RunnerStop(RunnerStop {
                flavor: "gr".into(),
                workflow: "CI".into(),
                repo: "o/r".into(),
                github_event: "pull_request".into(),
                status: StopStatus::RepoPolicyCheckFailure,
                status_info: info,
                job_duration: 30.0,
                job_conclusion: conclusion,
            })
        };
        let bare: Value =
            serde_json::from_str(&render_line(&stop(None, None), 1).unwrap()).unwrap();
        assert_eq!(
            bare,
            json!({"timestamp": 1.0, "event": "runner_stop", "flavor": "gr", "workflow": "CI",
                   "repo": "o/r", "github_event": "pull_request",
                   "status": "repo-policy-check-failure", "job_duration": 30.0})
        );
        let full: Value = serde_json::from_str(
            &render_line(
                &stop(Some(CodeInformation { code: 1 }), Some("failure".into())),
                1,
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(full["status_info"], json!({"code": 1}));
        assert_eq!(full["job_conclusion"], "failure");
    }

    #[test]
    fn lines_parse_back() {
        let text = render_line(&start(Some(1.5)), 9).unwrap();
        let line: MetricLine = serde_json::from_str(&text).unwrap();
        assert_eq!(line.event, start(Some(1.5)));
        assert_eq!(line.timestamp, 9.0);
    }

    #[test]
    fn issue_appends_lines_under_the_host_root_even_from_many_threads() {
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(root.path());
        let log = MetricsLog::new(&paths);
        assert!(log.path().starts_with(root.path()));
        let clock = ManualClock::at(100);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..25 {
                        log.issue(&start(None), &clock).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 200);
        for line in lines {
            let parsed: MetricLine = serde_json::from_str(line).unwrap();
            assert_eq!(parsed.event, start(None));
        }
    }

    #[test]
    fn the_log_is_0640_also_when_an_older_charm_left_it_world_readable() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(root.path());
        let log = MetricsLog::new(&paths);
        let mode = || std::fs::metadata(log.path()).unwrap().permissions().mode() & 0o777;
        log.issue(&start(None), &ManualClock::at(1)).unwrap();
        assert_eq!(mode(), 0o640);
        std::fs::set_permissions(log.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
        log.issue(&start(None), &ManualClock::at(2)).unwrap();
        assert_eq!(mode(), 0o640);
    }

    #[test]
    fn logrotate_rule_names_the_units_log_and_is_written_once() {
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::for_unit(root.path(), "github-runner/0");
        let rule = render_logrotate(&paths);
        assert!(
            rule.starts_with(&format!("{} {{\n", paths.metrics_log().display())),
            "{rule}"
        );
        for directive in [
            "weekly",
            "rotate 0",
            "missingok",
            "notifempty",
            "create 0640 root root",
        ] {
            assert!(
                rule.contains(&format!("    {directive}\n")),
                "{directive}: {rule}"
            );
        }
        assert!(install_logrotate(&paths).unwrap());
        assert!(!install_logrotate(&paths).unwrap());
        let path = root
            .path()
            .join("etc/logrotate.d/github-runner-metrics-github-runner-0");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), rule);
        // Another unit's rule is its own, for its own log.
        let other = HostPaths::for_unit(root.path(), "github-runner/1");
        assert!(install_logrotate(&other).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), rule);
        assert!(render_logrotate(&other).contains("github-runner-metrics-github-runner-1.log {"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
}
