//! update-status: Juju's periodic hook (every 5 minutes by default). Must stay cheap and
//! never call GitHub: it repairs the reconcile timer when it stopped, and shows the status
//! the last reconcile or flush remembered.

use super::setup::decide::{self, TimerRepair};
use super::setup::{self, HostEdges, SetupEdges};
use super::{status, CharmError, Context};
use crate::config::CharmConfig;
use crate::host::timer::{self, Systemd, TIMER_UNIT};

pub fn handle(ctx: &Context<'_>) -> Result<(), CharmError> {
    let edges = HostEdges::from_env(ctx.paths);
    handle_with(ctx, edges.systemd())
}

pub fn handle_with(ctx: &Context<'_>, systemd: &dyn Systemd) -> Result<(), CharmError> {
    let Some(config) = status::refresh(ctx)? else {
        return Ok(());
    };
    repair_timer(ctx, &config, systemd);
    Ok(())
}

/// Restarts the timer when it is installed but not active (a unit that has not installed
/// it, or removed it on stop, is left alone). A failure is logged: the next update-status
/// tries again.
pub fn repair_timer(ctx: &Context<'_>, config: &CharmConfig, systemd: &dyn Systemd) -> TimerRepair {
    let installed = decide::timer_files_present(&ctx.paths.systemd_dir());
    // No systemctl spawn at all when the timer was never installed.
    let active = installed
        && systemd.is_active(TIMER_UNIT).unwrap_or_else(|e| {
            tracing::warn!("cannot ask systemd about the reconcile timer: {e}");
            false
        });
    let repair = decide::timer_repair(installed, active);
    if repair == TimerRepair::Repair {
        match timer::install(ctx.paths, &setup::timer_spec(ctx, config), systemd) {
            Ok(outcome) => tracing::info!("reconcile timer was not active: {outcome}"),
            Err(e) => tracing::warn!("could not repair the reconcile timer: {e}"),
        }
    }
    crate::observability::repair_exporter(ctx.paths, &setup::timer_spec(ctx, config), systemd);
    repair
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charm::setup::fakes::Fake;
    use crate::charm::testing::{hook_context, run, valid_config};
    use crate::juju::event::Event;
    use crate::juju::memory::MemoryHookTools;
    use crate::juju::Status;
    use crate::paths::HostPaths;

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

    fn update_status(tools: &MemoryHookTools, root: &std::path::Path, systemd: &Fake) {
        let hook = hook_context();
        let paths = HostPaths::new(root);
        let ctx = Context {
            tools,
            hook: &hook,
            paths: &paths,
        };
        handle_with(&ctx, systemd).unwrap();
    }

    #[test]
    fn an_inactive_timer_is_restarted_an_active_or_absent_one_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let tools = MemoryHookTools::default();
        valid_config(&tools);
        let systemd = Fake::ready();

        update_status(&tools, root.path(), &systemd);
        assert!(systemd.log().is_empty(), "never installed: not even asked");

        let hook = hook_context();
        let paths = HostPaths::new(root.path());
        let ctx = Context {
            tools: &tools,
            hook: &hook,
            paths: &paths,
        };
        let config = status::read_config(&ctx).unwrap().unwrap();
        timer::install(&paths, &setup::timer_spec(&ctx, &config), &systemd).unwrap();
        systemd.clear();

        update_status(&tools, root.path(), &systemd);
        assert_eq!(
            systemd.log(),
            [format!("is-active {TIMER_UNIT}")],
            "active: only asked"
        );

        systemd.clear();
        *systemd.timer_active.borrow_mut() = false;
        update_status(&tools, root.path(), &systemd);
        assert_eq!(
            systemd.log(),
            [
                format!("is-active {TIMER_UNIT}"),
                format!("is-active {TIMER_UNIT}"),
                format!("systemctl enable --now {TIMER_UNIT}")
            ]
        );
        assert!(*systemd.timer_active.borrow());
        assert!(
            !tools
                .lock()
                .calls
                .iter()
                .any(|c| c.starts_with("state-set")),
            "no state written"
        );
    }
}
