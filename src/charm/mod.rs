//! The charm: every Juju event and action goes through one pipeline,
//!
//! ```text
//! Event ──Intent::of──> Intent ──observe──> Observed ──decide (pure)──> Decision
//!       ──act (effects, runner work under the unit lock)──> Outcome ──report──> status,
//!         action results, metrics
//! ```
//!
//! Layers, lowest first; a module uses only those before it: `context`, `credentials`,
//! `runtime`, `runner_metrics`, `fleet`, `setup` (host setup toolbox), `error`, `edge`
//! (the [`Host`] trait), `intent`, `observe`, `decide`, `act`, `report`, and this module,
//! which runs them.

pub mod act;
pub mod context;
pub mod credentials;
pub mod decide;
pub mod edge;
pub mod error;
#[cfg(test)]
pub(crate) mod fake_world;
pub mod fleet;
pub mod intent;
pub mod observe;
pub mod report;
pub mod runner_metrics;
pub mod runtime;
pub mod setup;

pub use context::Context;
pub use edge::{Host, ProductionHost};
pub use error::CharmError;
pub use intent::Intent;

use crate::juju::event::Event;

/// Run `event` through the pipeline with the production host.
pub fn dispatch(ctx: &Context<'_>, event: &Event) -> Result<(), CharmError> {
    tracing::debug!(event = %event, "handling event");
    let result = run(ctx, &ProductionHost::new(ctx), &Intent::of(event));
    crate::github::calls::log_process_counts();
    result
}

/// observe -> decide -> act -> report, for one intent. Config and unit state are read at
/// most once ([`observe::OnceReads`]).
pub fn run(ctx: &Context<'_>, host: &dyn Host, intent: &Intent) -> Result<(), CharmError> {
    let tools = observe::OnceReads::new(ctx.tools);
    let ctx = &Context {
        tools: &tools,
        hook: ctx.hook,
        paths: ctx.paths,
    };
    let seen = observe::observe(ctx, host, intent)?;
    let decision = decide::decide(intent, seen);
    let outcome = act::act(ctx, host, decision, intent.is_action())?;
    report::report(ctx, intent, outcome)
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::juju::context::HookContext;
    use crate::juju::memory::MemoryHookTools;
    use crate::juju::state::string_map;
    use crate::paths::HostPaths;

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

#[cfg(test)]
mod tests;
