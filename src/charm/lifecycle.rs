//! install, start, stop, remove, upgrade-charm.

use super::{status, CharmError, Context};

/// The charm's version, shown by `juju status` as the application version.
pub const CHARM_VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn install(ctx: &Context<'_>) -> Result<(), CharmError> {
    ctx.tools.application_version_set(CHARM_VERSION)?;
    status::refresh(ctx).map(drop)
}

pub fn start(ctx: &Context<'_>) -> Result<(), CharmError> {
    status::refresh(ctx).map(drop)
}

/// Nothing runs on the machine yet: no timer to disable, no runner to flush.
pub fn stop(_ctx: &Context<'_>) -> Result<(), CharmError> {
    tracing::debug!("stop: nothing of this charm runs on the machine yet");
    Ok(())
}

pub fn remove(_ctx: &Context<'_>) -> Result<(), CharmError> {
    tracing::debug!("remove: nothing of this charm is left on the machine");
    Ok(())
}

pub fn upgrade_charm(ctx: &Context<'_>) -> Result<(), CharmError> {
    ctx.tools.application_version_set(CHARM_VERSION)?;
    status::refresh(ctx).map(drop)
}

#[cfg(test)]
mod tests {
    use crate::charm::testing::{run, valid_config};
    use crate::juju::event::Event;
    use crate::juju::memory::MemoryHookTools;
    use crate::juju::Status;

    #[test]
    fn install_sets_the_version_then_the_status() {
        let tools = MemoryHookTools::default();
        run(&tools, &Event::Install).unwrap();
        assert_eq!(
            tools.lock().app_versions,
            vec![env!("CARGO_PKG_VERSION").to_string()]
        );
        assert!(
            matches!(&tools.statuses()[..], [Status::Blocked(m)] if m.contains("path: missing"))
        );
    }

    #[test]
    fn start_with_valid_config_is_waiting_for_the_manager() {
        let tools = MemoryHookTools::default();
        valid_config(&tools);
        run(&tools, &Event::Start).unwrap();
        assert!(matches!(&tools.statuses()[..], [Status::Waiting(_)]));
    }

    #[test]
    fn stop_and_remove_touch_nothing() {
        let tools = MemoryHookTools::default();
        run(&tools, &Event::Stop).unwrap();
        run(&tools, &Event::Remove).unwrap();
        assert!(tools.lock().calls.is_empty());
    }
}
