//! reconcile-runners: the periodic event the charm's timer dispatches through juju-exec.

use super::{status, CharmError, Context};

pub fn handle(ctx: &Context<'_>) -> Result<(), CharmError> {
    if status::refresh(ctx)?.is_some() {
        tracing::warn!("reconcile skipped: {}", status::MANAGER_UNAVAILABLE_STATUS);
    }
    Ok(())
}
