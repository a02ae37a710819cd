use super::*;
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
fn an_active_unit_says_how_many_old_runners_still_finish_their_jobs() {
    let active = Status::Active("1 idle, 0 busy".into());
    assert_eq!(
        with_old_runners(active.clone(), Some(2)),
        Status::Active("1 idle, 0 busy; 2 old runners still finishing their jobs".into())
    );
    assert_eq!(
        with_old_runners(active.clone(), Some(1)),
        Status::Active("1 idle, 0 busy; 1 old runner still finishing its job".into())
    );
    assert_eq!(with_old_runners(active.clone(), Some(0)), active);
    assert_eq!(with_old_runners(active.clone(), None), active);
    let blocked = Status::Blocked("token refused".into());
    assert_eq!(with_old_runners(blocked.clone(), Some(3)), blocked);
}

/// Issue 23: scale-set mode's status from the listener's slot.
#[test]
fn the_listener_status_follows_its_slot_and_phase() {
    use crate::reactive::health::SlotHealth;
    use crate::reactive::workers::SlotStatus;
    use crate::scaleset::listener_state::ListenerPhase;
    use crate::scaleset::process::ListenerSnapshot;
    use crate::scaleset::Statistics;
    use std::time::Duration;
    let log = "/var/log/github-runner-scale-set/app-0/worker-0.log";
    let slot = |live: bool, phase: Option<ListenerPhase>, stats: Option<Statistics>| SlotHealth {
        slot: 0,
        live,
        status: SlotStatus {
            pid: 9,
            started_ms: 1_000,
            updated_ms: 2_000,
            listener: Some(ListenerSnapshot {
                scale_set: "linux-0".into(),
                phase,
                statistics: stats,
            }),
            ..SlotStatus::default()
        },
    };
    let status = |s: Option<&SlotHealth>| listener_status("linux-0", s, log);
    assert_eq!(
        status(None),
        Status::Maintenance("Scale set linux-0: listener starting".into())
    );
    assert_eq!(
        status(Some(&slot(true, None, None))),
        Status::Maintenance("Scale set linux-0: listener starting".into())
    );
    let waiting = ListenerPhase::WaitingForSession {
        attempt: 2,
        retry_in: Duration::from_secs(30),
    };
    assert_eq!(
        status(Some(&slot(true, Some(waiting), None))),
        Status::Waiting(
            "Scale set linux-0: waiting for the previous listener's session to expire".into()
        )
    );
    let held = ListenerPhase::HeldByAnother {
        owner: "uuid-2/github-runner/0".into(),
        retry_in: Duration::from_secs(60),
    };
    assert_eq!(
        status(Some(&slot(true, Some(held), None))),
        Status::Blocked(
            "Scale set linux-0 is held by another deployment's listener (session owner \
             uuid-2/github-runner/0), not taken over: change scale-set-name or stop that \
             deployment"
                .into()
        )
    );
    let retrying = ListenerPhase::Retrying {
        error: "GitHub answered 503".into(),
        retry_in: Duration::from_secs(5),
    };
    assert_eq!(
        status(Some(&slot(true, Some(retrying), None))),
        Status::Waiting("Scale set linux-0: retrying after an error: GitHub answered 503".into())
    );
    let listening = Some(ListenerPhase::Listening { scale_set_id: 4 });
    assert_eq!(
        status(Some(&slot(true, listening.clone(), None))),
        Status::Active("Scale set linux-0: listening for jobs".into())
    );
    let stats = Statistics {
        total_assigned_jobs: 3,
        total_running_jobs: 1,
        ..Statistics::default()
    };
    assert_eq!(
        status(Some(&slot(true, listening.clone(), Some(stats)))),
        Status::Active("Scale set linux-0: listening for jobs, 3 assigned, 1 running".into())
    );
    // A dead listener's last phase says nothing: the reconcile restarts it.
    let mut dead = slot(false, listening.clone(), None);
    dead.status.stopped = true;
    assert_eq!(
        status(Some(&dead)),
        Status::Maintenance("Scale set linux-0: listener starting".into())
    );
    // Crashed three times in a row: Blocked, naming the log.
    let mut looping = slot(false, listening.clone(), None);
    looping.status.crashes = 2;
    assert_eq!(
        status(Some(&looping)),
        Status::Blocked(format!(
            "Scale set linux-0: the listener crashed 3 times in a row; see {log}"
        ))
    );
    // Listening again after the crashes: the phase shows.
    let mut recovered = slot(true, listening, None);
    recovered.status.crashes = 5;
    assert!(matches!(status(Some(&recovered)), Status::Active(_)));
}
