//! The pure decisions, as tables.

use super::*;
use crate::charm::fake_world::config;
use crate::charm::intent::{BinaryStep, FlushWhen};
use crate::config::ConfigError;
use crate::juju::event::{Action, Event};
use crate::manager::executor::Report;
use crate::manager::planner::{Plan, Removal, RemovalTarget};
use serde_json::json;

fn state_with(config: &CharmConfig) -> UnitState {
    let mut state = UnitState::default();
    state.set_acted_scope(ActedScope::of(config));
    state
}

fn seen(config: CharmConfig, state: UnitState) -> Observed {
    Observed {
        config: Some(Ok(config)),
        state: Some(state),
        ..Observed::default()
    }
}

#[test]
fn a_converge_flushes_the_old_scope_only_when_the_intent_compares_it() {
    let base = config(&[]);
    let acted = state_with(&base);
    let new_labels = config(&[("labels", json!("x"))]);
    for (event, compares) in [
        (Event::ConfigChanged, true),
        (Event::ReconcileRunners, true),
        (Event::Action(Action::ReconcileRunners), true),
        (Event::Start, false),
        (Event::RunnerStorageAttached, false),
        (Event::Action(Action::FlushRunners), false),
    ] {
        let intent = Intent::of(&event);
        match decide(&intent, seen(new_labels.clone(), acted.clone())) {
            Decision::Converge(plan) => {
                let expected: Vec<&str> = if compares { vec!["labels"] } else { vec![] };
                assert_eq!(plan.scope_flush, expected, "{event}");
            }
            other => panic!("{event}: {other:?}"),
        }
    }
}

#[test]
fn invalid_config_and_guards_refuse_before_any_work() {
    let problems: ConfigError = crate::config::validate(
        &serde_json::Map::new(),
        &crate::config::ConfigContext {
            app_name: "github-runner",
            juju_proxy_configured: false,
        },
    )
    .unwrap_err();
    let invalid = Observed {
        config: Some(Err(problems)),
        ..Observed::default()
    };
    match decide(&Intent::of(&Event::Install), invalid) {
        Decision::Refuse(r) => {
            assert!(matches!(&r.status, Status::Blocked(m) if m.contains("path")));
            assert!(
                !r.remember,
                "update-status finds invalid config again itself"
            );
        }
        other => panic!("{other:?}"),
    }
    let production = config(&[
        ("test-mode", "".into()),
        ("github-url", "https://127.0.0.1:1".into()),
    ]);
    let profiled = Observed {
        has_lxd_profile: true,
        ..seen(production, UnitState::default())
    };
    match decide(&Intent::of(&Event::Action(Action::CheckRunners)), profiled) {
        Decision::Refuse(r) => {
            assert!(matches!(&r.status, Status::Blocked(m) if m.contains("lxd-profile.yaml")));
            assert!(r.remember);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn lxd_is_installed_first_only_by_hooks_that_install_and_only_when_missing() {
    let base = config(&[]);
    for (event, lxc_present, install) in [
        (Event::Install, false, true),
        (Event::Install, true, false),
        (Event::Start, false, true),
        (Event::ConfigChanged, false, false),
        (Event::ReconcileRunners, false, false),
    ] {
        let observed = Observed {
            lxc_present,
            ..seen(base.clone(), UnitState::default())
        };
        match decide(&Intent::of(&event), observed) {
            Decision::Converge(plan) => assert_eq!(plan.install_lxd, install, "{event}"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn update_status_shows_the_remembered_status_or_waits_for_the_first_round() {
    let base = config(&[]);
    let remembered = UnitState {
        last_status: Some(Status::Active("1/1 runners".into())),
        ..UnitState::default()
    };
    for (state, expected) in [
        (
            UnitState::default(),
            Status::Waiting(messages::FIRST_RECONCILE.into()),
        ),
        (remembered, Status::Active("1/1 runners".into())),
    ] {
        match decide(&Intent::ReportOnly, seen(base.clone(), state)) {
            Decision::ReportOnly { status, .. } => assert_eq!(status, expected),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn the_flush_before_a_reconcile() {
    use FlushMode::*;
    assert_eq!(runner_flush(&[], None, None), RunnerFlush::None);
    assert_eq!(
        runner_flush(&[], Some(FlushIdle), None),
        RunnerFlush::Current(FlushIdle)
    );
    assert_eq!(
        runner_flush(&[], None, Some(FlushBusyWaitRepoCheck)),
        RunnerFlush::Current(FlushBusyWaitRepoCheck)
    );
    assert_eq!(
        runner_flush(&["token"], Some(FlushIdle), None),
        RunnerFlush::OldScope(vec!["token"]),
        "a scope change flushes everything anyway"
    );
    let periodic = Intent::of(&Event::ReconcileRunners);
    let Intent::Converge(c) = periodic else {
        panic!()
    };
    assert_eq!(
        c.binary,
        BinaryStep::Check {
            only_when_due: true,
            flush_idle_on_change: true
        }
    );
    assert!(matches!(
        c.runners,
        RunnerStep::Reconcile {
            flush: FlushWhen::Never,
            scope: true,
            ..
        }
    ));
}

#[test]
fn plan_table() {
    let base = config(&[]);
    let acted = state_with(&base);
    let cases: Vec<(&str, UnitState, CharmConfig, Vec<&str>)> = vec![
        ("first config", UnitState::default(), base.clone(), vec![]),
        ("unchanged", acted.clone(), base.clone(), vec![]),
        (
            "token alone: a credential change flushes nothing",
            acted.clone(),
            config(&[("token", json!("ghp_new"))]),
            vec![],
        ),
        (
            "path",
            acted.clone(),
            config(&[("path", json!("o/r"))]),
            vec!["path"],
        ),
        (
            "group",
            acted.clone(),
            config(&[("group", json!("gpu"))]),
            vec!["group"],
        ),
        (
            "labels",
            acted.clone(),
            config(&[("labels", json!("a,b"))]),
            vec!["labels"],
        ),
        (
            "github-url",
            acted.clone(),
            config(&[("github-url", json!("http://127.0.0.1:2"))]),
            vec!["github-url"],
        ),
        (
            "token and path",
            acted.clone(),
            config(&[("token", json!("ghp_new")), ("path", json!("o/r"))]),
            vec!["path"],
        ),
        (
            "every scope option",
            acted.clone(),
            config(&[
                ("token", json!("ghp_new")),
                ("path", json!("o/r")),
                ("group", json!("g")),
                ("labels", json!("x")),
                ("github-url", json!("http://127.0.0.1:2")),
            ]),
            vec!["path", "group", "labels", "github-url"],
        ),
        (
            "vm-cpu",
            acted.clone(),
            config(&[("vm-cpu", json!(4))]),
            vec![],
        ),
        (
            "vm-memory",
            acted.clone(),
            config(&[("vm-memory", json!("8GiB"))]),
            vec![],
        ),
        (
            "vm-disk",
            acted.clone(),
            config(&[("vm-disk", json!("20GiB"))]),
            vec![],
        ),
        (
            "vm-cpu and labels",
            acted.clone(),
            config(&[("vm-cpu", json!(4)), ("labels", json!("x"))]),
            vec!["labels"],
        ),
        (
            "reconcile-interval",
            acted.clone(),
            config(&[("reconcile-interval", json!(5))]),
            vec![],
        ),
        (
            "virtual-machines",
            acted.clone(),
            config(&[("virtual-machines", json!(9))]),
            vec![],
        ),
        (
            "dockerhub-mirror",
            acted.clone(),
            config(&[("dockerhub-mirror", json!("https://m.example"))]),
            vec![],
        ),
        (
            "denylist",
            acted.clone(),
            config(&[("denylist", json!("10.0.0.0/8"))]),
            vec![],
        ),
        (
            "same labels in another order",
            state_with(&config(&[("labels", json!("a,b"))])),
            config(&[("labels", json!("b,a"))]),
            vec!["labels"],
        ),
    ];
    for (name, state, now, flush_for) in cases {
        let plan = plan_change(&state, &now);
        assert_eq!(plan.flush_for, flush_for, "{name}");
        assert_eq!(plan.flushes(), !flush_for.is_empty(), "{name}");
    }
}

#[test]
fn a_scope_recorded_by_an_older_charm_without_some_keys_flushes_only_on_known_ones() {
    let base = config(&[]);
    let mut state = UnitState {
        token_fingerprint: base.credential.as_ref().map(|c| c.fingerprint()),
        ..UnitState::default()
    };
    assert!(!plan_change(&state, &config(&[("path", json!("o/r"))])).flushes());
    state.token_fingerprint = Some("other".into());
    // A credential change alone flushes nothing.
    assert!(plan_change(&state, &base).flush_for.is_empty());
}

#[test]
fn guards_table() {
    let base = config(&[]);
    let production = config(&[
        ("test-mode", "".into()),
        ("github-url", "https://127.0.0.1:1".into()),
    ]);
    let deployed = setup::deploy_settings(&base);
    let noble = config(&[("base-image", "noble".into())]);
    let memory = config(&[("runner-storage", "memory".into())]);
    assert_eq!(guard_problem(false, &base, None), None);
    assert_eq!(guard_problem(false, &base, Some(&deployed)), None);
    assert_eq!(
        guard_problem(true, &base, Some(&deployed)),
        None,
        "test mode allows it"
    );
    assert!(guard_problem(true, &production, None)
        .unwrap()
        .contains("lxd-profile.yaml"));
    assert!(guard_problem(false, &noble, Some(&deployed))
        .unwrap()
        .starts_with("base-image config cannot be changed after deployment"));
    assert!(guard_problem(false, &memory, Some(&deployed))
        .unwrap()
        .starts_with("runner-storage config cannot be changed"));
    assert_eq!(
        guard_problem(false, &noble, None),
        None,
        "nothing recorded yet"
    );
}

#[test]
fn runtime_errors_wait_for_lxd_or_block_on_github_settings() {
    assert!(matches!(
        runtime_error_status(&RuntimeError::Lxd(LxdError::LxcMissing)),
        Status::Waiting(m) if m.contains("installed")
    ));
    let bad_url = RuntimeError::GitHub(crate::github::ClientSetupError::InsecureUrl {
        url: "http://ghe.example".into(),
    });
    assert!(matches!(runtime_error_status(&bad_url), Status::Blocked(_)));
}

#[test]
fn crashed_runners_count_dead_ones_only() {
    let removal = |reason| Removal {
        target: RemovalTarget {
            name: crate::identity::RunnerName("x".into()),
            has_instance: true,
            github_id: None,
        },
        reason,
        force: false,
    };
    let outcome = ReconcileOutcome {
        plan: Plan {
            removals: vec![
                removal(RemovalReason::ListenerDown),
                removal(RemovalReason::InstanceError),
                removal(RemovalReason::InstanceStopped),
                removal(RemovalReason::Surplus),
                removal(RemovalReason::RegistrationGone),
                removal(RemovalReason::NeverRegistered),
            ],
            ..Plan::empty(1)
        },
        report: Report::default(),
        health_checks: 0,
        started_epoch: 0,
        duration_secs: 4,
    };
    assert_eq!(crashed_runners(&outcome), 3);
    match reconciliation_event("app", &outcome) {
        MetricEvent::Reconciliation(r) => {
            assert_eq!(r.crashed_runners, 3);
            assert_eq!(r.duration, 4.0);
            assert_eq!(r.flavor, "app");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn binary_check_schedule() {
    let hour = BINARY_CHECK_INTERVAL.as_secs();
    let t = 1_700_000_000;
    assert!(binary_check_due(None, t, true), "never checked");
    assert!(binary_check_due(Some(t), t, false), "no binary in place");
    assert!(!binary_check_due(Some(t), t, true));
    assert!(!binary_check_due(Some(t), t + hour - 1, true));
    assert!(binary_check_due(Some(t), t + hour, true));
    assert!(binary_check_due(Some(t), t - 1, true), "clock moved back");
}

#[test]
fn only_runners_from_before_the_boot_are_suspect() {
    assert!(!runners_predate_boot(&[], Some(100)));
    assert!(!runners_predate_boot(&[], None));
    assert!(!runners_predate_boot(&[100, 150], Some(100)));
    assert!(runners_predate_boot(&[99, 150], Some(100)));
    // Unknown boot time: any runner may predate it.
    assert!(runners_predate_boot(&[150], None));
}
#[test]
fn only_juju_storage_runners_are_flushed_on_detach() {
    assert!(runners_live_on_juju_storage(RunnerStorage::JujuStorage));
    assert!(!runners_live_on_juju_storage(RunnerStorage::Memory));
}
