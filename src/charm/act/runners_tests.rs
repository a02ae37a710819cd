//! The runner work under the unit lock over the in-memory world, shown as `report` shows
//! it (status set and remembered, the `reconciliation` metric written).

use super::host::{periodic_binary_check, BinaryCheck};
use super::runners::{FlushRun, ReconcileRun};
use super::*;
use crate::charm::decide::BINARY_CHECK_INTERVAL;
use crate::charm::fake_world::{FakeWorld, WorldHost};
use crate::charm::report;
use crate::host::lock::{LockError, LockWait, UnitLock};
use crate::juju::memory::MemoryHookTools;
use crate::juju::state::LAST_STATUS_KEY;
use crate::manager::executor::no_progress;
use crate::manager::flush::FlushError;
use std::time::Duration;

struct Unit {
    tools: MemoryHookTools,
    world: FakeWorld,
    root: tempfile::TempDir,
}

impl Unit {
    fn new() -> Self {
        Unit {
            tools: MemoryHookTools::default(),
            world: FakeWorld::new(),
            root: tempfile::tempdir().unwrap(),
        }
    }

    fn with<R>(&self, vms: u32, f: impl FnOnce(&Context<'_>, &Runtime) -> R) -> R {
        self.world.as_unit(&self.tools, self.root.path(), vms, f)
    }
}

/// What `report` makes of a round.
fn show(ctx: &Context<'_>, rt: &Runtime, run: &ReconcileRun) -> Result<(), CharmError> {
    let outcome = Outcome {
        shown: Shown::Remember(run.status.clone()),
        metric: run.metric.clone().map(|event| RoundMetric {
            event,
            paths: rt.paths.clone(),
            clock: rt.clock.clone(),
        }),
        ..Outcome::default()
    };
    report::report(ctx, &crate::charm::Intent::ReportOnly, outcome)
}

/// Lock, one round, then shown.
fn reconcile(ctx: &Context<'_>, rt: &Runtime) -> Result<ReconcileRun, CharmError> {
    reconcile_with(ctx, rt, &[])
}

fn reconcile_with(
    ctx: &Context<'_>,
    rt: &Runtime,
    notes: &[Status],
) -> Result<ReconcileRun, CharmError> {
    let run = runners::reconcile(rt, notes, &no_progress)?;
    show(ctx, rt, &run)?;
    Ok(run)
}

fn flush_then_reconcile(
    ctx: &Context<'_>,
    rt: &Runtime,
    mode: FlushMode,
) -> Result<(FlushRun, ReconcileRun), CharmError> {
    let scope = runners::own_scope(rt);
    let (flushed, run) = runners::flush_then_reconcile(rt, mode, &scope, rt, &[], &no_progress)?;
    show(ctx, rt, &run)?;
    Ok((flushed, run))
}

/// The runner part of a periodic converge after a binary check found `binary`.
fn reconcile_after_binary_check(
    ctx: &Context<'_>,
    rt: &Runtime,
    binary: BinaryCheck,
) -> Result<ReconcileRun, CharmError> {
    let round = Round {
        scope: true,
        scope_flush: crate::charm::decide::plan_change(&UnitState::load(ctx.tools)?, &rt.config)
            .flush_for,
        binary_changed_flush: binary.changed.then_some(FlushMode::FlushIdle),
        notes: binary.problem.into_iter().collect(),
        ..Round::default()
    };
    let outcome = converge_runners(ctx, &WorldHost::new(), rt, round)?;
    let run = *outcome.round.clone().expect("a round ran");
    report::report(ctx, &crate::charm::Intent::ReportOnly, outcome)?;
    Ok(run)
}

#[test]
fn reconcile_sets_remembers_and_measures() {
    let unit = Unit::new();
    let run = unit.with(2, reconcile).unwrap();
    assert_eq!(run.delta(), 2);
    assert!(
        matches!(&run.status, Status::Active(m) if m == "0/2 runners: 0 idle, 0 busy, 2 creating")
    );
    assert_eq!(unit.tools.statuses(), vec![run.status.clone()]);
    assert_eq!(
        unit.tools.lock().unit_state.get(LAST_STATUS_KEY),
        Some(&crate::juju::state::encode_status(&run.status))
    );
    let metrics = std::fs::read_to_string(HostPaths::new(unit.root.path()).metrics_log()).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    // Creations run in parallel: their lines interleave; the round's line comes last.
    assert_eq!(events.pop(), Some("reconciliation"));
    events.sort();
    assert_eq!(
        events,
        [
            "runner_creation_phases",
            "runner_creation_phases",
            "runner_installed",
            "runner_installed"
        ]
    );
    // The exporter's state file followed the round.
    let exported =
        crate::observability::state::read(&HostPaths::new(unit.root.path()).exporter_state())
            .unwrap()
            .unwrap();
    assert_eq!(exported.creations_succeeded, 2);
    assert_eq!(exported.census.creating, 2);
    let line = &lines[4];
    assert_eq!(line["event"], "reconciliation");
    assert_eq!(line["flavor"], "github-runner");
    assert_eq!(line["crashed_runners"], 0);
    // Steady state: the same status is not written to unit state again.
    unit.world.bring_online();
    unit.tools.lock().calls.clear();
    let again = unit.with(2, reconcile).unwrap();
    assert_eq!(again.delta(), 0);
    let calls = unit.tools.lock().calls.clone();
    assert!(
        calls.contains(&"state-set".to_string()),
        "status changed: {calls:?}"
    );
    unit.tools.lock().calls.clear();
    unit.with(2, reconcile).unwrap();
    assert_eq!(unit.tools.lock().calls, ["status-set", "state-get"]);
}

#[test]
fn steady_state_costs_one_listing_and_one_probe_per_idle_runner() {
    let unit = Unit::new();
    unit.with(3, reconcile).unwrap();
    unit.world.bring_online();
    unit.world.lock().github_calls.clear();
    unit.world.lock().execs = 0;
    unit.with(3, reconcile).unwrap();
    assert_eq!(unit.world.lock().github_calls, vec!["list ghp_secret"]);
    assert_eq!(unit.world.lock().execs, 3);
}

#[test]
fn an_old_resource_profile_goes_once_unused_and_only_in_a_round_that_removed_runners() {
    let unit = Unit::new();
    unit.with(1, reconcile).unwrap();
    unit.world.bring_online();
    let old = "cpu-8-mem-64GiB-disk-100GiB";
    unit.world.lock().profiles.insert(
        old.into(),
        crate::lxd::ProfileSpec {
            name: old.into(),
            ..Default::default()
        },
    );
    // Steady round: nothing removed, the profile is not even looked at.
    unit.with(1, reconcile).unwrap();
    assert!(unit.world.lock().profiles.contains_key(old));
    // Scale to 0: a runner is removed, and the unused old profile with it; the current
    // one and the runner profile stay.
    unit.with(0, reconcile).unwrap();
    let profiles: Vec<String> = unit.world.lock().profiles.keys().cloned().collect();
    assert!(!profiles.contains(&old.to_string()), "{profiles:?}");
    assert!(profiles.contains(&"ghr-runner".to_string()), "{profiles:?}");
    assert_eq!(profiles.len(), 2, "{profiles:?}");
}

#[test]
fn a_busy_runner_costs_one_exec_once_and_its_job_start_then_stop_are_issued() {
    let unit = Unit::new();
    unit.with(2, reconcile).unwrap();
    unit.world.bring_online();
    unit.with(2, reconcile).unwrap();
    unit.world.lock().pre_job = Some(
        r#"{"workflow": "CI", "repository": "o/r", "event": "push", "timestamp": 1700000000}"#
            .into(),
    );
    let busy = {
        let mut world = unit.world.lock();
        let (runner, _) = world.runners.values_mut().next().unwrap();
        runner.busy = true;
        runner.name.clone()
    };
    let execs = |f: &dyn Fn()| {
        let before = unit.world.lock().execs;
        f();
        unit.world.lock().execs - before
    };
    // One probe of the idle runner, one read of the newly busy one; then only the probe.
    assert_eq!(execs(&|| drop(unit.with(2, reconcile).unwrap())), 2);
    assert_eq!(execs(&|| drop(unit.with(2, reconcile).unwrap())), 1);
    // The job ends: the ephemeral runner deregisters itself.
    unit.world.lock().runners.retain(|_, (r, _)| r.name != busy);
    unit.world.clock.advance(Duration::from_secs(90));
    unit.with(2, reconcile).unwrap();

    let metrics = std::fs::read_to_string(HostPaths::new(unit.root.path()).metrics_log()).unwrap();
    let jobs: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["event"] == "runner_start" || l["event"] == "runner_stop")
        .collect();
    assert_eq!(jobs.len(), 2, "{metrics}");
    assert_eq!(jobs[0]["event"], "runner_start");
    assert_eq!(jobs[0]["workflow"], "CI");
    assert_eq!(jobs[1]["event"], "runner_stop");
    assert_eq!(jobs[1]["status"], "normal");
    assert_eq!(jobs[1]["repo"], "o/r");
}

#[test]
fn a_held_lock_is_waited_for_boundedly_then_fails_the_hook() {
    let unit = Unit::new();
    let paths = HostPaths::new(unit.root.path());
    let clock = crate::clock::SystemClock;
    let held = UnitLock::acquire(&paths.lock_file(), "test", &clock, LockWait::default()).unwrap();
    let err = unit
        .with(1, |ctx, rt| {
            let mut rt = rt.with_github(rt.config.clone(), rt.github.clone());
            rt.lock_wait = LockWait {
                max: Duration::from_secs(30),
                poll: Duration::from_secs(10),
            };
            reconcile(ctx, &rt)
        })
        .unwrap_err();
    assert!(
        matches!(err, CharmError::Lock(LockError::HeldFor { .. })),
        "{err}"
    );
    assert!(
        err.to_string().contains("gave up after waiting 30 s"),
        "{err}"
    );
    assert!(unit.world.instance_names().is_empty());
    drop(held);
    assert!(unit.with(1, reconcile).is_ok());
}

#[test]
fn flush_then_reconcile_replaces_idle_runners() {
    let unit = Unit::new();
    unit.with(2, reconcile).unwrap();
    unit.world.bring_online();
    let before = unit.world.instance_names();
    let (flushed, run) = unit
        .with(2, |ctx, rt| {
            flush_then_reconcile(ctx, rt, FlushMode::FlushIdle)
        })
        .unwrap();
    assert_eq!(flushed.result.unwrap().report.removed.len(), 2);
    assert_eq!(run.result.unwrap().report.created.len(), 2);
    let after = unit.world.instance_names();
    assert!(after.iter().all(|n| !before.contains(n)));
}

#[test]
fn a_flush_that_cannot_list_lxd_is_reported_and_the_reconcile_says_why() {
    let unit = Unit::new();
    unit.world.lock().lxd_down = true;
    let (flushed, run) = unit
        .with(1, |ctx, rt| {
            flush_then_reconcile(ctx, rt, FlushMode::FlushBusy)
        })
        .unwrap();
    assert!(matches!(flushed.result, Err(FlushError::Lxd(_))));
    assert!(
        matches!(&run.status, Status::Waiting(m) if m.contains("LXD")),
        "{:?}",
        run.status
    );
}

#[test]
fn notes_join_the_status_by_precedence() {
    let unit = Unit::new();
    let notes = vec![Status::Maintenance(
        "Failed to update runner binary: 502".into(),
    )];
    let run = unit
        .with(0, |ctx, rt| reconcile_with(ctx, rt, &notes))
        .unwrap();
    assert_eq!(
        run.status,
        Status::Maintenance("Failed to update runner binary: 502".into())
    );
}

#[test]
fn periodic_binary_check_asks_github_once_an_hour() {
    let unit = Unit::new();
    unit.tools.lock().unit_state.insert(
        crate::github::download::STATE_URL_KEY.into(),
        crate::charm::fake_world::RUNNER_URL.into(),
    );
    let downloads = || {
        unit.world
            .lock()
            .github_calls
            .iter()
            .filter(|c| c.starts_with("downloads"))
            .count()
    };
    let check = unit
        .with(1, |ctx, rt| {
            periodic_binary_check(ctx, rt, &UnitState::load(ctx.tools).unwrap())
        })
        .unwrap();
    assert_eq!(check, BinaryCheck::default());
    assert_eq!(downloads(), 1);
    unit.with(1, |ctx, rt| {
        periodic_binary_check(ctx, rt, &UnitState::load(ctx.tools).unwrap())
    })
    .unwrap();
    assert_eq!(downloads(), 1, "checked less than an hour ago");
    unit.world.clock.advance(BINARY_CHECK_INTERVAL);
    unit.with(1, |ctx, rt| {
        periodic_binary_check(ctx, rt, &UnitState::load(ctx.tools).unwrap())
    })
    .unwrap();
    assert_eq!(downloads(), 2);
}

#[test]
fn a_changed_binary_flushes_idle_runners_and_a_failed_check_shows() {
    let unit = Unit::new();
    unit.with(2, reconcile).unwrap();
    unit.world.bring_online();
    let before = unit.world.instance_names();
    let changed = BinaryCheck {
        changed: true,
        problem: None,
    };
    let run = unit
        .with(2, |ctx, rt| reconcile_after_binary_check(ctx, rt, changed))
        .unwrap();
    let after = unit.world.instance_names();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|n| !before.contains(n)),
        "{before:?} {after:?}"
    );
    assert_eq!(run.result.unwrap().report.created.len(), 2);

    unit.world.bring_online();
    let failed = BinaryCheck {
        changed: false,
        problem: Some(Status::Maintenance(
            "Failed to update runner binary: 502".into(),
        )),
    };
    let run = unit
        .with(2, |ctx, rt| reconcile_after_binary_check(ctx, rt, failed))
        .unwrap();
    assert_eq!(unit.world.instance_names(), after, "nothing flushed");
    assert!(matches!(&run.status, Status::Maintenance(m) if m.contains("runner binary")));
}
