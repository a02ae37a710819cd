//! The unit's status: derived from its configuration, the host's readiness and the last
//! reconcile, with one precedence rule (see [`worst`]).
//!
//! In order: Blocked (configuration, permission, immutable option changed, lxd-profile
//! outside test mode, too little storage), Waiting (LXD not answering, image or runner
//! binary not ready), Maintenance (what is happening, rate limit, transient GitHub errors),
//! Active (the runner summary from `manager::status`).

use super::{CharmError, Context};
use crate::config::{validate, CharmConfig, ConfigContext, ConfigError};
use crate::juju::state::UnitState;
use crate::juju::{HookToolError, Status};
use crate::manager::ops::FailureKind;
use crate::manager::reconcile::{ReconcileError, ReconcileOutcome};
use crate::manager::status::{status_after, status_for_error};

/// Shown by hooks that have a valid configuration before any reconcile has set a status.
pub const FIRST_RECONCILE_STATUS: &str = "waiting for the first reconcile of the runners";

/// `config-get`, validated.
pub fn read_config(ctx: &Context<'_>) -> Result<Result<CharmConfig, ConfigError>, HookToolError> {
    let raw = ctx.tools.config_get()?;
    Ok(validate(
        &raw,
        &ConfigContext {
            app_name: &ctx.hook.identity.app,
            juju_proxy_configured: ctx.hook.proxy.is_configured(),
        },
    ))
}

/// The valid configuration, or None after setting Blocked with every problem.
/// Invalid configuration changes nothing else: runners and unit state stay as they are.
pub fn config_or_block(ctx: &Context<'_>) -> Result<Option<CharmConfig>, CharmError> {
    match read_config(ctx)? {
        Ok(config) => Ok(Some(config)),
        Err(problems) => {
            ctx.tools
                .status_set(&Status::Blocked(problems.to_string()))?;
            Ok(None)
        }
    }
}

/// The status of a unit with a valid configuration, from local state only (no GitHub or
/// LXD call): the one the last reconcile or flush set, else waiting for the first one.
pub fn set_ready(ctx: &Context<'_>) -> Result<(), CharmError> {
    let state = UnitState::load(ctx.tools)?;
    ctx.tools.status_set(&ready_status(&state))?;
    Ok(())
}

/// What [`set_ready`] shows.
pub fn ready_status(state: &UnitState) -> Status {
    state
        .last_status
        .clone()
        .unwrap_or_else(|| Status::Waiting(FIRST_RECONCILE_STATUS.into()))
}

/// Blocked on invalid config, else the ready status: what most hooks end with.
pub fn refresh(ctx: &Context<'_>) -> Result<Option<CharmConfig>, CharmError> {
    let config = config_or_block(ctx)?;
    if config.is_some() {
        set_ready(ctx)?;
    }
    Ok(config)
}

/// Set `status` and remember it in unit state (a state-set only when it changed), so hooks
/// that must not call GitHub can show it again.
pub fn set_and_remember(ctx: &Context<'_>, status: &Status) -> Result<(), CharmError> {
    ctx.tools.status_set(status)?;
    let before = UnitState::load(ctx.tools)?;
    let mut after = before.clone();
    after.last_status = Some(status.clone());
    after.save(&before, ctx.tools)?;
    Ok(())
}

/// 0 = Active .. 3 = Blocked.
pub fn severity(status: &Status) -> u8 {
    match status {
        Status::Active(_) => 0,
        Status::Maintenance(_) => 1,
        Status::Waiting(_) => 2,
        Status::Blocked(_) => 3,
    }
}

/// The status to show of several that hold at once: the most severe, the first of equals.
pub fn worst(statuses: impl IntoIterator<Item = Status>) -> Option<Status> {
    let mut chosen: Option<Status> = None;
    for status in statuses {
        if chosen
            .as_ref()
            .is_none_or(|c| severity(&status) > severity(c))
        {
            chosen = Some(status);
        }
    }
    chosen
}

/// Why the host cannot create runners right now (besides configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A creation found no image under the base-image alias.
    pub image_missing: Option<String>,
}

/// The status after a reconcile round: the manager's verdict on the round, a Waiting for an
/// unanswering LXD (rather than Maintenance) and for a missing image, whichever is worst.
pub fn after_reconcile(
    result: &Result<ReconcileOutcome, ReconcileError>,
    readiness: &Readiness,
) -> Status {
    let round = match result {
        Ok(outcome) => status_after(&outcome.plan, &outcome.report),
        Err(err @ ReconcileError::Lxd(e)) if e.kind == FailureKind::Transient => {
            Status::Waiting(format!("waiting for LXD: {err}"))
        }
        Err(err) => status_for_error(err),
    };
    let image = readiness.image_missing.as_ref().map(|alias| {
        let summary = match &round {
            Status::Active(s) => format!("; {s}"),
            _ => String::new(),
        };
        Status::Waiting(format!("waiting for the runner image {alias}{summary}"))
    });
    worst([Some(round), image].into_iter().flatten()).unwrap_or_else(|| {
        // Unreachable: the round's status is always there.
        Status::Maintenance("reconciled".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charm::testing::{run, valid_config};
    use crate::juju::event::Event;
    use crate::juju::memory::MemoryHookTools;
    use crate::juju::state::{encode_status, LAST_STATUS_KEY};
    use crate::manager::executor::{Failure, Operation, Report};
    use crate::manager::ops::OpError;
    use crate::manager::planner::Plan;

    fn all_kinds() -> [Status; 4] {
        [
            Status::Active("a".into()),
            Status::Maintenance("m".into()),
            Status::Waiting("w".into()),
            Status::Blocked("b".into()),
        ]
    }

    #[test]
    fn worst_picks_by_precedence_for_every_pair_and_order() {
        for (i, x) in all_kinds().iter().enumerate() {
            for (j, y) in all_kinds().iter().enumerate() {
                let expected = if j > i { y } else { x };
                assert_eq!(
                    worst([x.clone(), y.clone()]).as_ref(),
                    Some(expected),
                    "{x:?} vs {y:?}"
                );
            }
        }
        assert_eq!(worst(Vec::new()), None);
        // First of equals wins.
        assert_eq!(
            worst([
                Status::Waiting("first".into()),
                Status::Waiting("second".into())
            ]),
            Some(Status::Waiting("first".into()))
        );
        assert_eq!(worst(all_kinds()), Some(Status::Blocked("b".into())));
    }

    fn plan(desired: u32) -> Plan {
        Plan::empty(desired)
    }

    fn outcome(report: Report) -> ReconcileOutcome {
        ReconcileOutcome {
            plan: plan(0),
            report,
            health_checks: 0,
            started_epoch: 0,
            duration_secs: 0,
        }
    }

    #[test]
    fn reconcile_status_table() {
        let ready = Readiness::default();
        let image = Readiness {
            image_missing: Some("jammy".into()),
        };
        let failing = |kind| Report {
            failed: vec![Failure {
                operation: Operation::Create,
                error: OpError {
                    kind,
                    message: "boom".into(),
                },
            }],
            ..Report::default()
        };
        let lxd_down = Err(ReconcileError::Lxd(OpError::transient("socket refused")));
        let lxd_missing = Err(ReconcileError::Lxd(OpError::needs_operator("no lxc")));
        let gh_401 = Err(ReconcileError::GitHub(OpError::needs_operator("401")));
        let gh_5xx = Err(ReconcileError::GitHub(OpError::transient("502")));
        let limited = Err(ReconcileError::GitHub(OpError {
            kind: FailureKind::RateLimited { reset_epoch: 3600 },
            message: "rate".into(),
        }));
        let clean = Ok(outcome(Report::default()));
        let blocked_op = Ok(outcome(failing(FailureKind::NeedsOperator)));
        let transient_op = Ok(outcome(failing(FailureKind::Transient)));
        let cases: Vec<(
            &Result<ReconcileOutcome, ReconcileError>,
            &Readiness,
            u8,
            &str,
        )> = vec![
            (&clean, &ready, 0, "0/0 runners"),
            (
                &clean,
                &image,
                2,
                "waiting for the runner image jammy; 0/0 runners",
            ),
            (&lxd_down, &ready, 2, "waiting for LXD"),
            (&lxd_down, &image, 2, "waiting for LXD"),
            (&lxd_missing, &ready, 3, "no lxc"),
            (&gh_401, &image, 3, "401"),
            (&gh_5xx, &ready, 1, "502"),
            (&gh_5xx, &image, 2, "waiting for the runner image jammy"),
            (&limited, &ready, 1, "retrying after 01:00 UTC"),
            (&blocked_op, &image, 3, "boom"),
            (&transient_op, &ready, 1, "boom"),
            (&transient_op, &image, 2, "runner image"),
        ];
        for (result, readiness, level, text) in cases {
            let status = after_reconcile(result, readiness);
            assert_eq!(severity(&status), level, "{status:?}");
            let message = match &status {
                Status::Active(m)
                | Status::Maintenance(m)
                | Status::Waiting(m)
                | Status::Blocked(m) => m,
            };
            assert!(message.contains(text), "{status:?} lacks {text:?}");
        }
    }

    #[test]
    fn ready_status_shows_the_remembered_one() {
        let tools = MemoryHookTools::default();
        valid_config(&tools);
        run(&tools, &Event::UpdateStatus).unwrap();
        assert_eq!(
            tools.statuses(),
            vec![Status::Waiting(FIRST_RECONCILE_STATUS.into())]
        );
        let active = Status::Active("3/3 runners: 2 idle, 1 busy".into());
        tools
            .lock()
            .unit_state
            .insert(LAST_STATUS_KEY.into(), encode_status(&active));
        run(&tools, &Event::UpdateStatus).unwrap();
        assert_eq!(tools.statuses().last(), Some(&active));
    }
}
