//! Histograms and counters from the JSON-lines metrics log (`HostPaths::metrics_log()`), read
//! incrementally: each scrape reads only the bytes appended since the last one (at most
//! [`MAX_READ_PER_SCRAPE`]), and starts over when the file was rotated or truncated.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::host::metrics::{MetricEvent, MetricLine, StopStatus};

/// Bound on the bytes one scrape reads, so a huge backlog is spread over scrapes.
pub const MAX_READ_PER_SCRAPE: u64 = 4 * 1024 * 1024;
/// A longer line is not one the charm wrote: skipped.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Buckets for durations from seconds to an hour (reconcile, creation, queue waits).
pub const DURATION_BUCKETS: [f64; 14] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];
/// Buckets for one creation phase: sub-second steps matter there.
pub const PHASE_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// The scale-set time-to-runner stages, as the `stage` label (`ScaleSetJobStarted`).
pub const TIME_TO_RUNNER_STAGES: [&str; 2] = ["runner_online", "job_started"];

/// The creation phases, as the `phase` label.
pub const PHASES: [&str; 4] = ["launch", "first_exec", "files_pushed", "listener_started"];

pub type Labels = Vec<(String, String)>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn phase_histogram() -> Histogram {
    Histogram::new(PHASE_BUCKETS)
}

/// What the log has told so far. Cloning shares the metrics (they are `Arc`s inside).
#[derive(Debug, Clone)]
pub struct LogMetrics {
    pub reconcile_duration: Histogram,
    pub runner_install_duration: Histogram,
    pub job_queue_duration: Histogram,
    pub runner_idle_before_job: Histogram,
    pub job_duration: Histogram,
    pub creation_phase_duration: Family<Labels, Histogram, fn() -> Histogram>,
    pub reactive_pickup_duration: Histogram,
    /// Scale-set mode: job assigned -> runner online -> job started, by `stage`.
    pub scale_set_time_to_runner: Family<Labels, Histogram, fn() -> Histogram>,
    pub jobs_started: Counter,
    pub jobs_stopped: Family<Labels, Counter>,
    pub crashed_runners: Counter,
    /// Lines that were not a metrics event the exporter knows.
    pub skipped_lines: Counter,
}

impl Default for LogMetrics {
    fn default() -> Self {
        let phases: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(phase_histogram);
        // Every phase is exposed from the start, so dashboards and alerts find the series.
        for phase in PHASES {
            drop(phases.get_or_create(&vec![("phase".to_string(), phase.to_string())]));
        }
        let stages: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        for stage in TIME_TO_RUNNER_STAGES {
            drop(stages.get_or_create(&vec![("stage".to_string(), stage.to_string())]));
        }
        let stopped: Family<Labels, Counter> = Family::default();
        for status in ["normal", "abnormal", "repo-policy-check-failure"] {
            drop(stopped.get_or_create(&vec![("status".to_string(), status.to_string())]));
        }
        LogMetrics {
            reconcile_duration: duration_histogram(),
            runner_install_duration: duration_histogram(),
            job_queue_duration: duration_histogram(),
            runner_idle_before_job: duration_histogram(),
            job_duration: duration_histogram(),
            creation_phase_duration: phases,
            reactive_pickup_duration: duration_histogram(),
            scale_set_time_to_runner: stages,
            jobs_started: Counter::default(),
            jobs_stopped: stopped,
            crashed_runners: Counter::default(),
            skipped_lines: Counter::default(),
        }
    }
}

fn stop_label(status: StopStatus) -> &'static str {
    match status {
        StopStatus::Normal => "normal",
        StopStatus::Abnormal => "abnormal",
        StopStatus::RepoPolicyCheckFailure => "repo-policy-check-failure",
    }
}

/// Negative or non-finite values are not durations: dropped.
fn observe(h: &Histogram, secs: f64) {
    if secs.is_finite() && secs >= 0.0 {
        h.observe(secs);
    }
}

impl LogMetrics {
    /// Fold one line of the log in.
    pub fn ingest_line(&self, line: &str) {
        let line = line.trim();
        if line.is_empty() {
            return;
        }
        let parsed = (line.len() <= MAX_LINE_BYTES)
            .then(|| serde_json::from_str::<MetricLine>(line).ok())
            .flatten();
        let Some(parsed) = parsed else {
            self.skipped_lines.inc();
            return;
        };
        match parsed.event {
            MetricEvent::Reconciliation(r) => {
                observe(&self.reconcile_duration, r.duration);
                self.crashed_runners.inc_by(u64::from(r.crashed_runners));
            }
            MetricEvent::RunnerInstalled(i) => observe(&self.runner_install_duration, i.duration),
            MetricEvent::RunnerStart(s) => {
                self.jobs_started.inc();
                observe(&self.runner_idle_before_job, s.idle);
                if let Some(q) = s.queue_duration {
                    observe(&self.job_queue_duration, q);
                }
            }
            MetricEvent::RunnerStop(s) => {
                self.jobs_stopped
                    .get_or_create(&vec![(
                        "status".to_string(),
                        stop_label(s.status).to_string(),
                    )])
                    .inc();
                observe(&self.job_duration, s.job_duration);
            }
            MetricEvent::RunnerCreationPhases(p) => {
                for (phase, secs) in
                    PHASES
                        .iter()
                        .zip([p.launch, p.first_exec, p.files_pushed, p.listener_started])
                {
                    let labels = vec![("phase".to_string(), phase.to_string())];
                    observe(&self.creation_phase_duration.get_or_create(&labels), secs);
                }
            }
            MetricEvent::ReactiveJobPickedUp(r) => {
                if let Some(secs) = r.queue_seconds {
                    observe(&self.reactive_pickup_duration, secs)
                }
            }
            MetricEvent::ScaleSetJobStarted(j) => {
                for (stage, secs) in TIME_TO_RUNNER_STAGES
                    .iter()
                    .zip([j.runner_online, j.job_started])
                {
                    let labels = vec![("stage".to_string(), stage.to_string())];
                    observe(&self.scale_set_time_to_runner.get_or_create(&labels), secs);
                }
            }
            MetricEvent::ReactiveJobReceived { .. }
            | MetricEvent::ReactiveJobDropped { .. }
            | MetricEvent::ReactiveRunnerSpawned { .. }
            | MetricEvent::ReactiveJobRequeued { .. } => {}
        }
    }
}

/// Where the reader is in the log file.
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    inode: Option<u64>,
    offset: u64,
    /// The start of a line whose end was not written yet.
    partial: Vec<u8>,
    /// Skipping the rest of an over-long line.
    skipping: bool,
}

impl LogTail {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LogTail {
            path: path.into(),
            inode: None,
            offset: 0,
            partial: Vec::new(),
            skipping: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read what was appended since the last call into `metrics`. Returns the bytes read.
    /// A missing file is not an error (no event yet).
    pub fn poll(&mut self, metrics: &LogMetrics) -> std::io::Result<u64> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if self.inode != Some(meta.ino()) || meta.len() < self.offset {
            // Rotated (a new file) or truncated: start over at its beginning.
            self.inode = Some(meta.ino());
            self.offset = 0;
            self.partial.clear();
            self.skipping = false;
        }
        if meta.len() == self.offset {
            return Ok(0);
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut chunk = Vec::new();
        let read = file.take(MAX_READ_PER_SCRAPE).read_to_end(&mut chunk)? as u64;
        self.offset += read;
        let mut rest: &[u8] = &chunk;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (line, after) = rest.split_at(end);
            rest = &after[1..];
            if self.skipping {
                self.skipping = false;
                self.partial.clear();
                continue;
            }
            self.partial.extend_from_slice(line);
            metrics.ingest_line(&String::from_utf8_lossy(&self.partial));
            self.partial.clear();
        }
        if !self.skipping {
            self.partial.extend_from_slice(rest);
            if self.partial.len() > MAX_LINE_BYTES {
                self.partial.clear();
                self.skipping = true;
                metrics.skipped_lines.inc();
            }
        }
        Ok(read)
    }
}

#[cfg(test)]
#[path = "log_stats_tests.rs"]
mod tests;
