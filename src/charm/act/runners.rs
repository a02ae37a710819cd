//! The runner work under the unit lock: flush in a mode, one reconcile round, or both under
//! one lock; the runner metrics of each; and the scope change's old-credentials flush with
//! the record of what was acted on.

use super::super::context::Context;
use super::super::credentials::{self, PreviousCredentials};
use super::super::decide::status::{shown_after_round, Readiness};
use super::super::decide::{reconciliation_event, SCOPE_FLUSH_MODE};
use super::super::error::CharmError;
use super::super::fleet::{self, CharmRunnerOps};
use super::super::runner_metrics;
use super::super::runtime::Runtime;
use super::super::setup;
use crate::host::lock::UnitLock;
use crate::host::metrics::MetricEvent;
use crate::juju::state::{ActedScope, UnitState};
use crate::juju::Status;
use crate::manager::executor::{no_progress, Progress};
use crate::manager::flush::{
    self as manager_flush, FlushError, FlushMode, FlushOutcome, FlushScope,
};
use crate::manager::reconcile::{
    self as manager_reconcile, ReconcileError, ReconcileOutcome, ReconcileSettings,
};
use crate::messages;

/// Where progress goes (action-log in actions, nowhere in hooks).
pub type ProgressSink<'p> = &'p (dyn Fn(&Progress) + Sync);

/// What a reconcile did, and the status it leaves.
#[derive(Debug, Clone)]
pub struct ReconcileRun {
    pub result: Result<ReconcileOutcome, ReconcileError>,
    /// The status to show: the round's, or a worse note that also holds.
    pub status: Status,
    /// The `reconciliation` metric of a round that ran.
    pub metric: Option<MetricEvent>,
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

pub(super) fn acquire(rt: &Runtime, purpose: &str) -> Result<(UnitLock, u64), CharmError> {
    let started = rt.clock.now_epoch();
    let lock = UnitLock::acquire(&rt.paths.lock_file(), purpose, &*rt.clock, rt.lock_wait)?;
    let waited = rt.clock.now_epoch().saturating_sub(started);
    if waited > 0 {
        tracing::info!("waited {waited} s for the unit lock ({purpose})");
    }
    Ok((lock, waited))
}

/// Lock, one reconcile round. A round that could not run (LXD or GitHub unavailable) is
/// not an error: its status says what is wrong. `Err` only for the lock.
pub fn reconcile(
    rt: &Runtime,
    notes: &[Status],
    progress: ProgressSink<'_>,
) -> Result<ReconcileRun, CharmError> {
    let (lock, waited) = acquire(rt, "reconcile")?;
    let mut run = reconcile_locked(rt, notes, progress);
    drop(lock);
    run.lock_waited_secs = waited;
    Ok(run)
}

/// The scope `rt`'s credentials serve, as a flush with them acts in it.
pub fn own_scope(rt: &Runtime) -> FlushScope {
    FlushScope {
        fingerprint: fleet::scope_fingerprint(&rt.config),
        github_sees_runners: true,
    }
}

/// Lock, then flush in `mode`.
pub fn flush(rt: &Runtime, mode: FlushMode) -> Result<FlushRun, CharmError> {
    let (lock, waited) = acquire(rt, "flush")?;
    let mut run = flush_locked(rt, mode, &own_scope(rt), &no_progress);
    drop(lock);
    run.lock_waited_secs = waited;
    Ok(run)
}

/// Under one lock: flush in `mode` with `flush_rt` (the previous credentials after a scope
/// change; else the same runtime as `rt`) in `scope`, then reconcile with `rt`. A failed
/// flush joins the notes.
pub fn flush_then_reconcile(
    flush_rt: &Runtime,
    mode: FlushMode,
    scope: &FlushScope,
    rt: &Runtime,
    notes: &[Status],
    progress: ProgressSink<'_>,
) -> Result<(FlushRun, ReconcileRun), CharmError> {
    let (lock, waited) = acquire(rt, "flush-and-reconcile")?;
    let mut flushed = flush_locked(flush_rt, mode, scope, progress);
    flushed.lock_waited_secs = waited;
    let mut notes = notes.to_vec();
    if let Err(e) = &flushed.result {
        notes.push(Status::Maintenance(messages::flush_failed(mode, e)));
    }
    let mut reconciled = reconcile_locked(rt, &notes, progress);
    drop(lock);
    reconciled.lock_waited_secs = waited;
    Ok((flushed, reconciled))
}

/// The old fleet flushed with the credentials it was made with (the new ones when there
/// is no usable record of them: then GitHub's view does not cover the old runners, and the
/// flush goes by LXD and the job probe), then a reconcile with the new configuration. Busy
/// old runners are marked with the old scope (from unit state) and kept until their job
/// ends.
pub fn scope_flush_then_reconcile(
    ctx: &Context<'_>,
    rt: &Runtime,
    changed: &[&str],
    notes: &[Status],
    progress: ProgressSink<'_>,
) -> Result<(FlushRun, ReconcileRun), CharmError> {
    let (old_rt, scope) = announce_old_scope(ctx, rt, changed)?;
    let flush_rt = old_rt.as_ref().unwrap_or(rt);
    flush_then_reconcile(flush_rt, SCOPE_FLUSH_MODE, &scope, rt, notes, progress)
}

/// Reactive mode's scope change: the old fleet flushed with the credentials it was made
/// with (the new ones when there is no usable record of them), no pull round after it.
pub fn flush_old_scope(
    ctx: &Context<'_>,
    rt: &Runtime,
    changed: &[&str],
) -> Result<FlushRun, CharmError> {
    let (old_rt, scope) = announce_old_scope(ctx, rt, changed)?;
    let flush_rt = old_rt.as_ref().unwrap_or(rt);
    let (lock, waited) = acquire(rt, "flush")?;
    let mut run = flush_locked(flush_rt, SCOPE_FLUSH_MODE, &scope, &no_progress);
    drop(lock);
    run.lock_waited_secs = waited;
    Ok(run)
}

/// The status naming the changed options, the runtime of the old credentials, and the old
/// scope busy runners are marked with.
fn announce_old_scope(
    ctx: &Context<'_>,
    rt: &Runtime,
    changed: &[&str],
) -> Result<(Option<Runtime>, FlushScope), CharmError> {
    let reason = messages::config_change_flush(changed);
    tracing::info!("{reason}");
    ctx.tools.status_set(&Status::Maintenance(reason))?;
    let acted = UnitState::load(ctx.tools)?.acted_scope();
    let old_rt = previous_runtime(rt, acted.token_fingerprint.as_deref());
    let scope = FlushScope {
        fingerprint: acted.fingerprint(),
        github_sees_runners: old_rt.is_some(),
    };
    Ok((old_rt, scope))
}

fn flush_locked(
    rt: &Runtime,
    mode: FlushMode,
    scope: &FlushScope,
    progress: ProgressSink<'_>,
) -> FlushRun {
    let ops = CharmRunnerOps::new(rt);
    let result = manager_flush::flush(&ops, &*rt.clock, mode, scope, rt.concurrency, progress);
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
            awaiting_job = outcome.awaiting_job.len(),
            waited_secs = outcome.waited.as_secs(),
            "flush done"
        ),
        Err(e) => tracing::warn!("{}", messages::flush_failed(mode, e)),
    }
    FlushRun {
        result,
        lock_waited_secs: 0,
    }
}

fn reconcile_locked(rt: &Runtime, notes: &[Status], progress: ProgressSink<'_>) -> ReconcileRun {
    let ops = CharmRunnerOps::new(rt);
    let settings = ReconcileSettings {
        desired: rt.config.virtual_machines,
        binary: fleet::host_binary_state(rt),
        grace_secs: rt.grace().as_secs(),
        concurrency: rt.concurrency,
        limits: crate::manager::admission::RoundLimits {
            max_creations: rt.config.creations_per_round,
            ..Default::default()
        },
        runner_size: Some(
            crate::runner::resources::Resources::from_config(&rt.config).admission_size(),
        ),
        scope: fleet::scope_fingerprint(&rt.config),
    };
    let result = manager_reconcile::reconcile(&ops, &*rt.clock, &settings, progress);
    crate::observability::record_round(
        &rt.paths,
        &*rt.clock,
        &rt.identity.app,
        rt.config.reconcile_interval_minutes,
        &result,
    );
    let mut metric = None;
    if let Ok(outcome) = &result {
        runner_metrics::issue_for_round(
            &rt.paths,
            &ops,
            &*rt.clock,
            &rt.identity.app,
            &outcome.plan,
        );
        metric = Some(reconciliation_event(&rt.identity.app, outcome));
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
    ReconcileRun {
        status: shown_after_round(&result, &readiness, notes),
        result,
        metric,
        lock_waited_secs: 0,
    }
}

/// A runtime with the credentials the old runners were made with; None when there is no
/// record of them (then the flush uses the new ones: instances are found by their owner
/// key whatever the credentials, and a FORCE flush goes on when GitHub refuses).
/// `acted_fingerprint`: the token the unit last acted with (unit state), so an older charm's
/// machine-wide file is adopted only by the unit whose token it holds.
fn previous_runtime(rt: &Runtime, acted_fingerprint: Option<&str>) -> Option<Runtime> {
    let previous = match credentials::load_adopting_legacy(&rt.paths, acted_fingerprint) {
        Ok(Some(previous)) => previous,
        Ok(None) => {
            tracing::warn!("no record of the previous credentials: flushing with the new ones");
            return None;
        }
        Err(e) => {
            tracing::warn!("{e}; flushing with the new credentials");
            return None;
        }
    };
    match rt.with_credentials(previous.apply_to(&rt.config)) {
        Ok(old) => Some(old),
        Err(e) => {
            tracing::warn!(
                "the previous credentials are not usable ({e}); flushing with the new ones"
            );
            None
        }
    }
}

/// Remember the configuration acted on: unit state (fingerprint only) and the root-only
/// credentials file.
pub fn record_acted(ctx: &Context<'_>, rt: &Runtime) -> Result<(), CharmError> {
    let config = &rt.config;
    let before = UnitState::load(ctx.tools)?;
    let mut after = before.clone();
    after.set_acted_scope(ActedScope::of(config));
    after
        .deploy_settings
        .get_or_insert_with(|| setup::deploy_settings(config));
    if let Some(previous) = PreviousCredentials::of(config) {
        if let Err(e) = credentials::save(&rt.paths, &previous) {
            // Without the file a later scope change flushes with the new credential (see
            // previous_runtime); the unit state still records the change.
            tracing::warn!("{e}");
        }
    }
    after.save(&before, ctx.tools)?;
    Ok(())
}
