//! Stage 2, decide: pure functions from what was observed to what must happen. No effect,
//! no hook tool, no clock: everything here is a table test away.
//!
//! [`decide`] turns an intent and its observations into a [`Decision`]: refuse (invalid
//! configuration, a guard), report only, converge (host needs, the runner binary check, the
//! flush, the desired runners for the mode), or tear down. The decisions `act` takes between
//! its effects (a binary that changed, runners older than the boot, the status a round
//! leaves) are functions here too, so `act` only sequences.

pub mod mode;
pub mod status;

use std::time::Duration;

use super::intent::{Converge, FlushWhen, Intent, Nothing, RunnerStep, TearDown};
use super::observe::Observed;
use super::runtime::RuntimeError;
use super::setup;
use crate::config::{CharmConfig, RunnerStorage};
use crate::host::metrics::{MetricEvent, Reconciliation};
use crate::juju::state::{ActedScope, UnitState};
use crate::juju::Status;
use crate::lxd::LxdError;
use crate::manager::flush::FlushMode;
use crate::manager::planner::RemovalReason;
use crate::manager::reconcile::ReconcileOutcome;
use crate::manager::status::Census;
use crate::messages;
use crate::runner::guards::{self, DeploySettings};

/// What the hook does.
#[derive(Debug)]
pub enum Decision {
    /// Nothing to do: noted in the log.
    Nothing(Nothing),
    /// The leader's request on the mongodb relation.
    RequestQueue,
    /// Nothing may be done: the status says why (an action fails with its text).
    Refuse(Refusal),
    /// update-status: show the remembered status; restart a dead timer.
    ReportOnly {
        status: Status,
        config: CharmConfig,
    },
    Converge(Box<ConvergePlan>),
    TearDown(TearDownPlan),
    CheckRunners(CharmConfig),
    UpdateDependencies(CharmConfig),
    UnknownAction(String),
}

/// A status instead of any work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: Status,
    /// Kept in unit state for update-status (a guard; not invalid configuration, which
    /// update-status finds again itself).
    pub remember: bool,
}

/// A converge with everything known before the first effect.
#[derive(Debug)]
pub struct ConvergePlan {
    pub config: CharmConfig,
    /// Unit state at the start of the hook.
    pub state: UnitState,
    pub steps: Converge,
    /// `lxc` is missing and the intent installs LXD first.
    pub install_lxd: bool,
    /// Scope options changed since the charm last acted: the old fleet is flushed with the
    /// old credentials first (empty: no such flush).
    pub scope_flush: Vec<&'static str>,
}

/// A tear-down with the configuration to do it with.
#[derive(Debug)]
pub struct TearDownPlan {
    pub steps: TearDown,
    /// None: the runners cannot be reached; only the local steps run.
    pub config: Option<CharmConfig>,
    /// Without a configuration: runners may be left behind (the log says so).
    pub host_was_set_up: bool,
}

/// Stage 2: what `intent` means given `seen`.
pub fn decide(intent: &Intent, seen: Observed) -> Decision {
    let force_flush = seen.force_flush;
    let ready = |seen: Observed| -> Result<(CharmConfig, UnitState, bool), Refusal> {
        let config = match seen.config {
            Some(Ok(config)) => config,
            Some(Err(problems)) => return Err(refuse_config(problems.to_string())),
            None => unreachable_config(),
        };
        let state = seen.state.unwrap_or_default();
        if let Some(problem) = guard_problem(
            seen.has_lxd_profile,
            &config,
            state.deploy_settings.as_ref(),
        ) {
            return Err(Refusal {
                status: Status::Blocked(problem),
                remember: true,
            });
        }
        Ok((config, state, seen.lxc_present))
    };
    match intent {
        Intent::Nothing(why) => Decision::Nothing(why.clone()),
        Intent::RequestQueue => Decision::RequestQueue,
        Intent::UnknownAction(name) => Decision::UnknownAction(name.clone()),
        Intent::TearDown(steps) => {
            let (config, host_was_set_up) = seen
                .teardown
                .map_or((None, false), |t| (t.config, t.host_was_set_up));
            Decision::TearDown(TearDownPlan {
                steps: *steps,
                config,
                host_was_set_up,
            })
        }
        Intent::ReportOnly => match seen.config {
            Some(Ok(config)) => Decision::ReportOnly {
                status: status::ready_status(seen.state.as_ref()),
                config,
            },
            Some(Err(problems)) => Decision::Refuse(refuse_config(problems.to_string())),
            None => unreachable_config(),
        },
        Intent::CheckRunners => match ready(seen) {
            Ok((config, _, _)) => Decision::CheckRunners(config),
            Err(refusal) => Decision::Refuse(refusal),
        },
        Intent::UpdateDependencies => match ready(seen) {
            Ok((config, _, _)) => Decision::UpdateDependencies(config),
            Err(refusal) => Decision::Refuse(refusal),
        },
        Intent::Converge(steps) => match ready(seen) {
            Ok((config, state, lxc_present)) => {
                let scope_flush = match steps.runners {
                    RunnerStep::Reconcile { scope: true, .. } => {
                        plan_change(&state, &config).flush_for
                    }
                    _ => Vec::new(),
                };
                Decision::Converge(Box::new(ConvergePlan {
                    install_lxd: steps.install_lxd_first && !lxc_present,
                    config,
                    state,
                    steps: with_forced_flush(steps.clone(), force_flush),
                    scope_flush,
                }))
            }
            Err(refusal) => Decision::Refuse(refusal),
        },
    }
}

/// `force=true` (flush-runners): its flush takes busy runners at once, jobs and all
/// (FLUSH_BUSY); otherwise they are replaced once their job ends.
pub fn with_forced_flush(mut steps: Converge, force: bool) -> Converge {
    if let RunnerStep::Reconcile {
        flush: flush @ FlushWhen::Always(_),
        ..
    } = &mut steps.runners
    {
        if force {
            *flush = FlushWhen::Always(FlushMode::FlushBusy);
        }
    }
    steps
}

fn refuse_config(problems: String) -> Refusal {
    Refusal {
        status: Status::Blocked(problems),
        remember: false,
    }
}

/// `observe` reads the configuration for every intent that needs one.
fn unreachable_config() -> ! {
    // Proven invariant: observe() fills `config` for ReportOnly, Converge and the actions.
    unreachable!("observe reads the configuration for this intent")
}

/// The guards: an lxd-profile.yaml outside test mode, or runner-storage/base-image changed
/// since deployment. `at_deploy` None: nothing recorded yet, nothing to compare.
pub fn guard_problem(
    has_lxd_profile: bool,
    config: &CharmConfig,
    at_deploy: Option<&DeploySettings>,
) -> Option<String> {
    if let Err(e) = guards::check_lxd_profile(has_lxd_profile, config.test_mode_insecure) {
        return Some(e.to_string());
    }
    let now = setup::deploy_settings(config);
    at_deploy
        .and_then(|d| guards::check_immutable(d, &now).err())
        .map(|e| e.to_string())
}

/// What the unit shows when the runtime cannot be built.
pub fn runtime_error_status(err: &RuntimeError) -> Status {
    match err {
        RuntimeError::Lxd(LxdError::LxcMissing) => {
            Status::Waiting(messages::waiting_for_lxd_install(err))
        }
        RuntimeError::Lxd(_) => Status::Waiting(messages::waiting_for_lxd(err)),
        RuntimeError::GitHub(_) | RuntimeError::Credential(_) => Status::Blocked(err.to_string()),
    }
}

/// What a configuration means for the runners, against what the charm last acted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChangePlan {
    /// Options whose change needs the old runners flushed with the old credentials.
    pub flush_for: Vec<&'static str>,
}

impl ConfigChangePlan {
    pub fn flushes(&self) -> bool {
        !self.flush_for.is_empty()
    }
}

/// Compare `config` with what `state` says the charm last acted on.
pub fn plan_change(state: &UnitState, config: &CharmConfig) -> ConfigChangePlan {
    ConfigChangePlan {
        // A new credential alone (PAT rotation, PAT <-> App, App key rotation) is no scope
        // change: nothing flushed (`ActedScope`).
        flush_for: state.acted_scope().changed_options(&ActedScope::of(config)),
    }
}

/// How often the periodic event asks GitHub for the latest runner binary. GitHub releases
/// a few a month and accepts a release for weeks after the next one, so hourly keeps
/// runners current while most rounds cost a single GitHub call (the listing).
pub const BINARY_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// Whether the periodic event checks the runner binary this round: always when none is in
/// place, else once per [`BINARY_CHECK_INTERVAL`] (a clock moved backwards counts as due).
pub fn binary_check_due(last_checked: Option<u64>, now: u64, binary_present: bool) -> bool {
    match last_checked {
        _ if !binary_present => true,
        None => true,
        Some(at) => now < at || now - at >= BINARY_CHECK_INTERVAL.as_secs(),
    }
}

/// True when some instance was created before the machine booted, or the boot time is
/// unknown (then assume the worst).
pub fn runners_predate_boot(created_at_epochs: &[u64], boot_epoch: Option<u64>) -> bool {
    match boot_epoch {
        None => !created_at_epochs.is_empty(),
        Some(boot) => created_at_epochs.iter().any(|&created| created < boot),
    }
}

/// Only runner-storage=juju-storage puts runner disks on the Juju storage.
pub fn runners_live_on_juju_storage(runner_storage: RunnerStorage) -> bool {
    runner_storage == RunnerStorage::JujuStorage
}

/// The flush before a reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerFlush {
    None,
    /// With the current credentials.
    Current(FlushMode),
    /// The old fleet, with the credentials it was made with (a scope change); what was
    /// acted on is recorded once it went through.
    OldScope(Vec<&'static str>),
}

/// The flush a converge does: a scope change flushes everything with the old credentials;
/// else a changed binary (when the intent asks) flushes idle runners; else the intent's own.
pub fn runner_flush(
    scope_flush: &[&'static str],
    binary_changed_flush: Option<FlushMode>,
    own: Option<FlushMode>,
) -> RunnerFlush {
    if !scope_flush.is_empty() {
        RunnerFlush::OldScope(scope_flush.to_vec())
    } else if let Some(mode) = binary_changed_flush.or(own) {
        RunnerFlush::Current(mode)
    } else {
        RunnerFlush::None
    }
}

/// The flush mode of a scope change: idle old runners go, busy ones are marked with the
/// old scope and kept until their job ends.
pub const SCOPE_FLUSH_MODE: FlushMode = FlushMode::ForceFlushWaitRepoCheck;

/// Runners found dead: listener down, or the instance stopped or in error.
pub fn crashed_runners(outcome: &ReconcileOutcome) -> u32 {
    outcome
        .plan
        .removals
        .iter()
        .filter(|r| {
            matches!(
                r.reason,
                RemovalReason::ListenerDown
                    | RemovalReason::NeverStarted
                    | RemovalReason::InstanceError
                    | RemovalReason::InstanceStopped
            )
        })
        .count() as u32
}

/// The `reconciliation` metric of a round.
pub fn reconciliation_event(flavor: &str, outcome: &ReconcileOutcome) -> MetricEvent {
    MetricEvent::Reconciliation(Reconciliation {
        flavor: flavor.to_string(),
        crashed_runners: crashed_runners(outcome),
        idle_runners: Census::after(&outcome.plan, &outcome.report).idle,
        duration: outcome.duration_secs as f64,
    })
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
