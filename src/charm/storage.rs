//! The `runner` storage (runner disks when runner-storage=juju-storage).

use super::{CharmError, Context};

fn location<'a>(ctx: &Context<'a>) -> &'a str {
    ctx.hook
        .storage
        .as_ref()
        .and_then(|s| s.location.as_deref())
        .unwrap_or("")
}

pub fn attached(ctx: &Context<'_>) -> Result<(), CharmError> {
    tracing::debug!(location = location(ctx), "runner storage attached");
    Ok(())
}

pub fn detaching(ctx: &Context<'_>) -> Result<(), CharmError> {
    tracing::debug!(location = location(ctx), "runner storage detaching");
    Ok(())
}
