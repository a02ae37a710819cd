//! config-changed, and the convergence every reconcile shares with it.
//!
//! - invalid configuration: Blocked, nothing touched;
//! - runner-storage or base-image changed since deployment: Blocked saying so, nothing
//!   touched;
//! - host setup (`setup::ensure_host_for`): the timer re-rendered for reconcile-interval,
//!   the resource profile for vm-cpu/vm-memory/vm-disk (new runners use it; running ones
//!   keep theirs), all idempotent;
//! - token, path, group, labels or github-url changed since the charm last acted: the old
//!   runners are flushed (FORCE_FLUSH_WAIT_REPO_CHECK) with the OLD credentials, from the
//!   root-only credentials file, then the new configuration is reconciled;
//! - then a reconcile.
//!
//! What the charm acted on (scope fingerprint, deploy settings) is recorded only once the
//! flush went through, so a failed one is retried by the next
//! config-changed or periodic reconcile.

use super::credentials::{self, PreviousCredentials};
use super::reconcile::{self, Options, ReconcileRun};
use super::runtime::Runtime;
use super::setup;
use super::{status, CharmError, Context};
use crate::config::CharmConfig;
use crate::juju::state::{ActedScope, UnitState};
use crate::juju::Status;
use crate::manager::flush::FlushMode;

/// What a configuration means for the runners, against what the charm last acted on. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChangePlan {
    /// Options whose change needs the old runners flushed with the old credentials.
    pub flush_for: Vec<&'static str>,
}

impl ConfigChangePlan {
    pub fn flushes(&self) -> bool {
        !self.flush_for.is_empty()
    }
}

/// Compare `config` with what `state` says the charm last acted on.
pub fn plan_change(state: &UnitState, config: &CharmConfig) -> ConfigChangePlan {
    ConfigChangePlan {
        flush_for: state.acted_scope().changed_options(&ActedScope::of(config)),
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
    crate::observability::refresh_cos_agent(ctx.tools, ctx.hook)?;
    handle_with(ctx, &|ctx, config| Runtime::new(ctx, config), &|ctx, rt| {
        setup::ensure_host_for(ctx, rt, setup::When::Always)
    })
}

/// Builds the runtime for a configuration (production: [`Runtime::new`]).
pub type MakeRuntime<'f> =
    &'f dyn Fn(&Context<'_>, CharmConfig) -> Result<Runtime, super::runtime::RuntimeError>;

/// Makes the host ready (production: `setup::ensure_host_for`); false when it is not, with
/// the status set.
pub type EnsureHost<'f> = &'f dyn Fn(&Context<'_>, &Runtime) -> Result<bool, CharmError>;

/// [`handle`] with the runtime and host setup given (tests).
pub fn handle_with(
    ctx: &Context<'_>,
    make_runtime: MakeRuntime<'_>,
    ensure_host: EnsureHost<'_>,
) -> Result<(), CharmError> {
    let Some(config) = status::config_or_block(ctx)? else {
        return Ok(());
    };
    let state = UnitState::load(ctx.tools)?;
    if let Some(blocked) = reconcile::guard_status(ctx, &config, &state) {
        status::set_and_remember(ctx, &blocked)?;
        return Ok(());
    }
    let rt = match make_runtime(ctx, config) {
        Ok(rt) => rt,
        Err(err) => {
            status::set_and_remember(ctx, &reconcile::runtime_error_status(&err))?;
            return Ok(());
        }
    };
    if !ensure_host(ctx, &rt)? {
        return Ok(());
    }
    converge(ctx, &rt, &state, &Options::default()).map(drop)
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
    let mut acted = true;

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
            options,
        )?;
        acted = flushed.result.is_ok();
        run
    } else {
        reconcile::reconcile_with(ctx, rt, options)?
    };

    if acted {
        record_acted(ctx, rt)?;
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
fn record_acted(ctx: &Context<'_>, rt: &Runtime) -> Result<(), CharmError> {
    let config = &rt.config;
    let before = UnitState::load(ctx.tools)?;
    let mut after = before.clone();
    after.set_acted_scope(ActedScope::of(config));
    after
        .deploy_settings
        .get_or_insert_with(|| setup::deploy_settings(config));
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
