//! The charm's entry points to the runner manager, used by hooks and actions:
//!
//! - [`prepare`]: configuration, guards and the [`Runtime`] (or the Blocked/Waiting status
//!   that explains why not);
//! - [`reconcile`]: unit lock -> one reconcile round -> `reconciliation` metric -> status;
//! - [`flush`]: unit lock -> flush in a mode;
//! - [`flush_then_reconcile`]: both under one lock (start, flush-runners, config changes);
//! - [`handle`]: the `reconcile-runners` event the timer dispatches (runner binary update
//!   check, flushing idle runners when it changed, then a full reconcile).
//!
//! Every outcome reaches the operator through `manager::status` and [`status`].

use std::time::Duration;

use super::config_changed;
use super::fleet::{self, CharmRunnerOps};
use super::runtime::{Runtime, RuntimeError};
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
    let now = deploy_settings(config);
    at_deploy
        .and_then(|d| guards::check_immutable(d, &now).err())
        .map(|e| e.to_string())
}

/// runner-storage and base-image of `config`.
pub fn deploy_settings(config: &CharmConfig) -> DeploySettings {
    DeploySettings {
        runner_storage: config.runner_storage,
        base_image: config.base_image,
    }
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
    if let Ok(outcome) = &result {
        issue_metric(rt, outcome);
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

/// The runner binary update check. The download itself belongs to host setup
/// (`charm::setup`); until that lands this checks nothing.
pub fn check_runner_binary(_ctx: &Context<'_>, _rt: &Runtime) -> BinaryCheck {
    BinaryCheck::default()
}

/// The `reconcile-runners` event: the runner binary update check (idle runners are flushed
/// when it changed, so new runners use it), then a full reconcile.
pub fn handle(ctx: &Context<'_>) -> Result<(), CharmError> {
    let Some(rt) = prepare(ctx)? else {
        return Ok(());
    };
    run_periodic(ctx, &rt).map(drop)
}

/// Binary check, flush idle if it changed, reconcile. What the event and the
/// reconcile-runners action share.
pub fn run_periodic(ctx: &Context<'_>, rt: &Runtime) -> Result<ReconcileRun, CharmError> {
    run_periodic_with(ctx, rt, &no_progress)
}

pub fn run_periodic_with(
    ctx: &Context<'_>,
    rt: &Runtime,
    progress: ProgressSink<'_>,
) -> Result<ReconcileRun, CharmError> {
    let binary = check_runner_binary(ctx, rt);
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
        // Also completes a config change whose flush failed earlier.
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
