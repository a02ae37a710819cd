//! The four actions, with the Python charm's result keys (built by `manager::status`). Each
//! fails with a readable message through action-fail (exit 0), so the operator sees why in
//! `juju run` output instead of "exit status 1". Long ones report progress with action-log.

use super::fleet::CharmRunnerOps;
use super::reconcile::{self, lock_wait_note, Options, ProgressSink, ReconcileRun};
use super::runtime::Runtime;
use super::{status, CharmError, Context};
use crate::config::{CharmConfig, ConfigError};
use crate::juju::event::Action;
use crate::juju::state::UnitState;
use crate::juju::{HookToolError, Status};
use crate::manager::executor::Progress;
use crate::manager::flush::{FlushError, FlushMode};
use crate::manager::ops::{OpError, RunnerOps};
use crate::manager::reconcile::ReconcileError;
use crate::manager::status::{
    check_runners_results, reconcile_results, update_dependencies_results,
};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// The unit cannot act (guard, LXD missing, unusable GitHub URL): the status says so.
    #[error("{0}")]
    NotReady(String),
    #[error("could not list the runners: {0}")]
    Observe(OpError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Flush(#[from] FlushError),
    #[error("the runner binary was updated, but flushing the idle runners failed: {0}")]
    FlushIncomplete(String),
    #[error(transparent)]
    Charm(#[from] CharmError),
    #[error("unknown action {0:?}: this charm's actions are check-runners, reconcile-runners, flush-runners and update-dependencies")]
    Unknown(String),
    #[error(transparent)]
    HookTool(#[from] HookToolError),
}

/// Action results: dotted keys (`delta.virtual-machines`) to string values.
pub type ActionResults = BTreeMap<String, String>;

pub fn run(ctx: &Context<'_>, action: Action) -> Result<(), CharmError> {
    let result = runtime(ctx).and_then(|rt| run_with(ctx, &rt, action));
    finish(ctx, result)
}

/// Run `action` with a ready runtime (tests pass one over fakes).
pub fn run_with(
    ctx: &Context<'_>,
    rt: &Runtime,
    action: Action,
) -> Result<ActionResults, ActionError> {
    match action {
        Action::CheckRunners => check_runners(rt),
        Action::ReconcileRunners => reconcile_runners(ctx, rt),
        Action::FlushRunners => flush_runners(ctx, rt),
        Action::UpdateDependencies => update_dependencies(ctx, rt),
    }
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

/// Config, guards and the runtime; a problem sets the status and fails the action.
fn runtime(ctx: &Context<'_>) -> Result<Runtime, ActionError> {
    let config = require_config(ctx)?;
    let state = UnitState::load(ctx.tools)?;
    if let Some(blocked) = reconcile::guard_status(ctx, &config, &state) {
        status::set_and_remember(ctx, &blocked)?;
        return Err(ActionError::NotReady(message(&blocked)));
    }
    Runtime::new(ctx, config).map_err(|err| {
        let shown = reconcile::runtime_error_status(&err);
        match status::set_and_remember(ctx, &shown) {
            Ok(()) => ActionError::NotReady(message(&shown)),
            Err(e) => e.into(),
        }
    })
}

fn message(status: &Status) -> String {
    match status {
        Status::Maintenance(m) | Status::Blocked(m) | Status::Waiting(m) | Status::Active(m) => {
            m.clone()
        }
    }
}

/// Runs `work` with a progress sink that forwards each finished operation to action-log as
/// it happens (the executor's worker threads call it).
fn with_action_log<R>(ctx: &Context<'_>, work: impl FnOnce(ProgressSink<'_>) -> R) -> R {
    let tools = ctx.tools;
    let log = move |p: &Progress| {
        // Progress is a courtesy: a failing action-log must not fail the work.
        if let Err(e) = tools.action_log(&p.to_string()) {
            tracing::debug!("action-log failed: {e}");
        }
    };
    work(&log)
}

fn log_line(ctx: &Context<'_>, line: &str) {
    if let Err(e) = ctx.tools.action_log(line) {
        tracing::debug!("action-log failed: {e}");
    }
}

/// check-runners: {online, offline, unknown, runners}.
fn check_runners(rt: &Runtime) -> Result<ActionResults, ActionError> {
    let ops = CharmRunnerOps::new(rt);
    let observation = ops.observe().map_err(ActionError::Observe)?;
    let github = observation.github.map_err(ActionError::Observe)?;
    Ok(check_runners_results(&github, &observation.instances))
}

/// The results of a finished reconcile: delta plus a fresh check, or the round's error.
fn reconcile_action_results(
    ctx: &Context<'_>,
    rt: &Runtime,
    run: ReconcileRun,
) -> Result<ActionResults, ActionError> {
    if let Some(note) = lock_wait_note(run.lock_waited_secs) {
        log_line(ctx, &note);
    }
    let outcome = run.result?;
    log_line(
        ctx,
        &format!(
            "reconciled: {} created, {} removed, {} failed",
            outcome.report.created.len(),
            outcome.report.removed.len(),
            outcome.report.failed.len()
        ),
    );
    let check = check_runners(rt)?;
    Ok(reconcile_results(outcome.plan.delta(), check))
}

/// reconcile-runners: runner binary check + reconcile; delta.virtual-machines + check keys.
fn reconcile_runners(ctx: &Context<'_>, rt: &Runtime) -> Result<ActionResults, ActionError> {
    log_line(ctx, "reconciling runners");
    let run = with_action_log(ctx, |progress| {
        reconcile::run_periodic_with(ctx, rt, progress)
    })?;
    reconcile_action_results(ctx, rt, run)
}

/// flush-runners: FLUSH_BUSY_WAIT_REPO_CHECK, then reconcile; the reconcile-runners keys.
fn flush_runners(ctx: &Context<'_>, rt: &Runtime) -> Result<ActionResults, ActionError> {
    let mode = FlushMode::FlushBusyWaitRepoCheck;
    log_line(ctx, &format!("flushing runners ({mode}), then reconciling"));
    let (flushed, reconciled) = with_action_log(ctx, |progress| {
        let options = Options {
            progress,
            notes: Vec::new(),
        };
        reconcile::flush_then_reconcile(ctx, rt, mode, rt, &options)
    })?;
    let flush = flushed.result?;
    if flush.wait_exhausted {
        log_line(
            ctx,
            &format!(
                "busy runners were still in their pre-job phase after {} s; flushed anyway",
                flush.waited.as_secs()
            ),
        );
    }
    reconcile_action_results(ctx, rt, reconciled)
}

/// update-dependencies: the runner binary check; flush idle runners when it changed.
fn update_dependencies(ctx: &Context<'_>, rt: &Runtime) -> Result<ActionResults, ActionError> {
    let binary = reconcile::check_runner_binary(ctx, rt)?;
    if let Some(problem) = &binary.problem {
        status::set_and_remember(ctx, problem)?;
        return Err(ActionError::NotReady(message(problem)));
    }
    if binary.changed {
        log_line(ctx, "runner binary updated: flushing idle runners");
        let flushed = reconcile::flush(ctx, rt, FlushMode::FlushIdle)?;
        if let Some(failures) = flushed.result?.report.failure_summary() {
            // The runners on the old binary stay; the next reconcile replaces idle ones.
            let shown = Status::Maintenance(
                "runner binary updated, but flushing the idle runners failed; the next reconcile replaces them".into(),
            );
            status::set_and_remember(ctx, &shown)?;
            return Err(ActionError::FlushIncomplete(failures));
        }
    }
    Ok(update_dependencies_results(binary.changed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charm::fake_world::FakeWorld;
    use crate::charm::testing::{hook_context, run as run_event};
    use crate::juju::event::Event;
    use crate::juju::memory::MemoryHookTools;
    use crate::paths::HostPaths;

    fn in_action() -> MemoryHookTools {
        let tools = MemoryHookTools::default();
        tools.lock().action_params = Some(Default::default());
        tools
    }

    struct Setup {
        tools: MemoryHookTools,
        world: FakeWorld,
        root: tempfile::TempDir,
    }

    impl Setup {
        fn new() -> Self {
            let tools = in_action();
            // The tarball GitHub lists is the one in place: no download.
            tools.lock().unit_state.insert(
                crate::github::download::STATE_URL_KEY.into(),
                crate::charm::fake_world::RUNNER_URL.into(),
            );
            Setup {
                tools,
                world: FakeWorld::new(),
                root: tempfile::tempdir().unwrap(),
            }
        }

        fn act(&self, action: Action, vms: u32) -> Result<ActionResults, ActionError> {
            self.world
                .as_unit(&self.tools, self.root.path(), vms, |ctx, rt| {
                    run_with(ctx, rt, action)
                })
        }
    }

    fn get<'r>(r: &'r ActionResults, k: &str) -> &'r str {
        r.get(k).map(String::as_str).unwrap_or("<missing>")
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
    fn reconcile_runners_reports_the_delta_and_the_check_keys() {
        let s = Setup::new();
        let results = s.act(Action::ReconcileRunners, 3).unwrap();
        assert_eq!(get(&results, "delta.virtual-machines"), "3");
        // Just created: registered, offline on GitHub.
        assert_eq!(get(&results, "online"), "0");
        assert_eq!(get(&results, "offline"), "3");
        assert_eq!(get(&results, "unknown"), "0");
        assert_eq!(s.world.instance_names().len(), 3);
        let logs = s.tools.lock().action_logs.clone();
        assert!(
            logs.iter().filter(|l| l.contains("created")).count() >= 3,
            "{logs:?}"
        );
        // Steady state: nothing to do.
        s.world.bring_online();
        let again = s.act(Action::ReconcileRunners, 3).unwrap();
        assert_eq!(get(&again, "delta.virtual-machines"), "0");
        assert_eq!(get(&again, "online"), "3");
        let names = get(&again, "runners");
        assert_eq!(names.split(", ").count(), 3, "{names}");
        assert!(
            matches!(s.tools.statuses().last(), Some(Status::Active(m)) if m.starts_with("3/3 runners: 3 idle"))
        );
    }

    #[test]
    fn check_runners_counts_without_changing_anything() {
        let s = Setup::new();
        s.act(Action::ReconcileRunners, 2).unwrap();
        s.world.bring_online();
        let before = s.world.instance_names();
        let results = s.act(Action::CheckRunners, 5).unwrap();
        assert_eq!(get(&results, "online"), "2");
        assert_eq!(get(&results, "offline"), "0");
        assert!(!results.contains_key("delta.virtual-machines"));
        assert_eq!(s.world.instance_names(), before);
    }

    #[test]
    fn flush_runners_replaces_every_runner() {
        let s = Setup::new();
        s.act(Action::ReconcileRunners, 2).unwrap();
        s.world.bring_online();
        let before = s.world.instance_names();
        let results = s.act(Action::FlushRunners, 2).unwrap();
        let after = s.world.instance_names();
        assert_eq!(after.len(), 2);
        assert!(
            after.iter().all(|n| !before.contains(n)),
            "{before:?} {after:?}"
        );
        assert_eq!(get(&results, "delta.virtual-machines"), "2");
        assert_eq!(s.world.runner_names(), after);
    }

    #[test]
    fn github_refusing_the_token_fails_the_action_and_blocks() {
        let s = Setup::new();
        s.world.lock().valid_tokens.clear();
        let err = s.act(Action::ReconcileRunners, 1).unwrap_err().to_string();
        assert!(err.contains("401") || err.contains("token"), "{err}");
        assert!(matches!(
            s.tools.statuses().last(),
            Some(Status::Blocked(_))
        ));
        assert!(s.world.instance_names().is_empty());
        assert!(s.act(Action::CheckRunners, 1).is_err());
    }

    #[test]
    fn update_dependencies_reports_no_flush_when_nothing_changed() {
        let s = Setup::new();
        let results = s.act(Action::UpdateDependencies, 1).unwrap();
        assert_eq!(get(&results, "flush"), "False");
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
