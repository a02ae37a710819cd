//! Juju event handlers: each event reaches its own handler function.
//!
//! Handlers decide with pure code (config validation, state comparison) and act through the
//! [`HookTools`] in [`Context`]. Runner management (reconcile, flush, checks) plugs in here.

pub mod actions;
pub mod config_changed;
pub mod credentials;
#[cfg(test)]
pub(crate) mod fake_world;
pub mod fleet;
pub mod leader;
pub mod lifecycle;
pub mod reconcile;
pub mod relations;
pub mod runner_metrics;
pub mod runtime;
pub mod setup;
pub mod status;
pub mod storage;
pub mod update_status;

use crate::juju::context::HookContext;
use crate::juju::event::Event;
use crate::juju::{HookToolError, HookTools};
use crate::paths::HostPaths;

/// Everything a handler may use.
pub struct Context<'a> {
    pub tools: &'a dyn HookTools,
    pub hook: &'a HookContext,
    pub paths: &'a HostPaths,
}

/// A hook that fails: the unit goes into error state and Juju retries the hook.
#[derive(Debug, thiserror::Error)]
pub enum CharmError {
    #[error(transparent)]
    HookTool(#[from] HookToolError),
    /// Another reconcile or flush held the unit lock for longer than the bounded wait.
    #[error(transparent)]
    Lock(#[from] crate::host::lock::LockError),
    /// The host could not be made ready for a reason a retry may fix.
    #[error(transparent)]
    Setup(#[from] setup::SetupError),
}

/// Run the handler of `event`.
pub fn dispatch(ctx: &Context<'_>, event: &Event) -> Result<(), CharmError> {
    tracing::debug!(event = %event, "handling event");
    crate::host::sweep::sweep_temp_files(ctx.paths);
    let result = handle(ctx, event);
    crate::github::calls::log_process_counts();
    result
}

fn handle(ctx: &Context<'_>, event: &Event) -> Result<(), CharmError> {
    match event {
        Event::Install => lifecycle::install(ctx),
        Event::Start => lifecycle::start(ctx),
        Event::Stop => lifecycle::stop(ctx),
        Event::Remove => lifecycle::remove(ctx),
        Event::UpgradeCharm => lifecycle::upgrade_charm(ctx),
        Event::ConfigChanged => config_changed::handle(ctx),
        Event::UpdateStatus => update_status::handle(ctx),
        Event::LeaderElected => leader::elected(ctx),
        Event::LeaderSettingsChanged => leader::settings_changed(ctx),
        Event::Relation { endpoint, kind } => relations::handle(ctx, *endpoint, *kind),
        Event::RunnerStorageAttached => storage::attached(ctx),
        Event::RunnerStorageDetaching => storage::detaching(ctx),
        Event::ReconcileRunners => reconcile::handle(ctx),
        Event::Action(action) => actions::run(ctx, *action),
        Event::UnknownAction(name) => actions::unknown(ctx, name),
        Event::UnknownHook(name) => {
            tracing::info!(hook = %name, "no handler for this hook; nothing to do");
            Ok(())
        }
        Event::Unrecognised(path) => {
            tracing::warn!(
                dispatch_path = %path,
                "JUJU_DISPATCH_PATH names no hook, action or custom event; nothing to do"
            );
            Ok(())
        }
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::juju::memory::MemoryHookTools;
    use crate::juju::state::string_map;

    pub fn hook_context() -> HookContext {
        let vars = string_map(&[
            ("JUJU_UNIT_NAME", "github-runner/0"),
            ("JUJU_MODEL_UUID", "uuid"),
        ]);
        // Fixed, valid input.
        HookContext::from_vars(&vars).expect("valid test context")
    }

    pub fn run(tools: &MemoryHookTools, event: &Event) -> Result<(), CharmError> {
        let hook = hook_context();
        let paths = HostPaths::new("/nonexistent-test-root");
        dispatch(
            &Context {
                tools,
                hook: &hook,
                paths: &paths,
            },
            event,
        )
    }

    pub fn valid_config(tools: &MemoryHookTools) {
        let mut state = tools.lock();
        state.config.insert("path".into(), "org".into());
        state.config.insert("token".into(), "ghp_secret".into());
    }
}
