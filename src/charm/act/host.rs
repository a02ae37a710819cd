//! Host effects: LXD before the runtime, the runtime, host setup, the runner binary check,
//! the reconcile timer's repair, and the local part of a tear-down.

use super::super::context::Context;
use super::super::credentials;
use super::super::decide::binary_check_due;
use super::super::edge::Host;
use super::super::error::CharmError;
use super::super::fleet;
use super::super::runner_metrics;
use super::super::runtime::Runtime;
use super::super::setup::decide::{self as setup_decide, TimerRepair};
use super::super::setup::{self, SetupError, When};
use super::Shown;
use crate::config::CharmConfig;
use crate::host::timer::{self, Systemd};
use crate::juju::state::UnitState;
use crate::juju::Status;

/// A host that is not ready: the status that says why, or the hook fails (a hook tool
/// broke: Juju retries the hook).
pub fn setup_failure(err: SetupError) -> Result<Shown, CharmError> {
    match err.status() {
        Some(shown) => {
            tracing::warn!("host setup: {err}");
            Ok(Shown::Remember(shown))
        }
        None => Err(err.into()),
    }
}

/// LXD installed before the runtime is built (the guards were decided already).
pub fn install_lxd(ctx: &Context<'_>, host: &dyn Host) -> Result<Option<Shown>, CharmError> {
    match setup::ensure_lxd(ctx, host.edges()) {
        Ok(_) => Ok(None),
        Err(e) => setup_failure(e).map(Some),
    }
}

/// Host setup with the runtime's LXD client and pool; None when the host is ready.
pub fn ensure_host(
    ctx: &Context<'_>,
    host: &dyn Host,
    rt: &Runtime,
    when: When,
) -> Result<Option<Shown>, CharmError> {
    match host.ensure_host(ctx, rt, when) {
        Ok(()) => Ok(None),
        Err(e) => setup_failure(e).map(Some),
    }
}

/// Whether the runner binary changed, and the status to add when the check failed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinaryCheck {
    pub changed: bool,
    pub problem: Option<Status>,
}

/// The runner binary update check (one GitHub call, a download only when GitHub lists
/// another tarball). A failed check is a status to show, not a failed hook; only a hook
/// tool failure is `Err`.
pub fn check_runner_binary(ctx: &Context<'_>, rt: &Runtime) -> Result<BinaryCheck, CharmError> {
    match setup::update_runner_binary(ctx, rt) {
        Ok(update) => {
            if update.changed {
                tracing::info!("runner binary in place");
            }
            Ok(BinaryCheck {
                changed: update.changed,
                problem: None,
            })
        }
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

/// [`check_runner_binary`] when `decide::binary_check_due`, remembering when it last
/// succeeded.
pub fn periodic_binary_check(
    ctx: &Context<'_>,
    rt: &Runtime,
    state: &UnitState,
) -> Result<BinaryCheck, CharmError> {
    let now = rt.clock.now_epoch();
    let present = fleet::host_binary_state(rt).ready;
    if !binary_check_due(state.binary_checked_at, now, present) {
        return Ok(BinaryCheck::default());
    }
    let check = check_runner_binary(ctx, rt)?;
    if check.problem.is_none() {
        // Loaded again: the check itself may have written the new tarball's url and checksum.
        let loaded = UnitState::load(ctx.tools)?;
        let mut after = loaded.clone();
        after.binary_checked_at = Some(now);
        after.save(&loaded, ctx.tools)?;
    }
    Ok(check)
}

/// Restarts the timer when it is installed but not active (a unit that has not installed
/// it, or removed it on stop, is left alone). A failure is logged: the next update-status
/// tries again.
pub fn repair_timer(ctx: &Context<'_>, config: &CharmConfig, systemd: &dyn Systemd) -> TimerRepair {
    let installed = setup_decide::timer_files_present(ctx.paths);
    // No systemctl spawn at all when the timer was never installed.
    let active = installed
        && systemd
            .is_active(&timer::unit_names(ctx.paths).timer)
            .unwrap_or_else(|e| {
                tracing::warn!("cannot ask systemd about the reconcile timer: {e}");
                false
            });
    let repair = setup_decide::timer_repair(installed, active);
    if repair == TimerRepair::Repair {
        match timer::install(ctx.paths, &setup::timer_spec(ctx, config), systemd) {
            Ok(outcome) => tracing::info!("reconcile timer was not active: {outcome}"),
            Err(e) => tracing::warn!("could not repair the reconcile timer: {e}"),
        }
    }
    crate::observability::repair_exporter(ctx.paths, &setup::timer_spec(ctx, config), systemd);
    repair
}

/// The timer goes first, so no reconcile starts behind our back; a timer that cannot be
/// removed must not keep the runners alive.
pub fn remove_timer(ctx: &Context<'_>, host: &dyn Host) {
    if let Err(e) = timer::remove(ctx.paths, host.edges().systemd()) {
        tracing::warn!("could not remove the reconcile timer: {e}");
    }
    crate::observability::remove_exporter(ctx.paths, ctx.hook, host.edges().systemd());
}

pub fn remove_rebuild_cron(ctx: &Context<'_>) {
    crate::host::file::remove_logged(&ctx.paths.rebuild_cron_file());
}

/// remove: the unit's files that outlive the runners (the previous token, the started-runners
/// record, the metrics log's logrotate rule); the timer and cron went first. The metrics
/// log itself stays, for the log shipper to finish and for the operator to read.
pub fn remove_unit_files(ctx: &Context<'_>) {
    crate::host::file::remove_logged(&credentials::credentials_path(ctx.paths));
    crate::host::file::remove_logged(&runner_metrics::record_path(ctx.paths));
    crate::host::file::remove_logged(&ctx.paths.metrics_logrotate_rule());
    crate::reactive::mode::remove_unit_files(ctx.paths, &ctx.hook.identity);
    super::scaleset::remove_unit_files(ctx.paths, &ctx.hook.identity);
}

/// The unit's ACL off the bridge and deleted (the bridge too when the charm made it and
/// nothing uses it), and the unit's aproxy redirect removed (other units' stay). Best effort: the unit is going away.
pub fn remove_runner_network(ctx: &Context<'_>, host: &dyn Host) {
    let edges = host.edges();
    let Some((bridge, net)) = edges.runner_network() else {
        return;
    };
    let acl = crate::network::acl_name(&ctx.hook.identity);
    if let Err(e) = crate::network::converge::remove(net, &bridge, &acl) {
        tracing::warn!("could not remove the runners' firewall: {e}");
    }
    let target = crate::charm::setup::runner_network::aproxy_target(ctx, bridge);
    if let Err(e) = crate::network::aproxy::converge(edges.commands(), &target, None) {
        tracing::warn!("could not remove the aproxy redirect: {e}");
    }
}
