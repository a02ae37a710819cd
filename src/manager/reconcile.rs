//! One reconcile round: observe, probe health where it matters, plan, apply.
//!
//! State is derived from LXD and GitHub every round, so a round killed at any point leaves
//! nothing the next round cannot see and fix.

use crate::clock::Clock;
use crate::github::GitHubRunner;
use crate::lxd::Instance;
use crate::manager::admission::{self, HostCapacity, RoundLimits, RunnerSize};
use crate::manager::executor::{self, Concurrency, Progress, Report};
use crate::manager::footprint::MachineLoad;
use crate::manager::ops::{FailureKind, OpError, RunnerOps};
use crate::manager::planner::{self, BinaryState, Condition, Plan, PlanInput};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileSettings {
    pub desired: u32,
    pub binary: BinaryState,
    /// How long a new runner may take to come online on GitHub.
    pub grace_secs: u64,
    pub concurrency: Concurrency,
    /// Per-round caps: creations, consecutive launch failures.
    pub limits: RoundLimits,
    /// What one runner takes; None: no host admission (the round cap still applies).
    pub runner_size: Option<RunnerSize>,
    /// Fingerprint of the scope the runners serve (see `manager::replacement`).
    pub scope: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileOutcome {
    pub plan: Plan,
    pub report: Report,
    /// Listener checks run (each one an exec in an instance).
    pub health_checks: usize,
    pub started_epoch: u64,
    pub duration_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    #[error("could not list this unit's LXD instances: {0}")]
    Lxd(OpError),
    /// Without GitHub's view, busy runners cannot be told from idle ones: nothing is touched.
    #[error("could not list this unit's runners on GitHub, so no runner was touched: {0}")]
    GitHub(OpError),
}

impl ReconcileError {
    pub fn kind(&self) -> FailureKind {
        match self {
            ReconcileError::Lxd(e) | ReconcileError::GitHub(e) => e.kind,
        }
    }
}

/// Bring this unit's runners to `settings.desired`.
pub fn reconcile(
    ops: &dyn RunnerOps,
    clock: &dyn Clock,
    settings: &ReconcileSettings,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Result<ReconcileOutcome, ReconcileError> {
    let started_epoch = clock.now_epoch();
    let observation = ops.observe().map_err(ReconcileError::Lxd)?;
    let mut github = observation.github.map_err(ReconcileError::GitHub)?;
    let confirmed_gone = confirm_unlisted(ops, &observation.instances, &mut github, settings);

    let to_probe = planner::instances_to_probe(&observation.instances, &github, started_epoch);
    let health = executor::probe_health(ops, &to_probe, settings.concurrency);

    let mut plan = planner::plan(&PlanInput {
        desired: settings.desired,
        instances: &observation.instances,
        github: &github,
        health: &health,
        confirmed_gone: &confirmed_gone,
        binary: settings.binary,
        now_epoch: clock.now_epoch(),
        grace_secs: settings.grace_secs,
        scope: &settings.scope,
    });
    admit_creations(&mut plan, settings, ops);
    tracing::info!(
        desired = plan.desired,
        capacity = plan.capacity,
        create = plan.create,
        removals = plan.removals.len(),
        deferred = plan.creates_deferred,
        "reconcile plan"
    );
    let report = executor::apply_limited(
        &plan,
        ops,
        settings.concurrency,
        settings.limits.max_consecutive_failures,
        progress,
    );
    for failure in &report.failed {
        tracing::warn!("{failure}");
    }
    Ok(ReconcileOutcome {
        plan,
        report,
        health_checks: to_probe.len(),
        started_epoch,
        duration_secs: clock.now_epoch().saturating_sub(started_epoch),
    })
}

/// Ask GitHub, one registration at a time, about each running instance whose recorded
/// registration the listing lacks. One still there was skipped by the listing: it joins
/// `github`, so the planner sees it as it is (busy, idle, ...). Returns the ids GitHub
/// answered 404 for; an id whose check failed is in neither, and its runner is left alone.
fn confirm_unlisted(
    ops: &dyn RunnerOps,
    instances: &[Instance],
    github: &mut Vec<GitHubRunner>,
    settings: &ReconcileSettings,
) -> BTreeSet<u64> {
    let unlisted = planner::unlisted_registrations(instances, github, &settings.scope);
    let ids: Vec<u64> = unlisted.iter().map(|(_, id)| *id).collect();
    let answers = executor::check_registrations(ops, &ids, settings.concurrency);
    let mut gone = BTreeSet::new();
    for ((name, id), answer) in unlisted.iter().zip(answers) {
        match answer {
            Ok(None) => {
                gone.insert(*id);
            }
            Ok(Some(found)) if found.name == *name => {
                tracing::info!(runner = %name, id, "the runner listing missed a live registration; keeping its runner");
                github.push(found);
            }
            Ok(Some(found)) => {
                tracing::warn!(runner = %name, id, other = %found.name, "the recorded runner id belongs to another registration; leaving the runner alone");
            }
            Err(e) => {
                tracing::warn!(runner = %name, id, "could not confirm the registration is gone, leaving the runner alone: {e}");
            }
        }
    }
    gone
}

/// Lowers `plan.create` to what the machine holds and one round may create, and records
/// why. The machine is listed only when something is to be created; what the round removes
/// does not count. Runners waiting for their job before replacement are not capacity, but
/// they hold the machine's resources (as instances on it, or counted here when it cannot
/// be listed).
fn admit_creations(plan: &mut Plan, settings: &ReconcileSettings, ops: &dyn RunnerOps) {
    let unlimited = RunnerSize {
        cpus: 1,
        memory_bytes: 1,
        disk_bytes: 1,
    };
    let machine = match &settings.runner_size {
        Some(size) if plan.create > 0 => ops.machine().map(|m| (size, m)),
        _ => None,
    };
    let occupying = plan.capacity + plan.count(Condition::Replacing) as u32;
    let (size, host, load) = match &machine {
        Some((size, machine)) => {
            let leaving: Vec<&str> = plan
                .removals
                .iter()
                .map(|r| r.target.name.as_str())
                .collect();
            (*size, machine.host, machine.load(size, &leaving))
        }
        None => (
            &unlimited,
            HostCapacity::default(),
            MachineLoad::uniform(occupying, &unlimited),
        ),
    };
    let (create, held) =
        admission::admit(plan.create, occupying, &load, size, &host, &settings.limits);
    if held.by_host > 0 {
        tracing::warn!(
            wanted = plan.create,
            create,
            instances = load.instances,
            "the machine cannot hold every runner asked for: {}",
            held.note().unwrap_or_default()
        );
    }
    plan.create = create;
    plan.held_back = held;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::manager::executor::no_progress;
    use crate::manager::fake_fleet::FakeFleet;
    use crate::manager::planner::RemovalReason;
    use std::sync::Arc;

    const NOW: u64 = 1_700_000_000;
    const SCOPE: &str = crate::manager::fake_fleet::SCOPE;

    fn settings(desired: u32) -> ReconcileSettings {
        ReconcileSettings {
            desired,
            binary: BinaryState {
                ready: true,
                updated_at_epoch: None,
            },
            grace_secs: 600,
            concurrency: Concurrency::Default,
            limits: RoundLimits::default(),
            runner_size: None,
            scope: SCOPE.into(),
        }
    }

    fn fleet() -> FakeFleet {
        FakeFleet::new(Arc::new(ManualClock::at(NOW)))
    }

    #[test]
    fn from_zero_creates_the_desired_count_then_steady_state_does_nothing() {
        let fleet = fleet();
        let first = reconcile(&fleet, &*fleet.clock.clone(), &settings(3), &no_progress).unwrap();
        assert_eq!(first.report.created.len(), 3);
        assert_eq!(first.plan.delta(), 3);
        let second = reconcile(&fleet, &*fleet.clock.clone(), &settings(3), &no_progress).unwrap();
        assert!(second.plan.is_noop(), "{:?}", second.plan);
        // New runners are offline on GitHub: nothing to probe.
        assert_eq!(second.health_checks, 0);
    }

    #[test]
    fn a_runner_that_takes_a_job_before_its_deletion_is_kept_and_reported_busy() {
        let fleet = fleet();
        fleet.add_runner("a", 3600, false);
        fleet.add_runner("b", 3600, false);
        fleet.state().take_job_on_delete.insert("b".into());

        let clock = fleet.clock.clone();
        let outcome = reconcile(&fleet, &*clock, &settings(0), &no_progress).unwrap();
        assert_eq!(
            outcome.report.kept_busy,
            vec![crate::identity::RunnerName("b".into())]
        );
        assert_eq!(outcome.report.removed.len(), 1);
        assert_eq!(outcome.report.removed[0].reason, RemovalReason::Surplus);
        assert!(outcome.report.failed.is_empty());
        // b is intact on both sides and the next round leaves it alone.
        assert_eq!(fleet.names(), vec!["b".to_string()]);
        assert!(fleet.state().instances.contains_key("b"));
        let next = reconcile(&fleet, &*clock, &settings(0), &no_progress).unwrap();
        assert!(next.plan.is_noop());
    }

    /// A busy runner the listing skipped (a page shifted under it) is confirmed with one
    /// GET and kept; the next, complete listing changes nothing.
    #[test]
    fn a_busy_runner_missing_from_one_listing_keeps_its_instance() {
        let fleet = fleet();
        let busy_id = fleet.add_runner("busy", 3600, true);
        fleet.add_runner("idle", 3600, false);
        fleet.state().unlisted_once.insert("busy".into());
        let clock = fleet.clock.clone();
        let outcome = reconcile(&fleet, &*clock, &settings(2), &no_progress).unwrap();
        assert!(outcome.plan.is_noop(), "{:?}", outcome.plan);
        assert_eq!(fleet.state().registration_checks, vec![busy_id]);
        assert!(fleet.state().deleted_instances.is_empty());
        assert_eq!(
            outcome.plan.count(crate::manager::planner::Condition::Busy),
            1
        );
        let next = reconcile(&fleet, &*clock, &settings(2), &no_progress).unwrap();
        assert!(next.plan.is_noop());
        assert_eq!(
            fleet.state().registration_checks,
            vec![busy_id],
            "a full listing needs no check"
        );
    }

    #[test]
    fn a_runner_whose_check_fails_is_left_alone_and_one_confirmed_gone_is_removed() {
        let fleet = fleet();
        let unsure = fleet.add_runner("unsure", 3600, true);
        let done = fleet.add_runner("done", 3600, false);
        {
            let mut s = fleet.state();
            s.unlisted_once.insert("unsure".into());
            s.registration_check_fails.insert(unsure);
            // GitHub removed "done"'s ephemeral registration after its job.
            s.registrations.remove("done");
        }
        let clock = fleet.clock.clone();
        let outcome = reconcile(&fleet, &*clock, &settings(1), &no_progress).unwrap();
        assert_eq!(fleet.state().deleted_instances, vec!["done".to_string()]);
        assert_eq!(
            outcome.report.removed[0].reason,
            RemovalReason::RegistrationGone
        );
        assert!(fleet.state().instances.contains_key("unsure"));
        let mut checked = fleet.state().registration_checks.clone();
        checked.sort();
        assert_eq!(checked, vec![unsure, done]);
        assert_eq!(
            outcome
                .plan
                .count(crate::manager::planner::Condition::Unconfirmed),
            1
        );
    }

    #[test]
    fn github_outage_touches_nothing() {
        let fleet = fleet();
        fleet.add_runner("a", 3600, false);
        fleet.state().github_down = true;
        let clock = fleet.clock.clone();
        let err = reconcile(&fleet, &*clock, &settings(0), &no_progress).unwrap_err();
        assert_eq!(err.kind(), FailureKind::NeedsOperator);
        assert!(err.to_string().contains("no runner was touched"), "{err}");
        assert_eq!(fleet.names(), vec!["a".to_string()]);
    }

    #[test]
    fn a_round_creates_at_most_its_cap_and_the_next_rounds_go_on() {
        let fleet = fleet();
        let clock = fleet.clock.clone();
        let capped = ReconcileSettings {
            limits: RoundLimits {
                max_creations: 16,
                max_consecutive_failures: 3,
            },
            ..settings(40)
        };
        let counts: Vec<usize> = (0..4)
            .map(|_| {
                let out = reconcile(&fleet, &*clock, &capped, &no_progress).unwrap();
                out.report.created.len()
            })
            .collect();
        assert_eq!(counts, vec![16, 16, 8, 0]);
        assert_eq!(fleet.names().len(), 40);
    }

    #[test]
    fn a_broken_launch_stops_the_rounds_creations_after_k_failures_in_a_row() {
        let fleet = fleet();
        fleet.state().launch_broken = true;
        let clock = fleet.clock.clone();
        let serial = ReconcileSettings {
            concurrency: Concurrency::Serial,
            ..settings(16)
        };
        let out = reconcile(&fleet, &*clock, &serial, &no_progress).unwrap();
        assert_eq!(fleet.state().create_attempts, 3);
        assert_eq!(out.report.failed.len(), 3);
        assert_eq!(out.report.creations_skipped, 13);
        // In parallel, creations already running finish: at most k + workers - 1 attempts.
        fleet.state().create_attempts = 0;
        let out = reconcile(&fleet, &*clock, &settings(16), &no_progress).unwrap();
        let attempts = fleet.state().create_attempts;
        assert!((3..=3 + 8 - 1).contains(&attempts), "{attempts}");
        assert_eq!(out.report.creations_skipped, 16 - attempts);
        // A healthy image again: the next round creates them all.
        fleet.state().launch_broken = false;
        let out = reconcile(&fleet, &*clock, &settings(16), &no_progress).unwrap();
        assert_eq!(out.report.created.len(), 16);
    }

    #[test]
    fn only_what_the_host_holds_is_created_and_the_plan_says_why() {
        use crate::manager::admission::Resource;
        let fleet = fleet();
        fleet.add_runner("old", 3600, true);
        fleet.state().host = HostCapacity {
            cpus: Some(64),
            memory_bytes: Some(40 << 30),
            pool_free_bytes: None,
        };
        let clock = fleet.clock.clone();
        let sized = ReconcileSettings {
            runner_size: Some(RunnerSize {
                cpus: 2,
                memory_bytes: 8 << 30,
                disk_bytes: 10 << 30,
            }),
            ..settings(10)
        };
        let out = reconcile(&fleet, &*clock, &sized, &no_progress).unwrap();
        // 90% of 40 GiB holds 4 runners of 8 GiB; one exists.
        assert_eq!(out.report.created.len(), 3);
        assert_eq!(out.plan.held_back.host, Some((Resource::Memory, 4)));
        assert_eq!(out.plan.held_back.by_host, 6);
        assert_eq!(fleet.names().len(), 4);
    }

    /// After a scope change an old runner still runs its job: the new scope gets its
    /// runners, but only as many as the host holds with the old one still there, and the
    /// old one is never looked up with the new credentials (a 404 there proves nothing).
    #[test]
    fn a_previous_scopes_busy_runner_holds_host_room_but_not_a_place_in_the_fleet() {
        use crate::manager::replacement::SCOPE_CONFIG_KEY;
        let fleet = fleet();
        fleet.add_runner("old", 3600, true);
        fleet.set_config("old", SCOPE_CONFIG_KEY, "scope-before");
        fleet.state().registrations.clear();
        fleet.state().host = HostCapacity {
            cpus: None,
            memory_bytes: Some(10 << 30),
            pool_free_bytes: None,
        };
        let sized = ReconcileSettings {
            runner_size: Some(RunnerSize {
                cpus: 1,
                memory_bytes: 3 << 30,
                disk_bytes: 1,
            }),
            ..settings(3)
        };
        let clock = fleet.clock.clone();
        let out = reconcile(&fleet, &*clock, &sized, &no_progress).unwrap();
        // 90% of 10 GiB holds 3 runners of 3 GiB; the old one takes one.
        assert_eq!(out.report.created.len(), 2);
        assert_eq!(out.plan.count(Condition::Replacing), 1);
        assert!(fleet.state().instances.contains_key("old"));
        assert!(fleet.state().registration_checks.is_empty());
        // Its job ends, the instance powers off: the next round removes it and refills.
        fleet.state().instances.get_mut("old").unwrap().state = crate::lxd::InstanceState::Stopped;
        let next = reconcile(&fleet, &*clock, &sized, &no_progress).unwrap();
        assert_eq!(next.report.removed.len(), 1);
        assert_eq!(next.report.created.len(), 1);
        assert!(!fleet.state().instances.contains_key("old"));
    }

    #[test]
    fn idle_online_runners_are_probed() {
        let fleet = fleet();
        fleet.add_runner("a", 3600, false);
        fleet.add_runner("b", 3600, true);
        let clock = fleet.clock.clone();
        let outcome = reconcile(&fleet, &*clock, &settings(2), &no_progress).unwrap();
        assert_eq!(outcome.health_checks, 1);
        assert!(outcome.plan.is_noop());
    }
}
