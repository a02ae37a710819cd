//! The exporter's state file: the numbers a scrape needs that only a hook knows (unit state
//! is not readable outside a hook). The charm rewrites it after each reconcile round
//! ([`advance`] then [`write`]); the exporter only reads it ([`read`]).
//!
//! Counters (reconciles, creations, GitHub calls) are cumulative across hooks: each write
//! adds this process's counts to the previous file's. A lost file restarts them at zero,
//! which Prometheus reads as a counter reset.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::github::calls::ApiCall;
use crate::github::outcomes::RateLimit;
use crate::manager::executor::Operation;
use crate::manager::reconcile::{ReconcileError, ReconcileOutcome};
use crate::manager::status::Census;

/// Version of the file's layout; a reader ignores a file of another version.
pub const STATE_VERSION: u32 = 1;
/// Owner root, group readable (an operator's monitoring group may read it), no secrets in it.
pub const STATE_MODE: u32 = 0o640;
/// A state file is a few KiB; anything bigger is not ours.
pub const MAX_STATE_BYTES: u64 = 256 * 1024;

/// How a reconcile round ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoundOutcome {
    /// Every operation of the plan succeeded.
    Success,
    /// The round ran but some operation failed.
    Partial,
    /// The round could not run: LXD or GitHub could not be listed.
    Failed,
}

impl RoundOutcome {
    pub const ALL: [RoundOutcome; 3] = [
        RoundOutcome::Success,
        RoundOutcome::Partial,
        RoundOutcome::Failed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            RoundOutcome::Success => "success",
            RoundOutcome::Partial => "partial",
            RoundOutcome::Failed => "failed",
        }
    }
}

/// What one reconcile round tells the exporter. Pure data, from [`RoundFacts::of`].
#[derive(Debug, Clone, PartialEq)]
pub struct RoundFacts {
    pub outcome: RoundOutcome,
    /// None when the round could not look at the fleet (the previous census stays).
    pub census: Option<Census>,
    pub duration_secs: f64,
    pub creations_succeeded: u64,
    pub creations_failed: u64,
}

impl RoundFacts {
    pub fn of(result: &Result<ReconcileOutcome, ReconcileError>) -> RoundFacts {
        match result {
            Ok(outcome) => {
                let failed_creations = outcome
                    .report
                    .failed
                    .iter()
                    .filter(|f| f.operation == Operation::Create)
                    .count() as u64;
                RoundFacts {
                    outcome: if outcome.report.is_clean() {
                        RoundOutcome::Success
                    } else {
                        RoundOutcome::Partial
                    },
                    census: Some(Census::after(&outcome.plan, &outcome.report)),
                    duration_secs: outcome.duration_secs as f64,
                    creations_succeeded: outcome.report.created.len() as u64,
                    creations_failed: failed_creations,
                }
            }
            Err(_) => RoundFacts {
                outcome: RoundOutcome::Failed,
                census: None,
                duration_secs: 0.0,
                creations_succeeded: 0,
                creations_failed: 0,
            },
        }
    }
}

/// Gauges of the reactive mode, written by the side that knows them (zero when the unit
/// is not reactive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReactiveGauges {
    pub workers: u32,
    pub workers_busy: u32,
    pub queue_length: u64,
}

/// One `(endpoint, status)` counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiCallCount {
    pub endpoint: String,
    pub status: String,
    pub count: u64,
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExporterState {
    pub version: u32,
    /// The application name (the runners' flavor).
    pub flavor: String,
    pub updated_at: u64,
    pub reconcile_interval_secs: u64,
    pub census: Census,
    pub last_reconcile_at: u64,
    pub last_reconcile_duration_secs: f64,
    pub last_reconcile_outcome: RoundOutcome,
    /// Rounds per outcome label, cumulative.
    pub reconciles: BTreeMap<String, u64>,
    pub creations_succeeded: u64,
    pub creations_failed: u64,
    pub github_calls: Vec<ApiCallCount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// e.g. `2.311.0`, from the runner tarball's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_binary_version: Option<String>,
    #[serde(default)]
    pub reactive: ReactiveGauges,
}

/// Everything [`advance`] folds into the previous state.
#[derive(Debug, Clone, PartialEq)]
pub struct Update<'a> {
    pub flavor: &'a str,
    pub now: u64,
    pub reconcile_interval_secs: u64,
    pub round: RoundFacts,
    /// This process's calls (`github::outcomes::process_outcomes().counts()`).
    pub calls: &'a BTreeMap<(ApiCall, String), u64>,
    pub rate_limit: Option<RateLimit>,
    pub runner_binary_url: Option<&'a str>,
}

/// The next state: `previous` plus one round and this process's calls. Pure.
pub fn advance(previous: Option<&ExporterState>, update: &Update<'_>) -> ExporterState {
    let round = &update.round;
    let mut reconciles = previous.map(|p| p.reconciles.clone()).unwrap_or_default();
    *reconciles
        .entry(round.outcome.label().to_string())
        .or_insert(0) += 1;
    let mut calls: BTreeMap<(String, String), u64> = previous
        .map(|p| {
            p.github_calls
                .iter()
                .map(|c| ((c.endpoint.clone(), c.status.clone()), c.count))
                .collect()
        })
        .unwrap_or_default();
    for ((call, status), n) in update.calls {
        *calls
            .entry((call.name().to_string(), status.clone()))
            .or_insert(0) += n;
    }
    let census = round
        .census
        .or(previous.map(|p| p.census))
        .unwrap_or_default();
    ExporterState {
        version: STATE_VERSION,
        flavor: update.flavor.to_string(),
        updated_at: update.now,
        reconcile_interval_secs: update.reconcile_interval_secs,
        census,
        last_reconcile_at: update.now,
        last_reconcile_duration_secs: round.duration_secs,
        last_reconcile_outcome: round.outcome,
        reconciles,
        creations_succeeded: previous.map_or(0, |p| p.creations_succeeded)
            + round.creations_succeeded,
        creations_failed: previous.map_or(0, |p| p.creations_failed) + round.creations_failed,
        github_calls: calls
            .into_iter()
            .map(|((endpoint, status), count)| ApiCallCount {
                endpoint,
                status,
                count,
            })
            .collect(),
        rate_limit: update.rate_limit.or(previous.and_then(|p| p.rate_limit)),
        runner_binary_version: update
            .runner_binary_url
            .and_then(version_from_url)
            .or(previous.and_then(|p| p.runner_binary_version.clone())),
        reactive: previous.map(|p| p.reactive).unwrap_or_default(),
    }
}

/// `2.311.0` from `.../actions-runner-linux-x64-2.311.0.tar.gz`. Pure.
pub fn version_from_url(url: &str) -> Option<String> {
    let file = url.rsplit('/').next()?;
    let stem = file.strip_suffix(".tar.gz")?;
    let version = stem.rsplit('-').next()?;
    let ok = !version.is_empty()
        && version.split('.').count() >= 2
        && version
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    ok.then(|| version.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("could not read the exporter state {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("the exporter state {path} is not valid: {reason}; the next reconcile rewrites it")]
    Invalid { path: PathBuf, reason: String },
    #[error("could not write the exporter state {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// The state at `path`; None when there is none yet or it is of another version.
pub fn read(path: &Path) -> Result<Option<ExporterState>, StateError> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
        }
    };
    let mut text = String::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| StateError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if text.len() as u64 > MAX_STATE_BYTES {
        return Err(StateError::Invalid {
            path: path.to_path_buf(),
            reason: format!("larger than {MAX_STATE_BYTES} bytes"),
        });
    }
    let state: ExporterState = serde_json::from_str(&text).map_err(|e| StateError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok((state.version == STATE_VERSION).then_some(state))
}

/// Replace the file atomically (0640).
pub fn write(path: &Path, state: &ExporterState) -> Result<(), StateError> {
    let err = |reason: String| StateError::Write {
        path: path.to_path_buf(),
        reason,
    };
    let text = serde_json::to_string(state).map_err(|e| err(e.to_string()))?;
    crate::host::file::replace_if_changed(path, &text, STATE_MODE)
        .map(drop)
        .map_err(|e| err(e.to_string()))
}

/// Set the reactive gauges (for the reactive side, which knows them). Returns false when
/// there is no state file yet: the first reconcile writes it.
pub fn set_reactive(path: &Path, gauges: ReactiveGauges) -> Result<bool, StateError> {
    let Some(mut state) = read(path)? else {
        return Ok(false);
    };
    state.reactive = gauges;
    write(path, &state).map(|()| true)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
