//! The `runner` storage (runner disks when runner-storage=juju-storage).
//!
//! - attached: the pool can now be made on it: host setup, then a reconcile (a unit that was
//!   Blocked for lack of storage gets its runners).
//! - detaching: the disks of every runner go away with it, so every runner is flushed, busy
//!   ones included, while they can still be stopped cleanly.

use super::lifecycle::{self, HostAccess, ProductionHost};
use super::reconcile;
use super::{CharmError, Context};
use crate::config::RunnerStorage;
use crate::juju::Status;
use crate::manager::flush::FlushMode;

/// Shown while runners are taken off a detaching storage.
pub const DETACHING_STATUS: &str = "Removing runners: their storage is detaching";

pub fn attached(ctx: &Context<'_>) -> Result<(), CharmError> {
    attached_with(ctx, &ProductionHost::new(ctx))
}

pub fn detaching(ctx: &Context<'_>) -> Result<(), CharmError> {
    detaching_with(ctx, &ProductionHost::new(ctx))
}

pub fn attached_with(ctx: &Context<'_>, host: &dyn HostAccess) -> Result<(), CharmError> {
    tracing::debug!(location = location(ctx), "runner storage attached");
    let Some(rt) = lifecycle::ready_host(ctx, host, None)? else {
        return Ok(());
    };
    reconcile::reconcile(ctx, &rt)?;
    Ok(())
}

pub fn detaching_with(ctx: &Context<'_>, host: &dyn HostAccess) -> Result<(), CharmError> {
    tracing::debug!(location = location(ctx), "runner storage detaching");
    let Some(rt) = host.cleanup_runtime(ctx)? else {
        return Ok(());
    };
    if !runners_live_on_juju_storage(rt.config.runner_storage) {
        return Ok(());
    }
    ctx.tools
        .status_set(&Status::Maintenance(DETACHING_STATUS.into()))?;
    let run = reconcile::flush(ctx, &rt, FlushMode::FlushBusy)?;
    if let Err(e) = &run.result {
        tracing::warn!("flushing runners off the detaching storage failed: {e}");
    }
    Ok(())
}

/// Only runner-storage=juju-storage puts runner disks on the Juju storage. Pure.
pub fn runners_live_on_juju_storage(runner_storage: RunnerStorage) -> bool {
    runner_storage == RunnerStorage::JujuStorage
}

fn location<'a>(ctx: &Context<'a>) -> &'a str {
    ctx.hook
        .storage
        .as_ref()
        .and_then(|s| s.location.as_deref())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_juju_storage_runners_are_flushed_on_detach() {
        assert!(runners_live_on_juju_storage(RunnerStorage::JujuStorage));
        assert!(!runners_live_on_juju_storage(RunnerStorage::Memory));
    }
}
