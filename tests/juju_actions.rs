//! Action dispatch through the real binary: results and failures as `juju run` shows them.

#[path = "support/juju_harness/mod.rs"]
mod juju_harness;

use github_runner::juju::event::Action;
use juju_harness::Harness;

#[test]
fn actions_yaml_lists_exactly_the_actions_the_charm_knows() {
    let text =
        std::fs::read_to_string(format!("{}/actions.yaml", juju_harness::REPO_ROOT)).unwrap();
    let yaml: serde_yaml::Mapping = serde_yaml::from_str(&text).unwrap();
    let mut declared: Vec<&str> = yaml.keys().map(|k| k.as_str().unwrap()).collect();
    declared.sort();
    let mut known: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
    known.sort();
    assert_eq!(declared, known);
}

#[test]
fn invalid_config_blocks_and_fails_every_action() {
    let mut h = Harness::new();
    h.set_config("vm-memory", "7XB");
    for action in Action::ALL {
        h.action(action.name()).assert_ok();
        let record = h.action_record();
        assert_eq!(
            record.failure.as_deref(),
            Some(
                "invalid config: vm-memory \"7XB\": expected a whole number with KiB, MiB, GiB, \
                 TiB, PiB or EiB; path: missing, set it with juju config github-runner \
                 path=<org> or <owner>/<repo>; token: missing, set it with juju config \
                 github-runner token=<token>"
            ),
            "{}",
            action.name()
        );
        assert!(record.results.is_empty());
        assert_eq!(h.last_status().map(|s| s.0), Some("blocked".into()));
    }
}

#[test]
fn valid_config_fails_with_the_typed_manager_unavailable_error() {
    let mut h = Harness::new();
    h.valid_config();
    for (action, verb) in [
        (Action::CheckRunners, "check runners"),
        (Action::ReconcileRunners, "reconcile runners"),
        (Action::FlushRunners, "flush runners"),
        (Action::UpdateDependencies, "update dependencies"),
    ] {
        h.action(action.name()).assert_ok();
        assert_eq!(
            h.action_record().failure,
            Some(format!(
                "runner manager unavailable: this charm build cannot {verb} yet"
            ))
        );
        assert!(
            h.statuses().is_empty(),
            "an action leaves a valid unit's status alone"
        );
    }
}

#[test]
fn unknown_action_fails_with_the_list_of_actions() {
    let mut h = Harness::new();
    h.action("dance").assert_ok();
    assert_eq!(
        h.action_record().failure.as_deref(),
        Some(
            "unknown action \"dance\": this charm's actions are check-runners, \
             reconcile-runners, flush-runners and update-dependencies"
        )
    );
}

#[test]
fn a_failing_action_fail_makes_the_action_exit_1() {
    let mut h = Harness::new();
    h.fail_tool("action-fail", 1, "ERROR connection is shut down");
    let run = h.action("check-runners");
    assert_eq!(run.code, 1, "{run:#?}");
    let logs = h.logs();
    assert!(
        logs.iter().any(|l| l.level == "ERROR"
            && l.message == "check-runners failed: action-fail exited with 1: ERROR connection is shut down"),
        "{logs:?}"
    );
}

#[test]
fn action_tools_run_with_action_context() {
    let mut h = Harness::new();
    h.action("flush-runners").assert_ok();
    let calls = h.calls();
    let tools: Vec<&str> = calls.iter().map(|c| c.tool.as_str()).collect();
    assert_eq!(tools, ["config-get", "status-set", "action-fail"]);
    assert!(calls.iter().all(|c| c.exit == 0), "{calls:?}");
}
