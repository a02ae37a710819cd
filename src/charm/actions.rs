//! The four actions. Each fails with a readable message through action-fail (exit 0), so
//! the operator sees why in `juju run` output instead of "exit status 1".

use super::{status, CharmError, Context};
use crate::config::{CharmConfig, ConfigError};
use crate::juju::event::Action;
use crate::juju::{HookToolError, Status};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// Replaced by the real handlers once the runner manager exists.
    #[error("runner manager unavailable: this charm build cannot {0} yet")]
    ManagerUnavailable(&'static str),
    #[error("unknown action {0:?}: this charm's actions are check-runners, reconcile-runners, flush-runners and update-dependencies")]
    Unknown(String),
    #[error(transparent)]
    HookTool(#[from] HookToolError),
}

/// Action results: dotted keys (`delta.virtual-machines`) to string values.
pub type ActionResults = BTreeMap<String, String>;

pub fn run(ctx: &Context<'_>, action: Action) -> Result<(), CharmError> {
    let result = match action {
        Action::CheckRunners => check_runners(ctx),
        Action::ReconcileRunners => reconcile_runners(ctx),
        Action::FlushRunners => flush_runners(ctx),
        Action::UpdateDependencies => update_dependencies(ctx),
    };
    finish(ctx, result)
}

pub fn unknown(ctx: &Context<'_>, name: &str) -> Result<(), CharmError> {
    finish(ctx, Err(ActionError::Unknown(name.to_string())))
}

/// action-set the results, or action-fail with the error. Only a failing action-fail
/// fails the hook.
fn finish(ctx: &Context<'_>, result: Result<ActionResults, ActionError>) -> Result<(), CharmError> {
    let error = match result {
        Ok(results) => match ctx.tools.action_set(&results) {
            Ok(()) => return Ok(()),
            Err(e) => ActionError::HookTool(e),
        },
        Err(e) => e,
    };
    ctx.tools.action_fail(&error.to_string())?;
    Ok(())
}

/// The valid config, or Blocked + the config error (as the Python charm does).
fn require_config(ctx: &Context<'_>) -> Result<CharmConfig, ActionError> {
    match status::read_config(ctx)? {
        Ok(config) => Ok(config),
        Err(problems) => {
            ctx.tools
                .status_set(&Status::Blocked(problems.to_string()))?;
            Err(problems.into())
        }
    }
}

fn check_runners(ctx: &Context<'_>) -> Result<ActionResults, ActionError> {
    let _config = require_config(ctx)?;
    Err(ActionError::ManagerUnavailable("check runners"))
}

fn reconcile_runners(ctx: &Context<'_>) -> Result<ActionResults, ActionError> {
    let _config = require_config(ctx)?;
    Err(ActionError::ManagerUnavailable("reconcile runners"))
}

fn flush_runners(ctx: &Context<'_>) -> Result<ActionResults, ActionError> {
    let _config = require_config(ctx)?;
    Err(ActionError::ManagerUnavailable("flush runners"))
}

fn update_dependencies(ctx: &Context<'_>) -> Result<ActionResults, ActionError> {
    let _config = require_config(ctx)?;
    Err(ActionError::ManagerUnavailable("update dependencies"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charm::testing::{hook_context, run as run_event, valid_config};
    use crate::juju::event::Event;
    use crate::juju::memory::MemoryHookTools;
    use crate::paths::HostPaths;

    fn in_action() -> MemoryHookTools {
        let tools = MemoryHookTools::default();
        tools.lock().action_params = Some(Default::default());
        tools
    }

    #[test]
    fn invalid_config_blocks_and_fails_the_action() {
        for action in Action::ALL {
            let tools = in_action();
            run_event(&tools, &Event::Action(action)).unwrap();
            let failure = tools.lock().action_failure.clone().unwrap();
            assert!(
                failure.starts_with("invalid config: path: missing"),
                "{failure}"
            );
            assert!(matches!(&tools.statuses()[..], [Status::Blocked(_)]));
        }
    }

    #[test]
    fn valid_config_reports_the_missing_manager() {
        for action in Action::ALL {
            let tools = in_action();
            valid_config(&tools);
            run_event(&tools, &Event::Action(action)).unwrap();
            let failure = tools.lock().action_failure.clone().unwrap();
            assert!(
                failure.starts_with("runner manager unavailable"),
                "{failure}"
            );
            assert!(tools.statuses().is_empty());
        }
    }

    #[test]
    fn unknown_action_fails_with_the_list() {
        let tools = in_action();
        run_event(&tools, &Event::UnknownAction("dance".into())).unwrap();
        let failure = tools.lock().action_failure.clone().unwrap();
        assert!(
            failure.contains("\"dance\"") && failure.contains("check-runners"),
            "{failure}"
        );
    }

    #[test]
    fn a_rejected_result_becomes_an_action_failure() {
        let tools = in_action();
        let hook = hook_context();
        let paths = HostPaths::new("/x");
        let ctx = Context {
            tools: &tools,
            hook: &hook,
            paths: &paths,
        };
        let results = BTreeMap::from([("Bad Key".to_string(), "1".to_string())]);
        finish(&ctx, Ok(results)).unwrap();
        let failure = tools.lock().action_failure.clone().unwrap();
        assert!(
            failure.contains("invalid action result key \"Bad Key\""),
            "{failure}"
        );
    }

    #[test]
    fn only_a_failing_action_fail_fails_the_hook() {
        let tools = in_action();
        tools.fail_tool("action-fail", 1, "ERROR not running an action");
        assert!(run_event(&tools, &Event::Action(Action::CheckRunners)).is_err());
    }
}
