//! leader-elected, leader-settings-changed: units manage their own runners, so leadership
//! changes nothing for now.

use super::{CharmError, Context};

pub fn elected(_ctx: &Context<'_>) -> Result<(), CharmError> {
    tracing::debug!("leader-elected: units manage their own runners; nothing to do");
    Ok(())
}

pub fn settings_changed(_ctx: &Context<'_>) -> Result<(), CharmError> {
    tracing::debug!("leader-settings-changed: nothing to do");
    Ok(())
}
