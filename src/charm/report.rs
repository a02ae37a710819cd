//! Stage 4, report: what the operator reads once the work is done: the unit's status (kept
//! in unit state when update-status must show it again), the application version, the
//! round's `reconciliation` metric, and an action's results or failure.

use super::act::actions::ActionError;
use super::act::{Outcome, RoundMetric, Shown};
use super::context::{Context, CHARM_VERSION};
use super::error::CharmError;
use super::intent::Intent;
use crate::host::metrics::MetricsLog;
use crate::juju::state::UnitState;
use crate::juju::Status;

/// Stage 4: show `outcome`. `Err` only when a hook tool fails (action-fail included).
pub fn report(ctx: &Context<'_>, intent: &Intent, outcome: Outcome) -> Result<(), CharmError> {
    if let Intent::Converge(c) = intent {
        if c.set_version {
            ctx.tools.application_version_set(CHARM_VERSION)?;
        }
    }
    match &outcome.shown {
        Shown::Unchanged => {}
        Shown::Set(status) => ctx.tools.status_set(status)?,
        Shown::Remember(status) => set_and_remember(ctx, status)?,
    }
    if let Some(metric) = &outcome.metric {
        issue_metric(metric);
    }
    match outcome.action {
        Some(result) => finish_action(ctx, result),
        None => Ok(()),
    }
}

/// Set `status` and remember it in unit state (a state-set only when it changed), so hooks
/// that must not call GitHub can show it again.
pub fn set_and_remember(ctx: &Context<'_>, status: &Status) -> Result<(), CharmError> {
    ctx.tools.status_set(status)?;
    let before = UnitState::load(ctx.tools)?;
    let mut after = before.clone();
    after.last_status = Some(status.clone());
    after.save(&before, ctx.tools)?;
    Ok(())
}

fn issue_metric(metric: &RoundMetric) {
    if let Err(e) = MetricsLog::new(&metric.paths).issue(&metric.event, &*metric.clock) {
        // Metrics are for dashboards; a full disk must not stop the hook.
        tracing::warn!("{e}");
    }
}

/// action-set the results, or action-fail with the error. Only a failing action-fail
/// fails the hook.
pub fn finish_action(
    ctx: &Context<'_>,
    result: Result<super::act::actions::ActionResults, ActionError>,
) -> Result<(), CharmError> {
    let error = match result {
        Ok(results) => match ctx.tools.action_set(&results) {
            Ok(()) => return Ok(()),
            Err(e) => ActionError::HookTool(e),
        },
        Err(e) => e,
    };
    ctx.tools.action_fail(&error.to_string())?;
    Ok(())
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
