//! Stage 3, act: the decided effects, in order. Runner work happens under the unit lock
//! (`runners`); the fleet is observed there, by the manager, so the listing is never stale.
//! What the operator reads (status, action results, metrics) is left to `report` in the
//! [`Outcome`]; only progress (a Maintenance status while a step runs, action-log lines)
//! is shown as it happens.

pub mod actions;
pub mod host;
pub mod legacy;
pub mod reactive;
pub mod runners;
pub mod scaleset;

use std::sync::Arc;

use super::context::Context;
use super::decide::status::{message, ready_status, with_old_runners};
use super::decide::{
    self, runner_flush, runners_live_on_juju_storage, runners_predate_boot, ConvergePlan, Decision,
    RunnerFlush, TearDownPlan,
};
use super::edge::Host;
use super::error::CharmError;
use super::intent::{BinaryStep, Converge, FlushWhen, Nothing, RunnerStep};
use super::runtime::Runtime;
use crate::clock::Clock;
use crate::host::metrics::MetricEvent;
use crate::juju::event::Action;
use crate::juju::state::UnitState;
use crate::juju::Status;
use crate::manager::flush::FlushMode;
use crate::manager::status::update_dependencies_results;
use crate::messages;
use crate::paths::HostPaths;
use actions::{ActionError, ActionResults};

/// What the hook leaves for `report`.
#[derive(Default)]
pub struct Outcome {
    pub shown: Shown,
    /// An action's results or why it failed.
    pub action: Option<Result<ActionResults, ActionError>>,
    pub metric: Option<RoundMetric>,
    /// The reconcile round, when one ran.
    pub round: Option<Box<runners::ReconcileRun>>,
}

/// The unit's status at the end of the hook.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Shown {
    /// Left as it is.
    #[default]
    Unchanged,
    Set(Status),
    /// Set, and kept in unit state so update-status can show it again without GitHub.
    Remember(Status),
}

/// The `reconciliation` metric of the round, with where and when to write it.
pub struct RoundMetric {
    pub event: MetricEvent,
    pub paths: HostPaths,
    pub clock: Arc<dyn Clock>,
}

impl Outcome {
    fn shown(shown: Shown) -> Outcome {
        Outcome {
            shown,
            ..Outcome::default()
        }
    }

    /// `shown`, and for an action a failure saying the same.
    fn not_ready(shown: Shown, in_action: bool) -> Outcome {
        let failure = match &shown {
            Shown::Set(s) | Shown::Remember(s) => message(s).to_string(),
            Shown::Unchanged => String::new(),
        };
        Outcome {
            shown,
            action: in_action.then_some(Err(ActionError::NotReady(failure))),
            ..Outcome::default()
        }
    }

    fn action(result: Result<ActionResults, ActionError>) -> Outcome {
        Outcome {
            action: Some(result),
            ..Outcome::default()
        }
    }
}

/// Stage 3: carry `decision` out. `in_action`: a failure is the action's (action-fail),
/// not the hook's.
pub fn act(
    ctx: &Context<'_>,
    host: &dyn Host,
    decision: Decision,
    in_action: bool,
) -> Result<Outcome, CharmError> {
    match decision {
        Decision::Nothing(why) => {
            note(&why);
            Ok(Outcome::default())
        }
        Decision::RequestQueue => {
            let relation_id = ctx
                .hook
                .relation
                .as_ref()
                .map_or("", |r| r.relation_id.as_str());
            crate::reactive::relation::publish_request(ctx.tools, relation_id)?;
            Ok(Outcome::default())
        }
        Decision::Refuse(refusal) => {
            let shown = if refusal.remember {
                Shown::Remember(refusal.status)
            } else {
                Shown::Set(refusal.status)
            };
            Ok(Outcome::not_ready(shown, in_action))
        }
        Decision::ReportOnly { status, config } => {
            host::repair_timer(ctx, &config, host.edges().systemd());
            let status = scaleset::report_status(ctx, &config, &status)
                .or_else(|| reactive::report_status(ctx, config.virtual_machines, &status))
                .unwrap_or(status);
            Ok(Outcome::shown(Shown::Set(status)))
        }
        Decision::TearDown(plan) => tear_down(ctx, host, plan).map(|()| Outcome::default()),
        Decision::UnknownAction(name) => Ok(Outcome::action(Err(ActionError::Unknown(name)))),
        Decision::CheckRunners(config) => with_runtime(ctx, host, config, in_action, |rt| {
            Ok(Outcome::action(actions::check_runners(&rt).map(
                |mut results| {
                    results.extend(reactive::check_results(&rt).unwrap_or_default());
                    results.extend(scaleset::check_results(&rt).unwrap_or_default());
                    results
                },
            )))
        }),
        Decision::UpdateDependencies(config) => with_runtime(ctx, host, config, in_action, |rt| {
            catch(update_dependencies(ctx, &rt), in_action)
        }),
        Decision::Converge(plan) => {
            let in_action = plan.steps.action.is_some();
            catch(converge(ctx, host, *plan), in_action)
        }
    }
}

/// In an action, a failure of the hook's machinery (the lock, a hook tool) fails the
/// action with its text instead of the hook.
fn catch(result: Result<Outcome, CharmError>, in_action: bool) -> Result<Outcome, CharmError> {
    match result {
        Err(e) if in_action => Ok(Outcome::action(Err(ActionError::Charm(e)))),
        other => other,
    }
}

fn note(why: &Nothing) {
    match why {
        Nothing::Leadership(event) => {
            tracing::debug!("{event}: units manage their own runners; nothing to do")
        }
        Nothing::Relation { endpoint, event } => {
            tracing::debug!(event = *event, "{endpoint}: not used yet")
        }
        Nothing::UnknownHook(name) => {
            tracing::info!(hook = %name, "no handler for this hook; nothing to do")
        }
        Nothing::Unrecognised(path) => tracing::warn!(
            dispatch_path = %path,
            "JUJU_DISPATCH_PATH names no hook, action or custom event; nothing to do"
        ),
    }
}

/// `work` with the runtime for `config`, or the outcome that says why there is none.
fn with_runtime(
    ctx: &Context<'_>,
    host: &dyn Host,
    config: crate::config::CharmConfig,
    in_action: bool,
    work: impl FnOnce(Runtime) -> Result<Outcome, CharmError>,
) -> Result<Outcome, CharmError> {
    match host.runtime(ctx, config) {
        Ok(rt) => work(rt),
        Err(err) => Ok(Outcome::not_ready(
            Shown::Remember(decide::runtime_error_status(&err)),
            in_action,
        )),
    }
}

/// Host, binary, runners, in that order; any step that finds the unit not ready ends it
/// with the status that says why.
fn converge(ctx: &Context<'_>, host: &dyn Host, plan: ConvergePlan) -> Result<Outcome, CharmError> {
    let ConvergePlan {
        config,
        state,
        steps,
        install_lxd,
        scope_flush,
    } = plan;
    let in_action = steps.action.is_some();
    if let Some(announce) = steps.announce {
        ctx.tools
            .status_set(&Status::Maintenance(announce.into()))?;
    }
    if install_lxd {
        if let Some(shown) = host::install_lxd(ctx, host)? {
            return Ok(Outcome::shown(shown));
        }
    }
    with_runtime(ctx, host, config, in_action, |rt| {
        converge_with(ctx, host, &rt, state, steps, scope_flush)
    })
}

/// The converge once the runtime is there.
fn converge_with(
    ctx: &Context<'_>,
    host: &dyn Host,
    rt: &Runtime,
    state: UnitState,
    steps: Converge,
    scope_flush: Vec<&'static str>,
) -> Result<Outcome, CharmError> {
    if let Some(when) = steps.host {
        if let Some(shown) = host::ensure_host(ctx, host, rt, when)? {
            return Ok(Outcome::shown(shown));
        }
    }

    let mut notes = Vec::new();
    let mut binary_changed_flush = None;
    if let BinaryStep::Check {
        only_when_due,
        flush_idle_on_change,
    } = steps.binary
    {
        let check = if only_when_due {
            host::periodic_binary_check(ctx, rt, &state)?
        } else {
            host::check_runner_binary(ctx, rt)?
        };
        notes.extend(check.problem);
        if check.changed && flush_idle_on_change {
            binary_changed_flush = Some(FlushMode::FlushIdle);
        }
    }

    match steps.runners {
        RunnerStep::Leave => {
            let shown = match notes.into_iter().next() {
                Some(problem) => Shown::Remember(problem),
                None => Shown::Set(ready_status(Some(&UnitState::load(ctx.tools)?))),
            };
            Ok(Outcome::shown(shown))
        }
        RunnerStep::Reconcile {
            flush,
            scope,
            announce,
        } => {
            let round = Round {
                flush,
                scope,
                announce,
                action: steps.action,
                scope_flush,
                binary_changed_flush,
                notes,
            };
            converge_runners(ctx, host, rt, round)
        }
    }
}

/// The runner part of a converge, with what the earlier steps found.
#[derive(Debug, Clone, Default)]
pub(crate) struct Round {
    pub flush: FlushWhen,
    pub scope: bool,
    pub announce: Option<&'static str>,
    pub action: Option<Action>,
    /// The scope options that changed (decided): flush the old fleet with the old
    /// credentials.
    pub scope_flush: Vec<&'static str>,
    /// The runner binary changed and the intent flushes idle runners for it.
    pub binary_changed_flush: Option<FlushMode>,
    /// Statuses that also hold (a failed binary update); the worst one is shown.
    pub notes: Vec<Status>,
}

/// The flush the round asks for, then a reconcile, under one lock; then the record of
/// what was acted on, and an action's results.
pub(crate) fn converge_runners(
    ctx: &Context<'_>,
    host: &dyn Host,
    rt: &Runtime,
    round: Round,
) -> Result<Outcome, CharmError> {
    let Round {
        flush: flush_when,
        scope,
        announce,
        action,
        scope_flush,
        binary_changed_flush,
        notes,
    } = round;
    if let Some(announce) = announce {
        ctx.tools
            .status_set(&Status::Maintenance(announce.into()))?;
    }
    if let Some(action) = action {
        actions::log_line(ctx, &start_line(action, flush_when));
    }
    // The Python charm's runners drained (and what it left removed) before this charm's
    // round, in every mode: admission counts them while they exist.
    let old_runners = legacy::take_over(ctx, host, rt)?;
    // Scale-set mode first: entering it stops reactive workers, leaving it stops the
    // listener before the reactive or pull round.
    if let Some(round) = scaleset::converge(ctx, rt, action, &scope_flush)? {
        if scope && round.scope_flushed {
            runners::record_acted(ctx, rt)?;
        }
        return Ok(Outcome {
            shown: Shown::Remember(with_old_runners(round.status.clone(), old_runners)),
            action: action.map(|_| Ok(scaleset::action_results(&round))),
            ..Outcome::default()
        });
    }
    if let Some(reactive::ReactiveConverge {
        round,
        scope_flushed,
    }) = reactive::converge(ctx, rt, action, &scope_flush)?
    {
        // Every mode records the scope it acted on: a later pull round compares with it.
        if scope && scope_flushed {
            runners::record_acted(ctx, rt)?;
        }
        return Ok(Outcome {
            shown: Shown::Remember(with_old_runners(round.status.clone(), old_runners)),
            action: action.map(|_| Ok(reactive::action_results(&round))),
            ..Outcome::default()
        });
    }
    let own = match flush_when {
        FlushWhen::Never => None,
        FlushWhen::Always(mode) => Some(mode),
        FlushWhen::IfRunnersPredateBoot(mode) => {
            let suspect = match rt.lxd.list_owned_instances(&rt.identity.owner_value()) {
                Ok(instances) => {
                    let created: Vec<u64> = instances.iter().map(|i| i.created_at_epoch).collect();
                    runners_predate_boot(&created, host.boot_time_epoch())
                }
                // Cannot tell: flush as the Python charm always did.
                Err(_) => true,
            };
            suspect.then_some(mode)
        }
    };

    let flush = runner_flush(&scope_flush, binary_changed_flush, own);
    let (flushed, mut run, acted) = actions::with_progress(ctx, action.is_some(), |progress| {
        Ok::<_, CharmError>(match &flush {
            RunnerFlush::None => (None, runners::reconcile(rt, &notes, progress)?, true),
            RunnerFlush::Current(mode) => {
                if binary_changed_flush.is_some() {
                    tracing::info!("runner binary changed: flushing idle runners");
                }
                let scope = runners::own_scope(rt);
                let (flushed, run) =
                    runners::flush_then_reconcile(rt, *mode, &scope, rt, &notes, progress)?;
                (Some(flushed), run, false)
            }
            RunnerFlush::OldScope(changed) => {
                let (flushed, run) =
                    runners::scope_flush_then_reconcile(ctx, rt, changed, &notes, progress)?;
                let acted = flushed.result.is_ok();
                (Some(flushed), run, acted)
            }
        })
    })?;
    run.status = with_old_runners(run.status, old_runners);
    // What was acted on is recorded only once the old fleet went, so a failed flush is
    // retried by the next config-changed or periodic reconcile.
    if scope && acted {
        runners::record_acted(ctx, rt)?;
    }

    let action = action.map(|action| {
        let flushed_ok = match (action, &flushed) {
            (Action::FlushRunners, Some(flushed)) => actions::flush_results(ctx, flushed),
            _ => Ok(()),
        };
        flushed_ok.and_then(|()| actions::reconcile_action_results(ctx, rt, &run))
    });
    let metric = run.metric.clone().map(|event| RoundMetric {
        event,
        paths: rt.paths.clone(),
        clock: rt.clock.clone(),
    });
    Ok(Outcome {
        shown: Shown::Remember(run.status.clone()),
        action,
        metric,
        round: Some(Box::new(run)),
    })
}

/// The first action-log line of a converging action.
fn start_line(action: Action, flush: FlushWhen) -> String {
    match (action, flush) {
        (Action::FlushRunners, FlushWhen::Always(mode)) => {
            messages::flushing_then_reconciling(mode)
        }
        _ => messages::RECONCILING.to_string(),
    }
}

/// update-dependencies: the runner binary check; idle runners flushed when it changed.
fn update_dependencies(ctx: &Context<'_>, rt: &Runtime) -> Result<Outcome, CharmError> {
    let binary = host::check_runner_binary(ctx, rt)?;
    if let Some(problem) = binary.problem {
        return Ok(Outcome::not_ready(Shown::Remember(problem), true));
    }
    if binary.changed {
        actions::log_line(ctx, messages::BINARY_UPDATED_FLUSHING);
        let flushed = runners::flush(rt, FlushMode::FlushIdle)?;
        let outcome = match flushed.result {
            Ok(outcome) => outcome,
            Err(e) => return Ok(Outcome::action(Err(ActionError::Flush(e)))),
        };
        if let Some(failures) = outcome.report.failure_summary() {
            // The runners on the old binary stay; the next reconcile replaces idle ones.
            let shown = Status::Maintenance(messages::BINARY_UPDATED_FLUSH_FAILED.into());
            return Ok(Outcome {
                shown: Shown::Remember(shown),
                action: Some(Err(ActionError::FlushIncomplete(failures))),
                ..Outcome::default()
            });
        }
    }
    Ok(Outcome::action(Ok(update_dependencies_results(
        binary.changed,
    ))))
}

/// stop, remove, storage detaching: the local steps, then every runner (busy ones too).
fn tear_down(ctx: &Context<'_>, host: &dyn Host, plan: TearDownPlan) -> Result<(), CharmError> {
    let TearDownPlan {
        steps,
        config,
        host_was_set_up,
    } = plan;
    if steps.remove_timer {
        host::remove_timer(ctx, host);
    }
    reactive::tear_down(ctx);
    scaleset::tear_down(ctx);
    if steps.remove_rebuild_cron {
        host::remove_rebuild_cron(ctx);
    }
    let Some(config) = config else {
        if steps.unit_removed {
            host::remove_unit_files(ctx);
        }
        if host_was_set_up {
            tracing::warn!(
                "invalid configuration: the runners cannot be removed from GitHub; \
                 fix the configuration or delete them by hand"
            );
        } else {
            tracing::debug!("invalid configuration and no host set up: nothing to remove");
        }
        return Ok(());
    };
    let rt = match host.runtime(ctx, config) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!("cannot reach the runners to remove them: {e}");
            if steps.unit_removed {
                host::remove_unit_files(ctx);
            }
            return Ok(());
        }
    };
    if steps.only_on_juju_storage && !runners_live_on_juju_storage(rt.config.runner_storage) {
        return Ok(());
    }
    ctx.tools
        .status_set(&Status::Maintenance(steps.announce.into()))?;
    let run = runners::flush(&rt, FlushMode::FlushBusy)?;
    match &run.result {
        Ok(outcome) => tracing::info!(
            removed = outcome.report.removed.len(),
            failed = outcome.report.failed.len(),
            "runners taken down"
        ),
        Err(e) => tracing::warn!("taking the runners down failed: {e}"),
    }
    legacy::remove_every_old_runner(&rt);
    if steps.unit_removed {
        for left in crate::scaleset::run::delete_held_scale_sets(&rt) {
            tracing::warn!("{left}");
        }
        // Profiles first: the runner profile's NIC keeps a bridge the charm made in use.
        let left = crate::runner::resources::remove_charm_leftovers(&*rt.lxd, &rt.storage_pool);
        tracing::info!(profiles = ?left.profiles, pool = left.pool, "LXD objects removed");
        host::remove_runner_network(ctx, host);
        host::remove_unit_files(ctx);
    }
    Ok(())
}

#[cfg(test)]
#[path = "runners_tests.rs"]
mod runners_tests;
