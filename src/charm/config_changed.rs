//! config-changed, and the convergence every reconcile shares with it.
//!
//! - invalid configuration: Blocked, nothing touched;
//! - runner-storage or base-image changed since deployment: Blocked saying so, nothing
//!   touched;
//! - reconcile-interval: the timer is re-rendered (idempotent: written only when it changed);
//! - token, path, group, labels or github-url changed since the charm last acted: the old
//!   runners are flushed (FORCE_FLUSH_WAIT_REPO_CHECK) with the OLD credentials, from the
//!   root-only credentials file, then the new configuration is reconciled;
//! - vm-cpu/vm-memory/vm-disk changed: the new resource profile is ensured (new runners use
//!   it; running ones are left);
//! - then a reconcile.
//!
//! What the charm acted on (scope fingerprint, resource profile, deploy settings) is
//! recorded only once the flush went through, so a failed one is retried by the next
//! config-changed or periodic reconcile.

use super::credentials::{self, PreviousCredentials};
use super::reconcile::{self, Options, ReconcileRun};
use super::runtime::Runtime;
use super::{status, CharmError, Context};
use crate::config::CharmConfig;
use crate::host::timer::{self, Systemctl, Systemd, TimerSpec};
use crate::juju::state::{ActedScope, UnitState};
use crate::juju::Status;
use crate::manager::flush::FlushMode;
use crate::runner::resources::{self, Resources};

/// What a configuration means for the runners, against what the charm last acted on. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChangePlan {
    /// Options whose change needs the old runners flushed with the old credentials.
    pub flush_for: Vec<&'static str>,
    /// The resource profile new runners need, when it is not the one last ensured.
    pub new_resource_profile: Option<String>,
}

impl ConfigChangePlan {
    pub fn flushes(&self) -> bool {
        !self.flush_for.is_empty()
    }
}

/// Compare `config` with what `state` says the charm last acted on.
pub fn plan_change(state: &UnitState, config: &CharmConfig) -> ConfigChangePlan {
    let profile = Resources::from_config(config).profile_name();
    ConfigChangePlan {
        flush_for: state.acted_scope().changed_options(&ActedScope::of(config)),
        new_resource_profile: (state.resource_profile.as_deref() != Some(profile.as_str()))
            .then_some(profile),
    }
}

/// The Maintenance line while old runners go.
pub fn flush_reason(options: &[&str]) -> String {
    format!(
        "Removing runners due to config change ({} changed)",
        options.join(", ")
    )
}

pub fn handle(ctx: &Context<'_>) -> Result<(), CharmError> {
    let systemctl = which::which("systemctl")
        .map(Systemctl::with_program)
        .unwrap_or_default();
    handle_with(ctx, &|ctx, config| Runtime::new(ctx, config), &systemctl)
}

/// Builds the runtime for a configuration (production: [`Runtime::new`]).
pub type MakeRuntime<'f> =
    &'f dyn Fn(&Context<'_>, CharmConfig) -> Result<Runtime, super::runtime::RuntimeError>;

/// [`handle`] with the runtime and systemd given (tests).
pub fn handle_with(
    ctx: &Context<'_>,
    make_runtime: MakeRuntime<'_>,
    systemd: &dyn Systemd,
) -> Result<(), CharmError> {
    let Some(config) = status::config_or_block(ctx)? else {
        return Ok(());
    };
    let state = UnitState::load(ctx.tools)?;
    if let Some(blocked) = reconcile::guard_status(ctx, &config, &state) {
        status::set_and_remember(ctx, &blocked)?;
        return Ok(());
    }
    let mut notes = Vec::new();
    if let Err(e) = timer::install(ctx.paths, &timer_spec(ctx, &config), systemd) {
        tracing::warn!("could not install the reconcile timer: {e}");
        notes.push(Status::Maintenance(format!(
            "could not install the reconcile timer: {e}"
        )));
    }
    let rt = match make_runtime(ctx, config) {
        Ok(rt) => rt,
        Err(err) => {
            status::set_and_remember(ctx, &reconcile::runtime_error_status(&err))?;
            return Ok(());
        }
    };
    converge(
        ctx,
        &rt,
        &state,
        &Options {
            notes,
            ..Options::default()
        },
    )
    .map(drop)
}

/// The timer for this unit: `juju-exec <unit> ... ./dispatch` every reconcile-interval.
pub fn timer_spec(ctx: &Context<'_>, config: &CharmConfig) -> TimerSpec {
    let charm_dir = if ctx.hook.charm_dir.is_absolute() {
        ctx.hook.charm_dir.clone()
    } else {
        std::env::current_dir()
            .map(|d| d.join(&ctx.hook.charm_dir))
            .unwrap_or_else(|_| ctx.hook.charm_dir.clone())
    };
    TimerSpec {
        unit_name: ctx.hook.identity.unit_name(),
        charm_dir,
        interval_minutes: config.reconcile_interval_minutes,
    }
}

/// Bring the runners in line with `rt.config`: the old runners flushed with the old
/// credentials when the scope changed, the new resource profile, a reconcile; then record
/// what was acted on. `state` is the unit state at the start of the hook.
pub fn converge(
    ctx: &Context<'_>,
    rt: &Runtime,
    state: &UnitState,
    options: &Options<'_>,
) -> Result<ReconcileRun, CharmError> {
    let config = &rt.config;
    let plan = plan_change(state, config);
    let mut options = options.clone();
    let mut acted = true;

    let mut profile_ready = true;
    if let Some(profile) = &plan.new_resource_profile {
        let resources = Resources::from_config(config);
        let instance_type = resources::instance_type(config.test_mode_insecure);
        match resources::ensure_profiles(&*rt.lxd, &resources, instance_type, &rt.storage_pool, &[])
        {
            Ok(_) => tracing::info!(%profile, "resource profile ready for new runners"),
            Err(e) => {
                profile_ready = false;
                options.notes.push(Status::Waiting(format!(
                    "could not create the resource profile {profile}: {e}"
                )));
            }
        }
    }

    let run = if plan.flushes() {
        let reason = flush_reason(&plan.flush_for);
        tracing::info!("{reason}");
        ctx.tools.status_set(&Status::Maintenance(reason))?;
        let old_rt = previous_runtime(rt);
        let flush_rt = old_rt.as_ref().unwrap_or(rt);
        let (flushed, run) = reconcile::flush_then_reconcile(
            ctx,
            flush_rt,
            FlushMode::ForceFlushWaitRepoCheck,
            rt,
            &options,
        )?;
        acted = flushed.result.is_ok();
        run
    } else {
        reconcile::reconcile_with(ctx, rt, &options)?
    };

    if acted {
        record_acted(ctx, rt, profile_ready)?;
    }
    Ok(run)
}

/// A runtime with the credentials the old runners were made with; None when there is no
/// record of them (then the flush uses the new ones: instances are found by their owner
/// key whatever the credentials, and a FORCE flush goes on when GitHub refuses).
fn previous_runtime(rt: &Runtime) -> Option<Runtime> {
    let previous = match credentials::load(&rt.paths) {
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
fn record_acted(ctx: &Context<'_>, rt: &Runtime, profile_ready: bool) -> Result<(), CharmError> {
    let config = &rt.config;
    let before = UnitState::load(ctx.tools)?;
    let mut after = before.clone();
    after.set_acted_scope(ActedScope::of(config));
    if profile_ready {
        after.resource_profile = Some(Resources::from_config(config).profile_name());
    }
    after
        .deploy_settings
        .get_or_insert_with(|| reconcile::deploy_settings(config));
    if let Err(e) = credentials::save(&rt.paths, &PreviousCredentials::of(config)) {
        // Without the file a later token change flushes with the new token (see
        // previous_runtime); the unit state still records the change.
        tracing::warn!("{e}");
    }
    after.save(&before, ctx.tools)?;
    Ok(())
}

#[cfg(test)]
mod tests;
