//! update-status: Juju's periodic hook (every 5 minutes by default). Must stay cheap.

use super::{status, CharmError, Context};

pub fn handle(ctx: &Context<'_>) -> Result<(), CharmError> {
    status::refresh(ctx).map(drop)
}

#[cfg(test)]
mod tests {
    use crate::charm::testing::{run, valid_config};
    use crate::juju::event::Event;
    use crate::juju::memory::MemoryHookTools;
    use crate::juju::Status;

    #[test]
    fn blocks_on_invalid_config() {
        let tools = MemoryHookTools::default();
        tools.lock().config.insert("vm-cpu".into(), 0.into());
        run(&tools, &Event::UpdateStatus).unwrap();
        assert!(matches!(&tools.statuses()[..], [Status::Blocked(m)] if m.contains("vm-cpu 0")));
    }

    #[test]
    fn three_tool_calls_with_valid_config() {
        let tools = MemoryHookTools::default();
        valid_config(&tools);
        run(&tools, &Event::UpdateStatus).unwrap();
        // The status shown is the one the last reconcile remembered in unit state.
        assert_eq!(
            tools.lock().calls,
            ["config-get", "state-get", "status-set"]
        );
    }

    #[test]
    fn a_failing_tool_fails_the_hook() {
        let tools = MemoryHookTools::default();
        tools.fail_tool("config-get", 1, "ERROR permission denied");
        let err = run(&tools, &Event::UpdateStatus).unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
    }
}
