//! Flushing runners: idle ones go at once; busy ones are kept, marked to be replaced when
//! their job ends, or (forced) removed with their job.
//!
//! The modes keep the Python charm's names; what the busy modes do changed, so that no
//! flush kills a running job unless the operator asks for it:
//!
//! | mode | idle runners | busy runners | used by |
//! |---|---|---|---|
//! | FLUSH_IDLE | removed | kept | binary change, upgrade-charm, start, debug-ssh, update-dependencies |
//! | FLUSH_IDLE_WAIT_REPO_CHECK | removed | kept, after waiting for pre-job phases | — |
//! | FLUSH_BUSY | removed | removed at once, forced | stop, remove, storage detaching, `flush-runners force=true` |
//! | FLUSH_BUSY_WAIT_REPO_CHECK | removed | marked, removed by a later reconcile once their job ended | `flush-runners` |
//! | FORCE_FLUSH_WAIT_REPO_CHECK | removed | as FLUSH_BUSY_WAIT_REPO_CHECK, going on when GitHub refuses the credentials | a scope change |
//!
//! A busy runner is marked with [`REPLACE_CONFIG_KEY`] (the flush's scope fingerprint): the
//! planner then keeps it out of `virtual-machines` and removes it once its job ended (see
//! [`crate::manager::replacement`]). A runner of another scope (a previous scope change's,
//! still on its job) is left to the planner by every mode but FLUSH_BUSY.
//!
//! FORCE_FLUSH_WAIT_REPO_CHECK serves scope changes: the caller builds the [`RunnerOps`] with
//! the PREVIOUS credentials and path. Without GitHub's view of the old fleet (it refuses
//! them, or they are lost: [`FlushScope::github_sees_runners`] false) a running instance is
//! judged by the job-start probe: a job started (or it cannot tell) marks it, none removes
//! it (forced: its registration cannot be deleted; GitHub expires it).
//!
//! The pre-job wait (FLUSH_IDLE_WAIT_REPO_CHECK only) waits while some busy runner's job
//! started less than [`PRE_JOB_WINDOW_SECS`] ago, at most [`WAIT_ROUNDS`] x
//! [`WAIT_INTERVAL`], on the injected clock (the Python charm's check was inverted).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::clock::Clock;
use crate::github::GitHubRunner;
use crate::identity::RunnerName;
use crate::lxd::{Instance, InstanceState};
use crate::manager::executor::{self, Concurrency, Progress, Report};
use crate::manager::ops::{OpError, RunnerOps};
use crate::manager::planner::{recorded_runner_id, Removal, RemovalReason, RemovalTarget};
use crate::manager::replacement::{self, Standing, REPLACE_CONFIG_KEY};

/// A job younger than this may still be in its pre-job phase.
pub const PRE_JOB_WINDOW_SECS: u64 = 60;
/// Checks before giving up on waiting.
pub const WAIT_ROUNDS: u32 = 5;
pub const WAIT_INTERVAL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// Remove idle runners only.
    FlushIdle,
    /// Remove idle runners, then wait for busy ones to pass their pre-job phase.
    FlushIdleWaitRepoCheck,
    /// Remove every runner, busy ones included, at once.
    FlushBusy,
    /// Remove idle runners; mark busy ones to be replaced once their job ends.
    FlushBusyWaitRepoCheck,
    /// As FlushBusyWaitRepoCheck, carrying on when GitHub refuses the credentials.
    ForceFlushWaitRepoCheck,
}

impl FlushMode {
    pub const ALL: [FlushMode; 5] = [
        FlushMode::FlushIdle,
        FlushMode::FlushIdleWaitRepoCheck,
        FlushMode::FlushBusy,
        FlushMode::FlushBusyWaitRepoCheck,
        FlushMode::ForceFlushWaitRepoCheck,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FlushMode::FlushIdle => "FLUSH_IDLE",
            FlushMode::FlushIdleWaitRepoCheck => "FLUSH_IDLE_WAIT_REPO_CHECK",
            FlushMode::FlushBusy => "FLUSH_BUSY",
            FlushMode::FlushBusyWaitRepoCheck => "FLUSH_BUSY_WAIT_REPO_CHECK",
            FlushMode::ForceFlushWaitRepoCheck => "FORCE_FLUSH_WAIT_REPO_CHECK",
        }
    }

    pub fn waits_for_pre_job(self) -> bool {
        self == FlushMode::FlushIdleWaitRepoCheck
    }

    /// Busy runners are removed, their jobs killed.
    pub fn removes_busy(self) -> bool {
        self == FlushMode::FlushBusy
    }

    /// Busy runners are marked, to be replaced once their job ends.
    pub fn replaces_busy(self) -> bool {
        matches!(
            self,
            FlushMode::FlushBusyWaitRepoCheck | FlushMode::ForceFlushWaitRepoCheck
        )
    }

    /// Goes on without GitHub's view when GitHub refuses the (old) credentials.
    pub fn is_force(self) -> bool {
        self == FlushMode::ForceFlushWaitRepoCheck
    }
}

impl fmt::Display for FlushMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown flush mode {0:?}; expected one of FLUSH_IDLE, FLUSH_IDLE_WAIT_REPO_CHECK, FLUSH_BUSY, FLUSH_BUSY_WAIT_REPO_CHECK, FORCE_FLUSH_WAIT_REPO_CHECK")]
pub struct UnknownFlushMode(pub String);

impl FromStr for FlushMode {
    type Err = UnknownFlushMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FlushMode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| UnknownFlushMode(s.to_string()))
    }
}

/// The scope a flush acts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushScope {
    /// Fingerprint of the scope the flush's credentials serve; busy runners are marked
    /// with it, and runners of another scope are not this flush's.
    pub fingerprint: String,
    /// GitHub's listing with these credentials covers the runners (false: a scope change
    /// whose previous credentials are lost; the flush goes by LXD and the job probe).
    pub github_sees_runners: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlushError {
    #[error("could not list this unit's LXD instances for the flush: {0}")]
    Lxd(OpError),
    #[error("could not list this unit's runners on GitHub, so the flush touched no runner: {0}")]
    GitHub(OpError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushOutcome {
    pub mode: FlushMode,
    pub report: Report,
    /// Busy runners marked to be replaced once their job ends.
    pub awaiting_job: Vec<RunnerName>,
    /// Busy runners the mark could not be set on (kept; a later flush marks them).
    pub mark_failed: Vec<(RunnerName, OpError)>,
    /// Time spent waiting for pre-job phases.
    pub waited: Duration,
    /// The wait ended with some runner still in its pre-job phase.
    pub wait_exhausted: bool,
    /// FORCE only: GitHub refused to list runners, so busy ones could not be told apart.
    pub github_error: Option<OpError>,
}

/// What the job-start probe found in a running instance (asked only without GitHub's view).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobProbe {
    NotAsked,
    Started,
    NoJob,
    /// The probe failed: taken as busy (a job is never killed on an unknown).
    Unknown,
}

/// One runner (a name on either side) as a flush sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushFacts {
    /// None: a registration without an instance.
    pub instance: Option<InstanceFacts>,
    /// GitHub's listing: None when the name is not listed, or there is no view.
    pub listed_busy: Option<bool>,
    /// GitHub's view covers this flush's runners.
    pub github_view: bool,
    pub job: JobProbe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceFacts {
    /// Error or Stopped: no job can run in it.
    pub dead: bool,
    pub standing: Standing,
}

/// What a flush does with one runner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushAction {
    Keep,
    /// Removed now, unforced: its registration goes first, and GitHub's 422 keeps a runner
    /// that took a job meanwhile (then marked, in a mode that marks).
    RemoveIdle,
    /// Removed now, forced: the instance goes first, with any job in it.
    RemoveForced,
    /// Marked to be replaced once its job ends.
    Mark,
}

/// The flush's decision for one runner. Pure. FLUSH_BUSY takes everything (idle ones
/// unforced first, so they are deregistered cleanly); every other mode leaves another
/// scope's runners to the planner, removes dead instances (forced) and runners GitHub does
/// not list busy (unforced: a listing can miss a busy one, whose 422 then keeps it), and
/// keeps or marks busy ones. Without GitHub's view, a running instance's job probe decides.
pub fn flush_action(mode: FlushMode, runner: &FlushFacts) -> FlushAction {
    let busy_action = if mode.replaces_busy() {
        FlushAction::Mark
    } else {
        FlushAction::Keep
    };
    let Some(instance) = runner.instance else {
        return match runner.listed_busy {
            Some(false) => FlushAction::RemoveIdle,
            // Busy without an instance: GitHub has not noticed it is gone; nothing to mark.
            _ => FlushAction::Keep,
        };
    };
    if mode.removes_busy() {
        return match runner.listed_busy {
            Some(false) if !instance.dead => FlushAction::RemoveIdle,
            _ => FlushAction::RemoveForced,
        };
    }
    if instance.standing == Standing::OtherScope {
        return FlushAction::Keep;
    }
    if instance.dead {
        return FlushAction::RemoveForced;
    }
    match (runner.listed_busy, runner.github_view) {
        (Some(true), _) => busy_action,
        (Some(false), _) | (None, true) => FlushAction::RemoveIdle,
        (None, false) => match runner.job {
            JobProbe::NoJob => FlushAction::RemoveForced,
            JobProbe::Started | JobProbe::Unknown | JobProbe::NotAsked => busy_action,
        },
    }
}

/// Running instances of `scope` whose job start must be probed: only without GitHub's view,
/// and only in a mode that may remove them.
pub fn to_probe(
    mode: FlushMode,
    instances: &[Instance],
    github_view: bool,
    scope: &str,
) -> Vec<RunnerName> {
    if github_view || !mode.replaces_busy() {
        return Vec::new();
    }
    instances
        .iter()
        .filter(|i| !is_dead(i) && replacement::standing(i, scope) != Standing::OtherScope)
        .map(|i| RunnerName(i.name.clone()))
        .collect()
}

fn is_dead(instance: &Instance) -> bool {
    matches!(
        instance.state,
        InstanceState::Error | InstanceState::Stopped
    )
}

/// Every name on either side with its facts and the flush's action, in name order.
pub fn decide(
    mode: FlushMode,
    instances: &[Instance],
    github: Option<&[GitHubRunner]>,
    probes: &BTreeMap<RunnerName, JobProbe>,
    scope: &str,
) -> Vec<(RemovalTarget, FlushAction)> {
    let listed = github.unwrap_or(&[]);
    let mut names: std::collections::BTreeSet<&str> =
        instances.iter().map(|i| i.name.as_str()).collect();
    names.extend(listed.iter().map(|r| r.name.as_str()));
    names
        .into_iter()
        .map(|name| {
            let instance = instances.iter().find(|i| i.name == name);
            let registration = listed.iter().find(|r| r.name == name);
            let standing = instance.map(|i| replacement::standing(i, scope));
            let facts = FlushFacts {
                instance: instance.zip(standing).map(|(i, standing)| InstanceFacts {
                    dead: is_dead(i),
                    standing,
                }),
                listed_busy: registration.map(|r| r.busy),
                github_view: github.is_some(),
                job: probes
                    .get(&RunnerName(name.to_string()))
                    .copied()
                    .unwrap_or(JobProbe::NotAsked),
            };
            // A runner the listing lacks uses the registration id its instance recorded:
            // a listing can miss a live registration, and deleting the registration first
            // is what keeps a busy runner (422) in an unforced removal; one already gone
            // answers 404. Never another scope's id: these credentials cannot see it.
            let github_id = registration.map(|r| r.id).or_else(|| {
                instance
                    .filter(|_| standing != Some(Standing::OtherScope))
                    .and_then(recorded_runner_id)
            });
            let target = RemovalTarget {
                name: RunnerName(name.to_string()),
                has_instance: instance.is_some(),
                github_id,
            };
            (target, flush_action(mode, &facts))
        })
        .collect()
}

/// The first phase's removals: idle ones unforced, dead instances and (not FLUSH_BUSY,
/// whose second phase forces everything left) jobless ones forced.
fn first_phase(
    mode: FlushMode,
    instances: &[Instance],
    decided: &[(RemovalTarget, FlushAction)],
) -> Vec<Removal> {
    let dead = |name: &RunnerName| {
        instances
            .iter()
            .any(|i| i.name == name.as_str() && is_dead(i))
    };
    decided
        .iter()
        .filter_map(|(target, action)| {
            let force = match action {
                FlushAction::RemoveIdle => false,
                FlushAction::RemoveForced if !mode.removes_busy() || dead(&target.name) => true,
                _ => return None,
            };
            Some(Removal {
                target: target.clone(),
                reason: RemovalReason::Flush,
                force,
            })
        })
        .collect()
}

/// Flush this unit's runners of `scope` in `mode`. Run it under the unit lock.
pub fn flush(
    ops: &dyn RunnerOps,
    clock: &dyn Clock,
    mode: FlushMode,
    scope: &FlushScope,
    concurrency: Concurrency,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<FlushOutcome, FlushError> {
    tracing::info!(%mode, "flushing runners");
    let mut outcome = FlushOutcome {
        mode,
        report: Report::default(),
        awaiting_job: Vec::new(),
        mark_failed: Vec::new(),
        waited: Duration::ZERO,
        wait_exhausted: false,
        github_error: None,
    };

    let (instances, github) = observe(ops, mode, scope, &mut outcome)?;
    let probed = to_probe(mode, &instances, github.is_some(), &scope.fingerprint);
    let probes = probe_jobs(ops, &probed, concurrency);
    let decided = decide(
        mode,
        &instances,
        github.as_deref(),
        &probes,
        &scope.fingerprint,
    );
    let first = first_phase(mode, &instances, &decided);
    outcome
        .report
        .absorb(executor::remove_all(&first, ops, concurrency, progress));

    if mode.replaces_busy() {
        let mut to_mark: Vec<RunnerName> = decided
            .iter()
            .filter(|(t, a)| *a == FlushAction::Mark && t.has_instance)
            .map(|(t, _)| t.name.clone())
            .collect();
        to_mark.extend(outcome.report.kept_busy.iter().cloned());
        mark(ops, &instances, &to_mark, scope, &mut outcome);
    }

    if mode.waits_for_pre_job() {
        wait_for_pre_job(ops, clock, mode, scope, concurrency, &mut outcome)?;
    }

    if mode.removes_busy() {
        let (instances, github) = observe(ops, mode, scope, &mut outcome)?;
        let rest = decide(
            mode,
            &instances,
            github.as_deref(),
            &BTreeMap::new(),
            &scope.fingerprint,
        )
        .into_iter()
        .map(|(target, _)| Removal {
            target,
            reason: RemovalReason::Flush,
            force: true,
        })
        .collect::<Vec<_>>();
        outcome
            .report
            .absorb(executor::remove_all(&rest, ops, concurrency, progress));
    }
    for failure in &outcome.report.failed {
        tracing::warn!("{failure}");
    }
    Ok(outcome)
}

/// Marks each of `names` (once each) with the flush's scope, unless already so marked.
fn mark(
    ops: &dyn RunnerOps,
    instances: &[Instance],
    names: &[RunnerName],
    scope: &FlushScope,
    outcome: &mut FlushOutcome,
) {
    let mut names = names.to_vec();
    names.sort();
    names.dedup();
    for name in names {
        let marked = instances.iter().any(|i| {
            i.name == name.as_str() && i.config.get(REPLACE_CONFIG_KEY) == Some(&scope.fingerprint)
        });
        let result = if marked {
            Ok(())
        } else {
            ops.mark_for_replacement(&name, &scope.fingerprint)
        };
        match result {
            Ok(()) => {
                tracing::info!(runner = %name, "busy: replaced once its job ends");
                outcome.awaiting_job.push(name);
            }
            Err(e) => {
                tracing::warn!(runner = %name, "could not mark the busy runner for replacement: {e}");
                outcome.mark_failed.push((name, e));
            }
        }
    }
}

fn probe_jobs(
    ops: &dyn RunnerOps,
    names: &[RunnerName],
    concurrency: Concurrency,
) -> BTreeMap<RunnerName, JobProbe> {
    let answers = executor::bounded_map(names, concurrency.workers(names.len()), |name| {
        ops.job_started_at(name)
    });
    names
        .iter()
        .cloned()
        .zip(answers)
        .map(|(name, answer)| {
            let probe = match answer {
                Ok(Some(_)) => JobProbe::Started,
                Ok(None) => JobProbe::NoJob,
                Err(e) => {
                    tracing::warn!("could not tell whether {name} runs a job: {e}");
                    JobProbe::Unknown
                }
            };
            (name, probe)
        })
        .collect()
}

/// LXD's and GitHub's views; GitHub's is optional in FORCE mode only, and left out when it
/// does not cover the runners.
fn observe(
    ops: &dyn RunnerOps,
    mode: FlushMode,
    scope: &FlushScope,
    outcome: &mut FlushOutcome,
) -> Result<(Vec<Instance>, Option<Vec<GitHubRunner>>), FlushError> {
    let observation = ops.observe().map_err(FlushError::Lxd)?;
    match observation.github {
        Ok(_) if !scope.github_sees_runners && mode.is_force() => Ok((observation.instances, None)),
        Ok(github) => Ok((observation.instances, Some(github))),
        Err(e) if mode.is_force() => {
            tracing::warn!("{mode}: GitHub refused to list runners, going on without: {e}");
            outcome.github_error = Some(e);
            Ok((observation.instances, None))
        }
        Err(e) => Err(FlushError::GitHub(e)),
    }
}

/// One runner as the pre-job check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreJobProbe {
    pub name: RunnerName,
    /// GitHub lists it busy (`Some(true)`), idle (`Some(false)`), or GitHub was not asked.
    pub busy: Option<bool>,
    /// [`RunnerOps::job_started_at`]'s answer.
    pub job_started: Result<Option<u64>, OpError>,
}

/// True while some runner is in its pre-job phase: its job started less than a minute ago,
/// or GitHub gave it a job that has not started in the instance yet. A runner whose job
/// start cannot be read is not waited for (waiting on an unknown would be the inverted
/// check's 150 s again).
pub fn pre_job_pending(probes: &[PreJobProbe], now_epoch: u64) -> bool {
    probes.iter().any(|p| match (&p.job_started, p.busy) {
        (Ok(Some(started)), _) => now_epoch.saturating_sub(*started) < PRE_JOB_WINDOW_SECS,
        (Ok(None), Some(true)) => true,
        (Ok(None), _) | (Err(_), _) => false,
    })
}

/// Runners to check for a pre-job phase: running instances GitHub lists busy (or all
/// running ones when GitHub's view is missing).
pub fn pre_job_candidates(
    instances: &[Instance],
    github: Option<&[GitHubRunner]>,
) -> Vec<(RunnerName, Option<bool>)> {
    instances
        .iter()
        .filter(|i| i.state == InstanceState::Running)
        .filter_map(|i| {
            let busy = github.map(|g| g.iter().any(|r| r.name == i.name && r.busy));
            match busy {
                Some(false) => None,
                busy => Some((RunnerName(i.name.clone()), busy)),
            }
        })
        .collect()
}

fn wait_for_pre_job(
    ops: &dyn RunnerOps,
    clock: &dyn Clock,
    mode: FlushMode,
    scope: &FlushScope,
    concurrency: Concurrency,
    outcome: &mut FlushOutcome,
) -> Result<(), FlushError> {
    for _ in 0..WAIT_ROUNDS {
        let (instances, github) = observe(ops, mode, scope, outcome)?;
        let candidates = pre_job_candidates(&instances, github.as_deref());
        let workers = concurrency.workers(candidates.len());
        let probes = executor::bounded_map(&candidates, workers, |(name, busy)| PreJobProbe {
            name: name.clone(),
            busy: *busy,
            job_started: ops.job_started_at(name),
        });
        for probe in &probes {
            if let Err(e) = &probe.job_started {
                tracing::warn!("could not tell when {}'s job started: {e}", probe.name);
            }
        }
        if !pre_job_pending(&probes, clock.now_epoch()) {
            return Ok(());
        }
        tracing::info!("a runner is in its pre-job phase; waiting {WAIT_INTERVAL:?}");
        clock.sleep(WAIT_INTERVAL);
        outcome.waited += WAIT_INTERVAL;
    }
    tracing::warn!(
        "runners still in their pre-job phase after {:?}; going on",
        outcome.waited
    );
    outcome.wait_exhausted = true;
    Ok(())
}

#[cfg(test)]
#[path = "flush_tests.rs"]
mod tests;
