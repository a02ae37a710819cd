//! Flushing runners: remove idle ones, optionally wait for busy ones to get past their
//! pre-job phase, optionally remove the busy ones too.
//!
//! The modes keep the Python charm's names. Its pre-job check was inverted (it slept while
//! no runner was in pre-job and stopped waiting when one was); here a flush waits while some
//! busy runner's job started less than [`PRE_JOB_WINDOW_SECS`] ago, at most
//! [`WAIT_ROUNDS`] x [`WAIT_INTERVAL`], on the injected clock.
//!
//! FORCE_FLUSH_WAIT_REPO_CHECK serves config changes: the caller builds the [`RunnerOps`]
//! with the PREVIOUS credentials and path, and the flush goes on when GitHub refuses them
//! (JIT runners need no remove token: removal is deleting the registration and the instance).

use std::collections::BTreeSet;
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
    /// Remove idle runners, wait for the pre-job phase, then remove every runner.
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
        matches!(
            self,
            FlushMode::FlushIdleWaitRepoCheck
                | FlushMode::FlushBusyWaitRepoCheck
                | FlushMode::ForceFlushWaitRepoCheck
        )
    }

    pub fn removes_busy(self) -> bool {
        matches!(
            self,
            FlushMode::FlushBusy
                | FlushMode::FlushBusyWaitRepoCheck
                | FlushMode::ForceFlushWaitRepoCheck
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
    /// Time spent waiting for pre-job phases.
    pub waited: Duration,
    /// The wait ended with some runner still in its pre-job phase.
    pub wait_exhausted: bool,
    /// FORCE only: GitHub refused to list runners, so busy ones could not be told apart.
    pub github_error: Option<OpError>,
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

/// The first phase: every runner GitHub does not list busy. Not forced, so a runner that
/// takes a job meanwhile answers 422 and is kept. Without GitHub's view only instances
/// that cannot be running a job (Error, Stopped) are removed here.
pub fn idle_removals(instances: &[Instance], github: Option<&[GitHubRunner]>) -> Vec<Removal> {
    let Some(github) = github else {
        return instances
            .iter()
            .filter(|i| matches!(i.state, InstanceState::Error | InstanceState::Stopped))
            .map(|i| removal(&i.name, true, None, true))
            .collect();
    };
    let busy: BTreeSet<&str> = github
        .iter()
        .filter(|r| r.busy)
        .map(|r| r.name.as_str())
        .collect();
    every_runner(instances, Some(github))
        .into_iter()
        .filter(|r| !busy.contains(r.target.name.as_str()))
        .collect()
}

/// The last phase: every runner left, forced (the instance goes even if it runs a job).
pub fn busy_removals(instances: &[Instance], github: Option<&[GitHubRunner]>) -> Vec<Removal> {
    every_runner(instances, github)
        .into_iter()
        .map(|mut r| {
            r.force = true;
            r
        })
        .collect()
}

/// One removal per name (instance and registration joined), in name order. A runner the
/// listing lacks (or every runner, without GitHub's view) uses the registration id its
/// instance recorded: a listing can miss a live registration (one deleted between pages
/// shifts the next page), and deleting the registration first is what keeps a busy runner
/// (422) in an unforced removal; a registration already gone answers 404, which is fine.
fn every_runner(instances: &[Instance], github: Option<&[GitHubRunner]>) -> Vec<Removal> {
    let listed = github.unwrap_or(&[]);
    let mut names: BTreeSet<&str> = instances.iter().map(|i| i.name.as_str()).collect();
    names.extend(listed.iter().map(|r| r.name.as_str()));
    names
        .into_iter()
        .map(|name| {
            let instance = instances.iter().find(|i| i.name == name);
            let id = listed
                .iter()
                .find(|r| r.name == name)
                .map(|r| r.id)
                .or_else(|| instance.and_then(recorded_runner_id));
            let dead = instance
                .is_some_and(|i| matches!(i.state, InstanceState::Error | InstanceState::Stopped));
            removal(name, instance.is_some(), id, dead)
        })
        .collect()
}

fn removal(name: &str, has_instance: bool, github_id: Option<u64>, force: bool) -> Removal {
    Removal {
        target: RemovalTarget {
            name: RunnerName(name.to_string()),
            has_instance,
            github_id,
        },
        reason: RemovalReason::Flush,
        force,
    }
}

/// Flush this unit's runners in `mode`. Run it under the unit lock.
pub fn flush(
    ops: &dyn RunnerOps,
    clock: &dyn Clock,
    mode: FlushMode,
    concurrency: Concurrency,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<FlushOutcome, FlushError> {
    tracing::info!(%mode, "flushing runners");
    let mut outcome = FlushOutcome {
        mode,
        report: Report::default(),
        waited: Duration::ZERO,
        wait_exhausted: false,
        github_error: None,
    };

    let (instances, github) = observe(ops, mode, &mut outcome)?;
    let idle = idle_removals(&instances, github.as_deref());
    outcome
        .report
        .absorb(executor::remove_all(&idle, ops, concurrency, progress));

    if mode.waits_for_pre_job() {
        wait_for_pre_job(ops, clock, mode, concurrency, &mut outcome)?;
    }

    if mode.removes_busy() {
        let (instances, github) = observe(ops, mode, &mut outcome)?;
        let rest = busy_removals(&instances, github.as_deref());
        outcome
            .report
            .absorb(executor::remove_all(&rest, ops, concurrency, progress));
    }
    for failure in &outcome.report.failed {
        tracing::warn!("{failure}");
    }
    Ok(outcome)
}

/// LXD's and GitHub's views; GitHub's is optional in FORCE mode only.
fn observe(
    ops: &dyn RunnerOps,
    mode: FlushMode,
    outcome: &mut FlushOutcome,
) -> Result<(Vec<Instance>, Option<Vec<GitHubRunner>>), FlushError> {
    let observation = ops.observe().map_err(FlushError::Lxd)?;
    match observation.github {
        Ok(github) => Ok((observation.instances, Some(github))),
        Err(e) if mode.is_force() => {
            tracing::warn!("{mode}: GitHub refused to list runners, going on without: {e}");
            outcome.github_error = Some(e);
            Ok((observation.instances, None))
        }
        Err(e) => Err(FlushError::GitHub(e)),
    }
}

fn wait_for_pre_job(
    ops: &dyn RunnerOps,
    clock: &dyn Clock,
    mode: FlushMode,
    concurrency: Concurrency,
    outcome: &mut FlushOutcome,
) -> Result<(), FlushError> {
    for _ in 0..WAIT_ROUNDS {
        let (instances, github) = observe(ops, mode, outcome)?;
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
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::manager::executor::no_progress;
    use crate::manager::fake_fleet::FakeFleet;
    use std::sync::Arc;

    const NOW: u64 = 1_700_000_000;

    fn fleet() -> FakeFleet {
        FakeFleet::new(Arc::new(ManualClock::at(NOW)))
    }

    fn run(fleet: &FakeFleet, mode: FlushMode) -> Result<FlushOutcome, FlushError> {
        let clock = fleet.clock.clone();
        flush(fleet, &*clock, mode, Concurrency::Default, &no_progress)
    }

    fn names(list: &[RunnerName]) -> Vec<&str> {
        list.iter().map(|n| n.as_str()).collect()
    }

    fn removed(outcome: &FlushOutcome) -> Vec<&str> {
        outcome
            .report
            .removed
            .iter()
            .map(|r| r.name.as_str())
            .collect()
    }

    #[test]
    fn mode_names_round_trip() {
        for mode in FlushMode::ALL {
            assert_eq!(mode.name().parse::<FlushMode>(), Ok(mode));
        }
        assert!("flush_idle".parse::<FlushMode>().is_err());
    }

    #[test]
    fn flush_idle_keeps_busy_runners_and_never_waits() {
        let fleet = fleet();
        fleet.add_runner("idle", 3600, false);
        fleet.add_runner("busy", 3600, false);
        fleet.start_job("busy", NOW - 5);
        let outcome = run(&fleet, FlushMode::FlushIdle).unwrap();
        assert_eq!(removed(&outcome), vec!["idle"]);
        assert_eq!(fleet.names(), vec!["busy".to_string()]);
        assert!(fleet.clock.sleeps().is_empty());
    }

    /// The listing skipped the busy runner (a page shifted under it): its removal still
    /// deletes the recorded registration first, GitHub answers 422, and it is kept.
    #[test]
    fn flush_idle_keeps_a_busy_runner_the_listing_missed() {
        let fleet = fleet();
        fleet.add_runner("idle", 3600, false);
        fleet.add_runner("busy", 3600, true);
        fleet.state().unlisted_once.insert("busy".into());
        let outcome = run(&fleet, FlushMode::FlushIdle).unwrap();
        assert_eq!(removed(&outcome), vec!["idle"]);
        assert_eq!(names(&outcome.report.kept_busy), vec!["busy"]);
        assert!(fleet.state().instances.contains_key("busy"));
    }

    #[test]
    fn flush_busy_removes_everything_at_once() {
        let fleet = fleet();
        fleet.add_runner("idle", 3600, false);
        fleet.add_runner("busy", 3600, false);
        fleet.start_job("busy", NOW - 5);
        let outcome = run(&fleet, FlushMode::FlushBusy).unwrap();
        assert_eq!(removed(&outcome), vec!["busy", "idle"]);
        assert!(fleet.names().is_empty());
        assert!(fleet.clock.sleeps().is_empty());
    }

    #[test]
    fn waits_while_a_job_is_in_its_first_minute() {
        let fleet = fleet();
        fleet.add_runner("busy", 3600, false);
        fleet.start_job("busy", NOW - 10);
        let outcome = run(&fleet, FlushMode::FlushBusyWaitRepoCheck).unwrap();
        // Ages 10 s and 40 s are in pre-job; at 70 s it is past, so two waits.
        assert_eq!(fleet.clock.sleeps(), vec![WAIT_INTERVAL; 2]);
        assert_eq!(outcome.waited, Duration::from_secs(60));
        assert!(!outcome.wait_exhausted);
        assert_eq!(removed(&outcome), vec!["busy"]);
    }

    #[test]
    fn does_not_wait_for_jobs_past_their_pre_job_phase() {
        // The Python charm's inverted check slept 150 s exactly here.
        let fleet = fleet();
        fleet.add_runner("busy", 3600, false);
        fleet.start_job("busy", NOW - 300);
        fleet.add_runner("idle", 3600, false);
        let outcome = run(&fleet, FlushMode::FlushBusyWaitRepoCheck).unwrap();
        assert!(fleet.clock.sleeps().is_empty());
        assert_eq!(removed(&outcome), vec!["busy", "idle"]);
    }

    #[test]
    fn a_job_that_never_shows_up_is_waited_for_boundedly() {
        let fleet = fleet();
        fleet.add_runner("assigned", 3600, true); // busy on GitHub, nothing started inside
        let outcome = run(&fleet, FlushMode::FlushBusyWaitRepoCheck).unwrap();
        assert_eq!(fleet.clock.sleeps().len(), WAIT_ROUNDS as usize);
        assert_eq!(outcome.waited, WAIT_INTERVAL * WAIT_ROUNDS);
        assert!(outcome.wait_exhausted);
        assert!(fleet.names().is_empty());
    }

    #[test]
    fn flush_idle_wait_waits_but_keeps_busy_runners() {
        let fleet = fleet();
        fleet.add_runner("idle", 3600, false);
        fleet.add_runner("busy", 3600, false);
        fleet.start_job("busy", NOW - 45);
        let outcome = run(&fleet, FlushMode::FlushIdleWaitRepoCheck).unwrap();
        assert_eq!(fleet.clock.sleeps(), vec![WAIT_INTERVAL]);
        assert_eq!(removed(&outcome), vec!["idle"]);
        assert_eq!(fleet.names(), vec!["busy".to_string()]);
    }

    #[test]
    fn a_runner_taking_a_job_during_flush_idle_is_kept() {
        let fleet = fleet();
        fleet.add_runner("a", 3600, false);
        fleet.state().take_job_on_delete.insert("a".into());
        let outcome = run(&fleet, FlushMode::FlushIdle).unwrap();
        assert_eq!(names(&outcome.report.kept_busy), vec!["a"]);
        assert_eq!(fleet.names(), vec!["a".to_string()]);
    }

    #[test]
    fn a_runner_taking_a_job_during_flush_busy_is_removed_in_the_busy_phase() {
        let fleet = fleet();
        fleet.add_runner("a", 3600, false);
        fleet.state().take_job_on_delete.insert("a".into());
        let outcome = run(&fleet, FlushMode::FlushBusy).unwrap();
        assert_eq!(names(&outcome.report.kept_busy), vec!["a"]);
        assert_eq!(removed(&outcome), vec!["a"]);
        assert!(fleet.names().is_empty());
    }

    #[test]
    fn non_force_modes_touch_nothing_when_github_refuses() {
        for mode in FlushMode::ALL.into_iter().filter(|m| !m.is_force()) {
            let fleet = fleet();
            fleet.add_runner("a", 3600, false);
            fleet.state().github_down = true;
            let err = run(&fleet, mode).unwrap_err();
            assert!(matches!(err, FlushError::GitHub(_)), "{mode}");
            assert_eq!(fleet.names(), vec!["a".to_string()], "{mode}");
        }
    }

    #[test]
    fn force_flush_removes_instances_when_the_old_credentials_are_refused() {
        let fleet = fleet();
        fleet.add_runner("idle", 3600, false);
        fleet.add_runner("busy", 3600, false);
        fleet.start_job("busy", NOW - 20);
        fleet.state().github_down = true;
        let outcome = run(&fleet, FlushMode::ForceFlushWaitRepoCheck).unwrap();
        assert!(outcome.github_error.is_some());
        // Without GitHub every running instance is checked: busy's job is 20 s old.
        assert_eq!(fleet.clock.sleeps(), vec![WAIT_INTERVAL; 2]);
        let state = fleet.state();
        assert!(
            state.instances.is_empty(),
            "no instance may survive a forced flush"
        );
        let left: Vec<&str> = outcome
            .report
            .registrations_left
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        assert_eq!(left, vec!["busy", "idle"]);
    }

    #[test]
    fn force_flush_with_working_credentials_deletes_registrations_too() {
        let fleet = fleet();
        fleet.add_runner("a", 3600, false);
        fleet.add_runner("b", 3600, true);
        fleet.start_job("b", NOW - 600);
        let outcome = run(&fleet, FlushMode::ForceFlushWaitRepoCheck).unwrap();
        assert!(outcome.github_error.is_none());
        assert_eq!(removed(&outcome), vec!["a", "b"]);
        assert!(fleet.names().is_empty());
        assert_eq!(fleet.state().deleted_registrations.len(), 2);
    }

    #[test]
    fn pre_job_decision() {
        let probe = |busy, job_started| PreJobProbe {
            name: RunnerName("r".into()),
            busy,
            job_started,
        };
        let now = 1000;
        assert!(pre_job_pending(
            &[probe(Some(true), Ok(Some(now - 59)))],
            now
        ));
        assert!(!pre_job_pending(
            &[probe(Some(true), Ok(Some(now - 60)))],
            now
        ));
        assert!(pre_job_pending(&[probe(Some(true), Ok(None))], now));
        assert!(!pre_job_pending(&[probe(None, Ok(None))], now));
        assert!(pre_job_pending(&[probe(None, Ok(Some(now - 1)))], now));
        assert!(!pre_job_pending(
            &[probe(Some(true), Err(OpError::transient("exec failed")))],
            now
        ));
        assert!(!pre_job_pending(&[], now));
    }

    #[test]
    fn removal_lists() {
        let fleet = fleet();
        fleet.add_runner("a", 3600, false);
        fleet.add_runner("b", 3600, true);
        let obs = fleet.observe().unwrap();
        let mut github = obs.github.unwrap();
        github.push(GitHubRunner {
            id: 99,
            name: "orphan".into(),
            status: crate::github::RunnerOnline::Offline,
            busy: false,
            labels: vec![],
        });
        let idle = idle_removals(&obs.instances, Some(&github));
        let idle: Vec<(&str, bool, Option<u64>, bool)> = idle
            .iter()
            .map(|r| {
                (
                    r.target.name.as_str(),
                    r.target.has_instance,
                    r.target.github_id,
                    r.force,
                )
            })
            .collect();
        assert_eq!(
            idle,
            vec![
                ("a", true, Some(1), false),
                ("orphan", false, Some(99), false)
            ]
        );
        let all = busy_removals(&obs.instances, Some(&github));
        assert_eq!(all.len(), 3);
        assert!(all
            .iter()
            .all(|r| r.force && r.reason == RemovalReason::Flush));
        assert!(idle_removals(&obs.instances, None).is_empty());
    }
}
