//! What the actions add to a converge: progress on action-log, the fleet read back for the
//! results (the Python charm's keys, built by `manager::status`), and why an action failed.

use std::collections::BTreeMap;

use super::super::context::Context;
use super::super::error::CharmError;
use super::super::fleet::CharmRunnerOps;
use super::super::runtime::Runtime;
use super::runners::{FlushRun, ProgressSink, ReconcileRun};
use crate::juju::HookToolError;
use crate::manager::executor::Progress;
use crate::manager::flush::FlushError;
use crate::manager::ops::{OpError, RunnerOps};
use crate::manager::reconcile::ReconcileError;
use crate::manager::status::{check_runners_results, reconcile_results};
use crate::messages;

/// Why an action failed: its text goes to action-fail (exit 0), so the operator reads it
/// in `juju run` output.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// The unit cannot act (invalid configuration, a guard, LXD missing, an unusable
    /// GitHub URL, a failed binary update): the status says the same.
    #[error("{0}")]
    NotReady(String),
    #[error("{}", messages::observe_failed(.0))]
    Observe(OpError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Flush(#[from] FlushError),
    #[error("{}", messages::flush_incomplete(.0))]
    FlushIncomplete(String),
    #[error(transparent)]
    Charm(#[from] CharmError),
    #[error("{}", messages::unknown_action(.0))]
    Unknown(String),
    #[error(transparent)]
    HookTool(#[from] HookToolError),
}

/// Action results: dotted keys (`delta.virtual-machines`) to string values.
pub type ActionResults = BTreeMap<String, String>;

/// Runs `work` with a progress sink that forwards each finished operation to action-log as
/// it happens (the executor's worker threads call it); nowhere outside actions.
pub fn with_progress<R>(
    ctx: &Context<'_>,
    in_action: bool,
    work: impl FnOnce(ProgressSink<'_>) -> R,
) -> R {
    if !in_action {
        return work(&crate::manager::executor::no_progress);
    }
    let tools = ctx.tools;
    let log = move |p: &Progress| {
        // Progress is a courtesy: a failing action-log must not fail the work.
        if let Err(e) = tools.action_log(&p.to_string()) {
            tracing::debug!("action-log failed: {e}");
        }
    };
    work(&log)
}

pub fn log_line(ctx: &Context<'_>, line: &str) {
    if let Err(e) = ctx.tools.action_log(line) {
        tracing::debug!("action-log failed: {e}");
    }
}

/// check-runners: {online, offline, unknown, runners}.
pub fn check_runners(rt: &Runtime) -> Result<ActionResults, ActionError> {
    let ops = CharmRunnerOps::new(rt);
    let observation = ops.observe().map_err(ActionError::Observe)?;
    let github = observation.github.map_err(ActionError::Observe)?;
    Ok(check_runners_results(&github, &observation.instances))
}

/// flush-runners: the flush must have gone through; busy runners kept for their job and a
/// wait cut short are said.
pub fn flush_results(ctx: &Context<'_>, flushed: &FlushRun) -> Result<(), ActionError> {
    let flush = flushed
        .result
        .as_ref()
        .map_err(|e| ActionError::Flush(e.clone()))?;
    if !flush.awaiting_job.is_empty() {
        let names: Vec<String> = flush.awaiting_job.iter().map(|n| n.to_string()).collect();
        log_line(ctx, &messages::busy_runners_replaced_after_job(&names));
    }
    if flush.wait_exhausted {
        log_line(ctx, &messages::flush_wait_exhausted(flush.waited));
    }
    Ok(())
}

/// The results of a finished reconcile: delta plus a fresh check, or the round's error.
pub fn reconcile_action_results(
    ctx: &Context<'_>,
    rt: &Runtime,
    run: &ReconcileRun,
) -> Result<ActionResults, ActionError> {
    if let Some(note) = messages::lock_waited(run.lock_waited_secs) {
        log_line(ctx, &note);
    }
    let outcome = run
        .result
        .as_ref()
        .map_err(|e| ActionError::Reconcile(e.clone()))?;
    log_line(
        ctx,
        &messages::reconciled(
            outcome.report.created.len(),
            outcome.report.removed.len(),
            outcome.report.failed.len(),
        ),
    );
    let check = check_runners(rt)?;
    Ok(reconcile_results(outcome.plan.delta(), check))
}
