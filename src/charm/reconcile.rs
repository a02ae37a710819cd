//! The charm's entry points to the runner manager, used by hooks and actions:
//!
//! - [`prepare`]: configuration, guards and the [`Runtime`] (or the Blocked/Waiting status
//!   that explains why not);
//! - [`reconcile`]: unit lock -> one reconcile round -> `reconciliation` metric -> status;
//! - [`flush`]: unit lock -> flush in a mode;
//! - [`flush_then_reconcile`]: both under one lock (start, flush-runners, config changes);
//! - [`handle`]: the `reconcile-runners` event the timer dispatches (host setup when its
//!   inputs changed, the runner binary check at most hourly, flushing idle runners when it
//!   changed, then a full reconcile through `config_changed::converge`).
//!
//! Every outcome reaches the operator through `manager::status` and [`status`].

use std::time::Duration;

use super::config_changed;
use super::fleet::{self, CharmRunnerOps};
use super::runner_metrics;
use super::runtime::{Runtime, RuntimeError};
use super::setup;
use super::status::{self, Readiness};
use super::{CharmError, Context};
use crate::config::CharmConfig;
use crate::host::lock::UnitLock;
use crate::host::metrics::{MetricEvent, MetricsLog, Reconciliation};
use crate::juju::state::UnitState;
use crate::juju::Status;
use crate::lxd::LxdError;
use crate::manager::executor::{no_progress, Progress};
use crate::manager::flush::{self as manager_flush, FlushError, FlushMode, FlushOutcome};
use crate::manager::planner::RemovalReason;
use crate::manager::reconcile::{
    self as manager_reconcile, ReconcileError, ReconcileOutcome, ReconcileSettings,
};
use crate::manager::status::Census;
use crate::runner::guards::{self, DeploySettings};

/// Where progress goes (action-log in actions, nowhere in hooks).
pub type ProgressSink<'p> = &'p (dyn Fn(&Progress) + Sync);

/// How a reconcile runs, beyond the runtime.
#[derive(Clone)]
pub struct Options<'p> {
    pub progress: ProgressSink<'p>,
    /// Statuses that also hold (a failed binary update, ...); the worst one is shown.
    pub notes: Vec<Status>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            progress: &no_progress,
            notes: Vec::new(),
        }
    }
}

/// What a reconcile did, and the status it set.
#[derive(Debug, Clone)]
pub struct ReconcileRun {
    pub result: Result<ReconcileOutcome, ReconcileError>,
    pub status: Status,
    /// Seconds spent waiting for the unit lock.
    pub lock_waited_secs: u64,
}

impl ReconcileRun {
    /// `delta.virtual-machines`: desired minus the capacity found (0 when it did not run).
    pub fn delta(&self) -> i64 {
        self.result.as_ref().map(|o| o.plan.delta()).unwrap_or(0)
    }
}

/// What a flush did.
#[derive(Debug, Clone)]
pub struct FlushRun {
    pub result: Result<FlushOutcome, FlushError>,
    pub lock_waited_secs: u64,
}

/// The valid configuration and a runtime over it, or None after setting the status that
/// says why not: Blocked for invalid configuration, an lxd-profile.yaml outside test mode,
/// a changed runner-storage/base-image, or an unusable GitHub URL; Waiting when LXD is not
/// there yet.
pub fn prepare(ctx: &Context<'_>) -> Result<Option<Runtime>, CharmError> {
    let Some(config) = status::config_or_block(ctx)? else {
        return Ok(None);
    };
    let state = UnitState::load(ctx.tools)?;
    if let Some(blocked) = guard_status(ctx, &config, &state) {
        status::set_and_remember(ctx, &blocked)?;
        return Ok(None);
    }
    match Runtime::new(ctx, config) {
        Ok(rt) => Ok(Some(rt)),
        Err(err) => {
            status::set_and_remember(ctx, &runtime_error_status(&err))?;
            Ok(None)
        }
    }
}

/// Blocked when the charm must not act with `config`: an lxd-profile.yaml outside test mode,
/// or runner-storage/base-image changed since deployment.
pub fn guard_status(ctx: &Context<'_>, config: &CharmConfig, state: &UnitState) -> Option<Status> {
    let has_profile = guards::charm_dir_has_lxd_profile(&ctx.hook.charm_dir);
    guard_problem(has_profile, config, state.deploy_settings.as_ref()).map(Status::Blocked)
}

/// The guards as a pure decision. `at_deploy` None: nothing recorded yet, nothing to compare.
pub fn guard_problem(
    has_lxd_profile: bool,
    config: &CharmConfig,
    at_deploy: Option<&DeploySettings>,
) -> Option<String> {
    if let Err(e) = guards::check_lxd_profile(has_lxd_profile, config.test_mode_insecure) {
        return Some(e.to_string());
    }
    let now = setup::deploy_settings(config);
    at_deploy
        .and_then(|d| guards::check_immutable(d, &now).err())
        .map(|e| e.to_string())
}

/// What the unit shows when the runtime cannot be built.
pub fn runtime_error_status(err: &RuntimeError) -> Status {
    match err {
        RuntimeError::Lxd(LxdError::LxcMissing) => {
            Status::Waiting(format!("waiting for LXD to be installed: {err}"))
        }
        RuntimeError::Lxd(_) => Status::Waiting(format!("waiting for LXD: {err}")),
        RuntimeError::GitHub(_) => Status::Blocked(err.to_string()),
    }
}

fn acquire(rt: &Runtime, purpose: &str) -> Result<(UnitLock, u64), CharmError> {
    let started = rt.clock.now_epoch();
    let lock = UnitLock::acquire(&rt.paths.lock_file(), purpose, &*rt.clock, rt.lock_wait)?;
    let waited = rt.clock.now_epoch().saturating_sub(started);
    if waited > 0 {
        tracing::info!("waited {waited} s for the unit lock ({purpose})");
    }
    Ok((lock, waited))
}

/// Lock, one reconcile round, the `reconciliation` metric, then the status (set and
/// remembered). A round that could not run (LXD or GitHub unavailable) is not an error of
/// the hook: its status says what is wrong. `Err` only for a hook tool failure or the lock.
pub fn reconcile(ctx: &Context<'_>, rt: &Runtime) -> Result<ReconcileRun, CharmError> {
    reconcile_with(ctx, rt, &Options::default())
}

/// [`reconcile`] with progress and extra statuses.
pub fn reconcile_with(
    ctx: &Context<'_>,
    rt: &Runtime,
    options: &Options<'_>,
) -> Result<ReconcileRun, CharmError> {
    let (lock, waited) = acquire(rt, "reconcile")?;
    let mut run = reconcile_locked(ctx, rt, options)?;
    drop(lock);
    run.lock_waited_secs = waited;
    Ok(run)
}

/// Lock, then flush in `mode`. Sets no status: the caller reconciles next, or is removing
/// the unit.
pub fn flush(ctx: &Context<'_>, rt: &Runtime, mode: FlushMode) -> Result<FlushRun, CharmError> {
    let (lock, waited) = acquire(rt, "flush")?;
    let mut run = flush_locked(ctx, rt, mode, &no_progress);
    drop(lock);
    run.lock_waited_secs = waited;
    Ok(run)
}

/// Under one lock: flush in `mode` with `flush_rt` (the previous credentials after a config
/// change; else the same runtime as `rt`), then reconcile with `rt`.
pub fn flush_then_reconcile(
    ctx: &Context<'_>,
    flush_rt: &Runtime,
    mode: FlushMode,
    rt: &Runtime,
    options: &Options<'_>,
) -> Result<(FlushRun, ReconcileRun), CharmError> {
    let (lock, waited) = acquire(rt, "flush-and-reconcile")?;
    let mut flushed = flush_locked(ctx, flush_rt, mode, options.progress);
    flushed.lock_waited_secs = waited;
    let mut options = options.clone();
    if let Err(e) = &flushed.result {
        options
            .notes
            .push(Status::Maintenance(format!("{mode} failed: {e}")));
    }
    let mut reconciled = reconcile_locked(ctx, rt, &options)?;
    drop(lock);
    reconciled.lock_waited_secs = waited;
    Ok((flushed, reconciled))
}

fn flush_locked(
    _ctx: &Context<'_>,
    rt: &Runtime,
    mode: FlushMode,
    progress: ProgressSink<'_>,
) -> FlushRun {
    let ops = CharmRunnerOps::new(rt);
    let result = manager_flush::flush(&ops, &*rt.clock, mode, rt.concurrency, progress);
    if let Ok(outcome) = &result {
        let removed: Vec<_> = outcome
            .report
            .removed
            .iter()
            .map(|r| (r.name.clone(), r.reason))
            .collect();
        runner_metrics::issue_for_flush(&rt.paths, &*rt.clock, &rt.identity.app, &removed);
    }
    match &result {
        Ok(outcome) => tracing::info!(
            %mode,
            removed = outcome.report.removed.len(),
            failed = outcome.report.failed.len(),
            waited_secs = outcome.waited.as_secs(),
            "flush done"
        ),
        Err(e) => tracing::warn!("{mode} failed: {e}"),
    }
    FlushRun {
        result,
        lock_waited_secs: 0,
    }
}

fn reconcile_locked(
    ctx: &Context<'_>,
    rt: &Runtime,
    options: &Options<'_>,
) -> Result<ReconcileRun, CharmError> {
    let ops = CharmRunnerOps::new(rt);
    let settings = ReconcileSettings {
        desired: rt.config.virtual_machines,
        binary: fleet::host_binary_state(rt),
        grace_secs: rt.grace().as_secs(),
        concurrency: rt.concurrency,
    };
    let result = manager_reconcile::reconcile(&ops, &*rt.clock, &settings, options.progress);
    crate::observability::record_round(
        &rt.paths,
        &*rt.clock,
        &rt.identity.app,
        rt.config.reconcile_interval_minutes,
        &result,
    );
    if let Ok(outcome) = &result {
        runner_metrics::issue_for_round(
            &rt.paths,
            &ops,
            &*rt.clock,
            &rt.identity.app,
            &outcome.plan,
        );
        issue_metric(rt, outcome);
        // Instances went away: a profile of an older vm-* setting may be unused now. Never
        // in a steady round, which costs no LXD call beyond the listing and health checks.
        if !outcome.plan.removals.is_empty() {
            let dropped = ops.prune_stale_profiles();
            if !dropped.is_empty() {
                tracing::info!(
                    "dropped unused old resource profiles: {}",
                    dropped.join(", ")
                );
            }
        }
    }
    let readiness = Readiness {
        image_missing: ops
            .image_missing()
            .then(|| rt.config.base_image.alias().to_string()),
    };
    let round = status::after_reconcile(&result, &readiness);
    let shown =
        status::worst(options.notes.iter().cloned().chain([round.clone()])).unwrap_or(round);
    status::set_and_remember(ctx, &shown)?;
    Ok(ReconcileRun {
        result,
        status: shown,
        lock_waited_secs: 0,
    })
}

/// Runners found dead: listener down, or the instance stopped or in error.
pub fn crashed_runners(outcome: &ReconcileOutcome) -> u32 {
    outcome
        .plan
        .removals
        .iter()
        .filter(|r| {
            matches!(
                r.reason,
                RemovalReason::ListenerDown
                    | RemovalReason::NeverStarted
                    | RemovalReason::InstanceError
                    | RemovalReason::InstanceStopped
            )
        })
        .count() as u32
}

/// The `reconciliation` metric of a round. Pure.
pub fn reconciliation_event(flavor: &str, outcome: &ReconcileOutcome) -> MetricEvent {
    MetricEvent::Reconciliation(Reconciliation {
        flavor: flavor.to_string(),
        crashed_runners: crashed_runners(outcome),
        idle_runners: Census::after(&outcome.plan, &outcome.report).idle,
        duration: outcome.duration_secs as f64,
    })
}

fn issue_metric(rt: &Runtime, outcome: &ReconcileOutcome) {
    let event = reconciliation_event(&rt.identity.app, outcome);
    if let Err(e) = MetricsLog::new(&rt.paths).issue(&event, &*rt.clock) {
        // Metrics are for dashboards; a full disk must not stop the reconcile.
        tracing::warn!("{e}");
    }
}

/// Whether the runner binary changed, and the status to add when the check failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinaryCheck {
    pub changed: bool,
    pub problem: Option<Status>,
}

/// The runner binary update check (`setup::update_runner_binary`: one GitHub call, a
/// download only when GitHub lists another tarball). A failed check is a status to show,
/// not a failed hook; only a hook tool failure is `Err`.
pub fn check_runner_binary(ctx: &Context<'_>, rt: &Runtime) -> Result<BinaryCheck, CharmError> {
    match setup::update_runner_binary(ctx, rt) {
        Ok(update) => Ok(BinaryCheck {
            changed: update.changed,
            problem: None,
        }),
        Err(err) => match err.status() {
            Some(problem) => {
                tracing::warn!("{err}");
                Ok(BinaryCheck {
                    changed: false,
                    problem: Some(problem),
                })
            }
            None => Err(err.into()),
        },
    }
}

/// How often the periodic event asks GitHub for the latest runner binary. GitHub releases
/// a few a month and accepts a release for weeks after the next one, so hourly keeps
/// runners current while most rounds cost a single GitHub call (the listing).
pub const BINARY_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// Whether the periodic event checks the runner binary this round: always when none is in
/// place, else once per [`BINARY_CHECK_INTERVAL`] (a clock moved backwards counts as due).
pub fn binary_check_due(last_checked: Option<u64>, now: u64, binary_present: bool) -> bool {
    match last_checked {
        _ if !binary_present => true,
        None => true,
        Some(at) => now < at || now - at >= BINARY_CHECK_INTERVAL.as_secs(),
    }
}

/// The `reconcile-runners` event: host setup when its inputs changed, the runner binary
/// update check when due (idle runners are flushed when it changed, so new runners use
/// it), then a full reconcile.
pub fn handle(ctx: &Context<'_>) -> Result<(), CharmError> {
    let Some(rt) = prepare(ctx)? else {
        return Ok(());
    };
    if !setup::ensure_host_for(ctx, &rt, setup::When::IfChanged)? {
        return Ok(());
    }
    let binary = periodic_binary_check(ctx, &rt)?;
    reconcile_after_binary_check(ctx, &rt, binary, &no_progress).map(drop)
}

/// [`check_runner_binary`] when [`binary_check_due`], remembering when it last succeeded.
pub fn periodic_binary_check(ctx: &Context<'_>, rt: &Runtime) -> Result<BinaryCheck, CharmError> {
    let before = UnitState::load(ctx.tools)?;
    let now = rt.clock.now_epoch();
    let present = fleet::host_binary_state(rt).ready;
    if !binary_check_due(before.binary_checked_at, now, present) {
        return Ok(BinaryCheck::default());
    }
    let check = check_runner_binary(ctx, rt)?;
    if check.problem.is_none() {
        // Reloaded: the check itself may have written the new tarball's url and checksum.
        let loaded = UnitState::load(ctx.tools)?;
        let mut after = loaded.clone();
        after.binary_checked_at = Some(now);
        after.save(&loaded, ctx.tools)?;
    }
    Ok(check)
}

/// The reconcile-runners action: the binary check (every time), flush idle runners if it
/// changed, reconcile.
pub fn run_periodic_with(
    ctx: &Context<'_>,
    rt: &Runtime,
    progress: ProgressSink<'_>,
) -> Result<ReconcileRun, CharmError> {
    let binary = check_runner_binary(ctx, rt)?;
    reconcile_after_binary_check(ctx, rt, binary, progress)
}

/// A changed binary flushes idle runners first (unless a config change flushes them all
/// anyway); a failed check joins the status. Also completes a config change whose flush
/// failed earlier.
pub fn reconcile_after_binary_check(
    ctx: &Context<'_>,
    rt: &Runtime,
    binary: BinaryCheck,
    progress: ProgressSink<'_>,
) -> Result<ReconcileRun, CharmError> {
    let state = UnitState::load(ctx.tools)?;
    let options = Options {
        progress,
        notes: binary.problem.into_iter().collect(),
    };
    if binary.changed && !config_changed::plan_change(&state, &rt.config).flushes() {
        tracing::info!("runner binary changed: flushing idle runners");
        let (_, run) = flush_then_reconcile(ctx, rt, FlushMode::FlushIdle, rt, &options)?;
        Ok(run)
    } else {
        config_changed::converge(ctx, rt, &state, &options)
    }
}

/// A bounded wait for the lock, in whole seconds, for messages.
pub fn lock_wait_note(waited_secs: u64) -> Option<String> {
    (waited_secs > 0).then(|| {
        format!(
            "waited {} for another reconcile or flush to finish",
            humanize(Duration::from_secs(waited_secs))
        )
    })
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charm::fake_world::{config, FakeWorld};
    use crate::host::lock::{LockError, LockWait};
    use crate::juju::memory::MemoryHookTools;
    use crate::juju::state::LAST_STATUS_KEY;
    use crate::manager::executor::Report;
    use crate::manager::planner::{Plan, Removal, RemovalTarget};
    use crate::paths::HostPaths;

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
        let metrics =
            std::fs::read_to_string(HostPaths::new(unit.root.path()).metrics_log()).unwrap();
        let lines: Vec<serde_json::Value> = metrics
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(
            events,
            [
                "runner_installed",
                "runner_creation_phases",
                "runner_installed",
                "runner_creation_phases",
                "reconciliation"
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
        assert!(profiles.contains(&"runner".to_string()), "{profiles:?}");
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

        let metrics =
            std::fs::read_to_string(HostPaths::new(unit.root.path()).metrics_log()).unwrap();
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
        let held =
            UnitLock::acquire(&paths.lock_file(), "test", &clock, LockWait::default()).unwrap();
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
                flush_then_reconcile(ctx, rt, FlushMode::FlushIdle, rt, &Options::default())
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
                flush_then_reconcile(ctx, rt, FlushMode::FlushBusy, rt, &Options::default())
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
        let options = Options {
            notes: vec![Status::Maintenance(
                "Failed to update runner binary: 502".into(),
            )],
            ..Options::default()
        };
        let run = unit
            .with(0, |ctx, rt| reconcile_with(ctx, rt, &options))
            .unwrap();
        assert_eq!(
            run.status,
            Status::Maintenance("Failed to update runner binary: 502".into())
        );
    }

    #[test]
    fn guards_table() {
        let base = config(&[]);
        let production = config(&[("test-mode", "".into())]);
        let deployed = setup::deploy_settings(&base);
        let noble = config(&[("base-image", "noble".into())]);
        let memory = config(&[("runner-storage", "memory".into())]);
        assert_eq!(guard_problem(false, &base, None), None);
        assert_eq!(guard_problem(false, &base, Some(&deployed)), None);
        assert_eq!(
            guard_problem(true, &base, Some(&deployed)),
            None,
            "test mode allows it"
        );
        assert!(guard_problem(true, &production, None)
            .unwrap()
            .contains("lxd-profile.yaml"));
        assert!(guard_problem(false, &noble, Some(&deployed))
            .unwrap()
            .starts_with("base-image config cannot be changed after deployment"));
        assert!(guard_problem(false, &memory, Some(&deployed))
            .unwrap()
            .starts_with("runner-storage config cannot be changed"));
        assert_eq!(
            guard_problem(false, &noble, None),
            None,
            "nothing recorded yet"
        );
    }

    #[test]
    fn runtime_errors_wait_for_lxd_or_block_on_github_settings() {
        assert!(matches!(
            runtime_error_status(&RuntimeError::Lxd(LxdError::LxcMissing)),
            Status::Waiting(m) if m.contains("installed")
        ));
        let bad_url = RuntimeError::GitHub(crate::github::ClientSetupError::InsecureUrl {
            url: "http://ghe.example".into(),
        });
        assert!(matches!(runtime_error_status(&bad_url), Status::Blocked(_)));
    }

    #[test]
    fn crashed_runners_count_dead_ones_only() {
        let removal = |reason| Removal {
            target: RemovalTarget {
                name: crate::identity::RunnerName("x".into()),
                has_instance: true,
                github_id: None,
            },
            reason,
            force: false,
        };
        let outcome = ReconcileOutcome {
            plan: Plan {
                removals: vec![
                    removal(RemovalReason::ListenerDown),
                    removal(RemovalReason::InstanceError),
                    removal(RemovalReason::InstanceStopped),
                    removal(RemovalReason::Surplus),
                    removal(RemovalReason::RegistrationGone),
                    removal(RemovalReason::NeverRegistered),
                ],
                ..Plan::empty(1)
            },
            report: Report::default(),
            health_checks: 0,
            started_epoch: 0,
            duration_secs: 4,
        };
        assert_eq!(crashed_runners(&outcome), 3);
        match reconciliation_event("app", &outcome) {
            MetricEvent::Reconciliation(r) => {
                assert_eq!(r.crashed_runners, 3);
                assert_eq!(r.duration, 4.0);
                assert_eq!(r.flavor, "app");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn binary_check_schedule() {
        let hour = BINARY_CHECK_INTERVAL.as_secs();
        let t = 1_700_000_000;
        assert!(binary_check_due(None, t, true), "never checked");
        assert!(binary_check_due(Some(t), t, false), "no binary in place");
        assert!(!binary_check_due(Some(t), t, true));
        assert!(!binary_check_due(Some(t), t + hour - 1, true));
        assert!(binary_check_due(Some(t), t + hour, true));
        assert!(binary_check_due(Some(t), t - 1, true), "clock moved back");
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
        let check = unit.with(1, periodic_binary_check).unwrap();
        assert_eq!(check, BinaryCheck::default());
        assert_eq!(downloads(), 1);
        unit.with(1, periodic_binary_check).unwrap();
        assert_eq!(downloads(), 1, "checked less than an hour ago");
        unit.world.clock.advance(BINARY_CHECK_INTERVAL);
        unit.with(1, periodic_binary_check).unwrap();
        assert_eq!(downloads(), 2);
    }

    #[test]
    fn lock_wait_is_reported_in_words() {
        assert_eq!(lock_wait_note(0), None);
        assert_eq!(
            lock_wait_note(75).unwrap(),
            "waited 1m15s for another reconcile or flush to finish"
        );
        assert_eq!(
            lock_wait_note(5).unwrap(),
            "waited 5s for another reconcile or flush to finish"
        );
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
            .with(2, |ctx, rt| {
                reconcile_after_binary_check(ctx, rt, changed, &no_progress)
            })
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
            .with(2, |ctx, rt| {
                reconcile_after_binary_check(ctx, rt, failed, &no_progress)
            })
            .unwrap();
        assert_eq!(unit.world.instance_names(), after, "nothing flushed");
        assert!(matches!(&run.status, Status::Maintenance(m) if m.contains("runner binary")));
    }
}
