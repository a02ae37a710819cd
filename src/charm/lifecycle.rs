//! install, start, stop, remove, upgrade-charm.
//!
//! - install: host setup ([`setup::ensure_host`]: LXD, network, storage, profiles, image,
//!   timer) and the runner binary.
//! - start: the same checks (a reboot loses a tmpfs, a timer may have died), then FLUSH_IDLE
//!   (only when some runner predates the machine's boot) and a reconcile under one lock.
//! - upgrade-charm: the install steps, then FLUSH_IDLE and a reconcile (new runners come
//!   from the new charm; busy ones finish their job).
//! - stop, remove: the timer goes first (no reconcile may start behind our back), then
//!   FLUSH_BUSY removes every runner, busy ones included. remove also drops the image's
//!   rebuild cron.
//!
//! Each step is idempotent, so a hook killed anywhere converges when Juju runs it again.
//! The handlers act through [`HostAccess`]: production builds the real edges and runtime,
//! tests put fakes in.

use super::credentials::{self, PreviousCredentials};
use super::reconcile::{self, Options};
use super::runtime::Runtime;
use super::setup::{self, HostEdges, SetupEdges, When};
use super::{status, CharmError, Context};
use crate::config::{validate, CharmConfig, ConfigContext};
use crate::host::{boot, timer};
use crate::juju::Status;
use crate::manager::flush::FlushMode;

/// The charm's version, shown by `juju status` as the application version.
pub const CHARM_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Shown while install and upgrade-charm set the host up.
pub const SETTING_UP_STATUS: &str = "Setting up the host";
/// Shown while start flushes idle runners and reconciles.
pub const STARTING_STATUS: &str = "Starting runners";
/// Shown while stop/remove take the runners down.
pub const STOPPING_STATUS: &str = "Removing runners";

/// The host and runner manager as the lifecycle handlers reach them.
pub trait HostAccess {
    /// Edges usable before a runtime exists (LXD may not be installed yet).
    fn edges(&self) -> &dyn SetupEdges;
    /// Edges sharing `rt`'s LXD client and storage pool.
    fn edges_for<'a>(&'a self, rt: &'a Runtime) -> Box<dyn SetupEdges + 'a>;
    /// The runtime for acting on runners, or None after setting the status that says why
    /// not (invalid configuration, guards, LXD missing).
    fn prepare(&self, ctx: &Context<'_>) -> Result<Option<Runtime>, CharmError>;
    /// A runtime for taking runners down: no guard applies (a unit blocked by a guard must
    /// still clean up), None when the configuration cannot make one.
    fn cleanup_runtime(&self, ctx: &Context<'_>) -> Result<Option<Runtime>, CharmError>;
    /// When the machine booted (epoch seconds), None when unknown.
    fn boot_time_epoch(&self) -> Option<u64>;
}

/// Production: edges from the hook's environment, the runtime from `reconcile::prepare`.
pub struct ProductionHost {
    edges: HostEdges,
}

impl ProductionHost {
    pub fn new(ctx: &Context<'_>) -> Self {
        ProductionHost {
            edges: HostEdges::from_env(ctx.paths),
        }
    }
}

impl HostAccess for ProductionHost {
    fn edges(&self) -> &dyn SetupEdges {
        &self.edges
    }

    fn edges_for<'a>(&'a self, rt: &'a Runtime) -> Box<dyn SetupEdges + 'a> {
        Box::new(
            HostEdges::from_env(&rt.paths)
                .with_lxd(rt.lxd.clone())
                .with_pool(rt.storage_pool.clone()),
        )
    }

    fn prepare(&self, ctx: &Context<'_>) -> Result<Option<Runtime>, CharmError> {
        reconcile::prepare(ctx)
    }

    fn boot_time_epoch(&self) -> Option<u64> {
        boot::boot_time_epoch()
    }

    fn cleanup_runtime(&self, ctx: &Context<'_>) -> Result<Option<Runtime>, CharmError> {
        let raw = ctx.tools.config_get()?;
        let previous = credentials::load(ctx.paths).unwrap_or_else(|e| {
            tracing::warn!("{e}");
            None
        });
        let config_ctx = ConfigContext {
            app_name: &ctx.hook.identity.app,
            juju_proxy_configured: ctx.hook.proxy.is_configured(),
        };
        let Some(config) = cleanup_config(&raw, previous.as_ref(), &config_ctx) else {
            // Only a unit that was ever set up can have runners to leave behind.
            if ctx.tools.state_get()?.contains_key(setup::HOST_READY_KEY) {
                tracing::warn!(
                    "invalid configuration: the runners cannot be removed from GitHub; \
                     fix the configuration or delete them by hand"
                );
            } else {
                tracing::debug!("invalid configuration and no host set up: nothing to remove");
            }
            return Ok(None);
        };
        match Runtime::new(ctx, config) {
            Ok(rt) => Ok(Some(rt)),
            Err(e) => {
                tracing::warn!("cannot reach the runners to remove them: {e}");
                Ok(None)
            }
        }
    }
}

/// The configuration to take runners down with: the current one when valid, else the
/// current one with the credentials the charm last acted on (an operator who cleared the
/// token and then removed the unit still gets its runners removed). None when neither
/// validates. Pure.
pub fn cleanup_config(
    raw: &serde_json::Map<String, serde_json::Value>,
    previous: Option<&PreviousCredentials>,
    config_ctx: &ConfigContext<'_>,
) -> Option<CharmConfig> {
    if let Ok(config) = validate(raw, config_ctx) {
        return Some(config);
    }
    let previous = previous?;
    let mut with_previous = raw.clone();
    for (key, value) in [
        ("token", previous.token.expose().to_string()),
        ("path", previous.path.display()),
        ("group", previous.group.clone()),
        ("labels", previous.labels.join(",")),
        ("github-url", previous.github_url.clone()),
    ] {
        with_previous.insert(key.to_string(), value.into());
    }
    validate(&with_previous, config_ctx).ok()
}

pub fn install(ctx: &Context<'_>) -> Result<(), CharmError> {
    install_with(ctx, &ProductionHost::new(ctx))
}

pub fn start(ctx: &Context<'_>) -> Result<(), CharmError> {
    start_with(ctx, &ProductionHost::new(ctx))
}

pub fn upgrade_charm(ctx: &Context<'_>) -> Result<(), CharmError> {
    upgrade_charm_with(ctx, &ProductionHost::new(ctx))
}

pub fn stop(ctx: &Context<'_>) -> Result<(), CharmError> {
    take_down(ctx, &ProductionHost::new(ctx), false)
}

pub fn remove(ctx: &Context<'_>) -> Result<(), CharmError> {
    take_down(ctx, &ProductionHost::new(ctx), true)
}

pub fn install_with(ctx: &Context<'_>, host: &dyn HostAccess) -> Result<(), CharmError> {
    ctx.tools.application_version_set(CHARM_VERSION)?;
    let Some(rt) = ready_host(ctx, host, Some(SETTING_UP_STATUS))? else {
        return Ok(());
    };
    match binary_note(ctx, &rt)? {
        Some(problem) => status::set_and_remember(ctx, &problem),
        None => status::set_ready(ctx),
    }
}

pub fn start_with(ctx: &Context<'_>, host: &dyn HostAccess) -> Result<(), CharmError> {
    start_after(ctx, host, None, StartFlush::IfRunnersPredateBoot)
}

pub fn upgrade_charm_with(ctx: &Context<'_>, host: &dyn HostAccess) -> Result<(), CharmError> {
    ctx.tools.application_version_set(CHARM_VERSION)?;
    crate::observability::refresh_cos_agent(ctx.tools, ctx.hook)?;
    crate::observability::restart_exporter(ctx.paths, ctx.hook, host.edges().systemd());
    start_after(ctx, host, Some(SETTING_UP_STATUS), StartFlush::Always)
}

/// Whether start-like hooks flush idle runners before reconciling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartFlush {
    /// upgrade-charm: new runners must come from the new charm.
    Always,
    /// start: only runners that survived a reboot are suspect. On a fresh deploy the runners
    /// config-changed made moments ago are new: flushing them (as the Python charm did) only
    /// churns registrations and instances.
    IfRunnersPredateBoot,
}

/// True when some instance was created before the machine booted, or the boot time is
/// unknown (then assume the worst).
pub fn runners_predate_boot(created_at_epochs: &[u64], boot_epoch: Option<u64>) -> bool {
    match boot_epoch {
        None => !created_at_epochs.is_empty(),
        Some(boot) => created_at_epochs.iter().any(|&created| created < boot),
    }
}

/// Host setup (announced with `announce`), the binary check, then FLUSH_IDLE and a
/// reconcile under one lock.
fn start_after(
    ctx: &Context<'_>,
    host: &dyn HostAccess,
    announce: Option<&str>,
    flush: StartFlush,
) -> Result<(), CharmError> {
    let Some(rt) = ready_host(ctx, host, announce)? else {
        return Ok(());
    };
    let notes: Vec<Status> = binary_note(ctx, &rt)?.into_iter().collect();
    ctx.tools
        .status_set(&Status::Maintenance(STARTING_STATUS.into()))?;
    let options = Options {
        notes,
        ..Options::default()
    };
    let flush_first = match flush {
        StartFlush::Always => true,
        StartFlush::IfRunnersPredateBoot => {
            match rt.lxd.list_owned_instances(&rt.identity.owner_value()) {
                Ok(instances) => {
                    let created: Vec<u64> = instances.iter().map(|i| i.created_at_epoch).collect();
                    runners_predate_boot(&created, host.boot_time_epoch())
                }
                // Cannot tell: flush as the Python charm always did.
                Err(_) => true,
            }
        }
    };
    if flush_first {
        reconcile::flush_then_reconcile(ctx, &rt, FlushMode::FlushIdle, &rt, &options)?;
    } else {
        reconcile::reconcile_with(ctx, &rt, &options)?;
    }
    Ok(())
}

/// Host setup for the hooks that (re)install: the guards and LXD itself before the runtime
/// (which needs `lxc`), then the rest with the runtime's client and pool. None after
/// setting the status that says what is missing.
pub(crate) fn ready_host(
    ctx: &Context<'_>,
    host: &dyn HostAccess,
    announce: Option<&str>,
) -> Result<Option<Runtime>, CharmError> {
    let Some(config) = status::config_or_block(ctx)? else {
        return Ok(None);
    };
    if let Some(message) = announce {
        ctx.tools.status_set(&Status::Maintenance(message.into()))?;
    }
    // The runtime needs `lxc`: install LXD first when it is missing (guards before that, so
    // nothing is installed for a unit that must stay Blocked). With `lxc` present the full
    // check happens once, in ensure_host.
    if host.edges().commands().find("lxc").is_none() {
        let early = setup::check_guards(ctx, &config)
            .and_then(|_| setup::ensure_lxd(ctx, host.edges()).map(drop));
        if let Err(e) = early {
            setup::report(ctx, e)?;
            return Ok(None);
        }
    }
    let Some(rt) = host.prepare(ctx)? else {
        return Ok(None);
    };
    let ready = {
        let edges = host.edges_for(&rt);
        setup::ensure_host_reported(ctx, &rt.config, edges.as_ref(), When::Always)?
    };
    Ok(ready.then_some(rt))
}

/// The runner binary update; a failure is a status to show, not a failed hook (the old
/// tarball stays and the periodic event retries).
pub(crate) fn binary_note(ctx: &Context<'_>, rt: &Runtime) -> Result<Option<Status>, CharmError> {
    match setup::update_runner_binary(ctx, rt) {
        Ok(update) => {
            if update.changed {
                tracing::info!("runner binary in place");
            }
            Ok(None)
        }
        Err(setup::SetupError::HookTool(e)) => Err(e.into()),
        Err(e) => {
            tracing::warn!("{e}");
            Ok(e.status())
        }
    }
}

/// stop and remove: the timer first, then FLUSH_BUSY. `remove` also drops the rebuild cron.
fn take_down(ctx: &Context<'_>, host: &dyn HostAccess, removing: bool) -> Result<(), CharmError> {
    if let Err(e) = timer::remove(ctx.paths, host.edges().systemd()) {
        // A timer that cannot be removed must not keep the runners alive.
        tracing::warn!("could not remove the reconcile timer: {e}");
    }
    crate::observability::remove_exporter(ctx.paths, ctx.hook, host.edges().systemd());
    if removing {
        remove_rebuild_cron(ctx);
    }
    let Some(rt) = host.cleanup_runtime(ctx)? else {
        return Ok(());
    };
    ctx.tools
        .status_set(&Status::Maintenance(STOPPING_STATUS.into()))?;
    let run = reconcile::flush(ctx, &rt, FlushMode::FlushBusy)?;
    match &run.result {
        Ok(outcome) => tracing::info!(
            removed = outcome.report.removed.len(),
            failed = outcome.report.failed.len(),
            "runners taken down"
        ),
        Err(e) => tracing::warn!("taking the runners down failed: {e}"),
    }
    Ok(())
}

fn remove_rebuild_cron(ctx: &Context<'_>) {
    let path = ctx
        .paths
        .cron_dir()
        .join(crate::runner::image::REBUILD_CRON_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => tracing::info!("image rebuild cron removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("could not remove {}: {e}", path.display()),
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
