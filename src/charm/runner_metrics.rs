//! The `runner_start` and `runner_stop` metrics, decided per reconcile round.
//!
//! A runner's job start is learnt the first round GitHub lists it busy: its pre-job hook
//! wrote `pre-job.json` in the instance (one exec reads it, once per runner). The runner is
//! then kept in a record (a 0600 JSON file in the state directory) until a later round
//! removes it or no longer sees it, which issues its `runner_stop`, with the job's conclusion
//! when GitHub has it (one jobs listing of the job's run, only in a round where a runner
//! ends: never in a steady state). Deciding is pure ([`decide`]); reading, GitHub, the
//! record file and the log are the shell ([`issue_for_round`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::host::metrics::{MetricEvent, MetricsLog, RunnerStart, RunnerStop, StopStatus};
use crate::identity::RunnerName;
use crate::manager::planner::{Condition, Plan, RemovalReason};
use crate::paths::HostPaths;

/// What the pre-job hook wrote (`runner::files::render_pre_job_script`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreJob {
    pub workflow: String,
    pub repository: String,
    pub event: String,
    /// The job's workflow run (`GITHUB_RUN_ID`); empty from a hook of an older charm.
    #[serde(default)]
    pub run_id: String,
    /// Epoch seconds when the job started.
    pub timestamp: u64,
}

/// A runner whose job start was issued, until its stop is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedRunner {
    pub workflow: String,
    pub repo: String,
    pub event: String,
    pub started_at: u64,
    /// When its instance was created.
    pub installed_at: u64,
    /// Its workflow run, to look up the job's conclusion when it stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u64>,
}

/// Runners seen busy, by name. `None`: seen busy but its pre-job data could not be read;
/// kept so it is not read again, and it ends without a metric (nothing to report).
pub type StartedRecord = BTreeMap<String, Option<StartedRunner>>;

/// Runners GitHub lists busy that the record does not know yet: the only ones whose
/// pre-job data is read (one exec each, once).
pub fn newly_busy(record: &StartedRecord, plan: &Plan) -> Vec<RunnerName> {
    plan.runners
        .iter()
        .filter(|r| r.condition == Condition::Busy && r.has_instance)
        .filter(|r| !record.contains_key(r.name.as_str()))
        .map(|r| r.name.clone())
        .collect()
}

/// What this round learnt, as plain data.
#[derive(Debug, Clone, Copy)]
pub struct RoundFacts<'a> {
    pub flavor: &'a str,
    pub plan: &'a Plan,
    /// Pre-job data read for newly busy runners; a missing entry could not be read.
    pub pre_jobs: &'a BTreeMap<String, PreJob>,
    /// Instance creation times, by name.
    pub created_at: &'a BTreeMap<String, u64>,
    /// Conclusions (`success`, `failure`, ...) of the jobs of runners ending this round.
    pub conclusions: &'a BTreeMap<String, String>,
    pub now: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    pub starts: Vec<RunnerStart>,
    pub stops: Vec<RunnerStop>,
    pub record: StartedRecord,
}

/// How a recorded runner's removal ended its job: deregistered by itself after the job is
/// the normal end; any other removal of a runner that had a job means the job died with it.
pub fn stop_status(reason: RemovalReason) -> StopStatus {
    match reason {
        RemovalReason::RegistrationGone => StopStatus::Normal,
        _ => StopStatus::Abnormal,
    }
}

/// How each recorded runner that ends this round ends: removed this round (status from
/// [`stop_status`]) or seen by neither LXD nor GitHub (normal: an ephemeral runner whose
/// instance deleted itself after the job). Pure.
pub fn ending(record: &StartedRecord, plan: &Plan) -> BTreeMap<String, StopStatus> {
    let removed: BTreeMap<&str, RemovalReason> = plan
        .removals
        .iter()
        .map(|r| (r.target.name.as_str(), r.reason))
        .collect();
    record
        .keys()
        .filter_map(|name| {
            let status = match removed.get(name.as_str()) {
                Some(reason) => stop_status(*reason),
                None if !plan.runners.iter().any(|r| r.name.as_str() == name) => StopStatus::Normal,
                None => return None,
            };
            Some((name.clone(), status))
        })
        .collect()
}

/// The starts and stops of a round and the record after it. Pure.
///
/// - busy and not recorded: `runner_start` when its pre-job data was read (idle = job start
///   minus instance creation), recorded either way;
/// - recorded and removed this round: `runner_stop`, status from [`stop_status`];
/// - recorded and seen by neither LXD nor GitHub: `runner_stop`, normal (an ephemeral runner
///   whose instance deleted itself after the job);
/// - recorded and still seen otherwise: kept.
///
/// job_duration = now - job start.
pub fn decide(record: &StartedRecord, facts: &RoundFacts<'_>) -> Decision {
    let mut decision = Decision::default();
    let ends = ending(record, facts.plan);
    for (name, started) in record {
        match (ends.get(name), started) {
            (None, _) => {
                decision.record.insert(name.clone(), started.clone());
            }
            (Some(status), Some(job)) => decision.stops.push(stop_event(
                facts.flavor,
                job,
                *status,
                facts.conclusions.get(name).cloned(),
                facts.now,
            )),
            (Some(_), None) => {}
        }
    }

    for name in newly_busy(record, facts.plan) {
        let started = facts.pre_jobs.get(name.as_str()).map(|pre| StartedRunner {
            workflow: pre.workflow.clone(),
            repo: pre.repository.clone(),
            event: pre.event.clone(),
            started_at: pre.timestamp,
            installed_at: facts.created_at.get(name.as_str()).copied().unwrap_or(0),
            run_id: pre.run_id.trim().parse().ok(),
        });
        if let Some(job) = &started {
            decision.starts.push(RunnerStart {
                flavor: facts.flavor.to_string(),
                workflow: job.workflow.clone(),
                repo: job.repo.clone(),
                github_event: job.event.clone(),
                idle: job.started_at.saturating_sub(job.installed_at) as f64,
                queue_duration: None,
            });
        }
        decision.record.insert(name.0, started);
    }
    decision
}

/// Recorded runners a flush removed (`removed`: name and reason) stop with
/// [`stop_status`]; the rest of the record is kept. Pure.
pub fn decide_removed(
    record: &StartedRecord,
    removed: &[(RunnerName, RemovalReason)],
    flavor: &str,
    now: u64,
) -> Decision {
    let mut decision = Decision {
        record: record.clone(),
        ..Decision::default()
    };
    for (name, reason) in removed {
        if let Some(Some(job)) = decision.record.remove(name.as_str()) {
            decision
                .stops
                .push(stop_event(flavor, &job, stop_status(*reason), None, now));
        }
    }
    decision
}

fn stop_event(
    flavor: &str,
    job: &StartedRunner,
    status: StopStatus,
    conclusion: Option<String>,
    now: u64,
) -> RunnerStop {
    RunnerStop {
        flavor: flavor.to_string(),
        workflow: job.workflow.clone(),
        repo: job.repo.clone(),
        github_event: job.event.clone(),
        status,
        status_info: None,
        job_duration: now.saturating_sub(job.started_at) as f64,
        job_conclusion: conclusion,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("could not read the started-runners record {path}: {reason}; it is rebuilt from the next round (metrics of running jobs are lost)")]
    Read { path: PathBuf, reason: String },
    #[error("could not write the started-runners record {path}: {reason}; check the disk and permissions of the charm's state directory")]
    Write { path: PathBuf, reason: String },
}

/// Name of the record file under `HostPaths::state_dir()`.
pub const RECORD_FILE: &str = "started-runners.json";

pub fn record_path(paths: &HostPaths) -> PathBuf {
    paths.state_dir().join(RECORD_FILE)
}

/// The record; empty when there is none yet.
pub fn load_record(paths: &HostPaths) -> Result<StartedRecord, RecordError> {
    let path = record_path(paths);
    let err = |reason: String| RecordError::Read {
        path: path.clone(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StartedRecord::new()),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Replace the record atomically, 0600 (it names repositories and workflows).
pub fn save_record(paths: &HostPaths, record: &StartedRecord) -> Result<(), RecordError> {
    let path = record_path(paths);
    let err = |reason: String| RecordError::Write {
        path: path.clone(),
        reason,
    };
    let text = serde_json::to_string(record).map_err(|e| err(e.to_string()))?;
    crate::host::file::replace_if_changed(&path, &text, 0o600)
        .map(drop)
        .map_err(|e| err(e.to_string()))
}

/// Most job conclusions looked up in one round (one GitHub request each, usually): a round
/// where many runners end at once must not spend the API budget on metrics.
pub const MAX_CONCLUSION_LOOKUPS: usize = 10;

/// The effects a round's job metrics need.
pub trait JobReader {
    /// The pre-job data of a runner: one exec. None when it could not be read.
    fn read_pre_job(&self, name: &RunnerName) -> Option<PreJob>;
    /// When the runner's instance was created, as last observed.
    fn created_at(&self, name: &RunnerName) -> Option<u64>;
    /// The conclusion of the job runner `name` ran in run `run_id` of `repo`; None when
    /// GitHub has none (yet) or could not be asked.
    fn job_conclusion(&self, repo: &str, run_id: u64, name: &RunnerName) -> Option<String>;
}

/// Read pre-job data of newly busy runners, decide, append the events, save the record.
/// Problems are logged: metrics never fail a reconcile. Returns what was decided.
pub fn issue_for_round(
    paths: &HostPaths,
    reader: &dyn JobReader,
    clock: &dyn crate::clock::Clock,
    flavor: &str,
    plan: &Plan,
) -> Decision {
    let record = load_record(paths).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        StartedRecord::new()
    });
    let newly = newly_busy(&record, plan);
    let pre_jobs: BTreeMap<String, PreJob> = newly
        .iter()
        .filter_map(|n| reader.read_pre_job(n).map(|p| (n.0.clone(), p)))
        .collect();
    let created_at: BTreeMap<String, u64> = newly
        .iter()
        .filter_map(|n| reader.created_at(n).map(|at| (n.0.clone(), at)))
        .collect();
    let conclusions: BTreeMap<String, String> = ending(&record, plan)
        .into_keys()
        .filter_map(|name| {
            let job = record.get(&name)?.as_ref()?;
            Some((job.repo.clone(), job.run_id?, RunnerName(name)))
        })
        .take(MAX_CONCLUSION_LOOKUPS)
        .filter_map(|(repo, run_id, name)| {
            let conclusion = reader.job_conclusion(&repo, run_id, &name)?;
            Some((name.0, conclusion))
        })
        .collect();
    let decision = decide(
        &record,
        &RoundFacts {
            flavor,
            plan,
            pre_jobs: &pre_jobs,
            created_at: &created_at,
            conclusions: &conclusions,
            now: clock.now_epoch(),
        },
    );
    apply(paths, clock, &record, decision)
}

/// After a flush: the runner_stop of recorded runners it removed (a busy runner flushed
/// lost its job), so the next reconcile does not take them for normally finished.
pub fn issue_for_flush(
    paths: &HostPaths,
    clock: &dyn crate::clock::Clock,
    flavor: &str,
    removed: &[(RunnerName, RemovalReason)],
) -> Decision {
    let record = match load_record(paths) {
        Ok(record) => record,
        Err(e) => {
            tracing::warn!("{e}");
            return Decision::default();
        }
    };
    let decision = decide_removed(&record, removed, flavor, clock.now_epoch());
    apply(paths, clock, &record, decision)
}

/// Append the decided events, then save the record when it changed.
fn apply(
    paths: &HostPaths,
    clock: &dyn crate::clock::Clock,
    before: &StartedRecord,
    decision: Decision,
) -> Decision {
    let log = MetricsLog::new(paths);
    let events = decision
        .starts
        .iter()
        .cloned()
        .map(MetricEvent::RunnerStart)
        .chain(decision.stops.iter().cloned().map(MetricEvent::RunnerStop));
    for event in events {
        if let Err(e) = log.issue(&event, clock) {
            tracing::warn!("{e}");
        }
    }
    if &decision.record != before {
        if let Err(e) = save_record(paths, &decision.record) {
            tracing::warn!("{e}");
        }
    }
    decision
}

#[cfg(test)]
#[path = "runner_metrics_tests.rs"]
mod tests;
