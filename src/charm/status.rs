//! The unit's status as derived from its configuration.

use super::{CharmError, Context};
use crate::config::{validate, CharmConfig, ConfigContext, ConfigError};
use crate::juju::{HookToolError, Status};

/// Shown while the configuration is valid but this build has no runner manager to run.
pub const MANAGER_UNAVAILABLE_STATUS: &str = "runner manager unavailable in this charm build";

/// `config-get`, validated.
pub fn read_config(ctx: &Context<'_>) -> Result<Result<CharmConfig, ConfigError>, HookToolError> {
    let raw = ctx.tools.config_get()?;
    Ok(validate(
        &raw,
        &ConfigContext {
            app_name: &ctx.hook.identity.app,
            juju_proxy_configured: ctx.hook.proxy.is_configured(),
        },
    ))
}

/// The valid configuration, or None after setting Blocked with every problem.
/// Invalid configuration changes nothing else: runners and unit state stay as they are.
pub fn config_or_block(ctx: &Context<'_>) -> Result<Option<CharmConfig>, CharmError> {
    match read_config(ctx)? {
        Ok(config) => Ok(Some(config)),
        Err(problems) => {
            ctx.tools
                .status_set(&Status::Blocked(problems.to_string()))?;
            Ok(None)
        }
    }
}

/// The status of a unit with a valid configuration.
pub fn set_ready(ctx: &Context<'_>) -> Result<(), CharmError> {
    ctx.tools
        .status_set(&Status::Waiting(MANAGER_UNAVAILABLE_STATUS.into()))?;
    Ok(())
}

/// Blocked on invalid config, else the ready status: what most hooks end with.
pub fn refresh(ctx: &Context<'_>) -> Result<Option<CharmConfig>, CharmError> {
    let config = config_or_block(ctx)?;
    if config.is_some() {
        set_ready(ctx)?;
    }
    Ok(config)
}
